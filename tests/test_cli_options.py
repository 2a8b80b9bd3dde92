"""Command-line behaviour that users rely on: defaults, option parsing with --config, the help's
claims, and what a missing extra tells the user."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from binventory.cli import build_parser, main
from binventory.diagnostics.rules import RULE_NAMES
from binventory.training.cli import apply_config_file
from tests.inventory.helpers import load, make_dataset
from tests.tiny import save_tiny_model

REPO = Path(__file__).resolve().parents[1]


def _train_config(argv):
    return apply_config_file(build_parser().parse_args(argv), argv)


def test_abbreviated_and_equals_options_beat_the_config_file(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lr": 0.01, "epochs": 7, "image_size": 96, "channels_last": True,
                                  "stop_on_issue": [RULE_NAMES[0]]}))
    cfg = _train_config(["train", "--config", str(config), "--epoch", "3", "--image-size=64",
                         "--no-channels-last", "--stop-on-issue", RULE_NAMES[1]])
    assert (cfg.epochs, cfg.image_size, cfg.channels_last) == (3, 64, False)
    assert cfg.stop_on_issue == [RULE_NAMES[1]]  # replaces the file's list, not appended to it
    assert cfg.lr == 0.01
    cfg = _train_config(["-v", "tune", "--config", str(config), "--epo", "2"])
    assert (cfg.epochs, cfg.image_size, cfg.stop_on_issue) == (2, 96, [RULE_NAMES[0]])


def test_serve_counts_with_onnx_runtime_by_default(tmp_path):
    from binventory.serving.service_cli import load_service

    model = save_tiny_model(tmp_path / "model.pt")
    predictor, _ = load_service(build_parser().parse_args(["serve", "--model", str(model)]))
    assert predictor.backend == "onnx" and (tmp_path / "model.onnx").is_file()
    args = build_parser().parse_args(["serve", "--model", str(model), "--backend", "torch"])
    assert load_service(args)[0].backend == "torch"


def test_reconcile_counts_with_onnx_runtime_by_default(tmp_path, capsys):
    from binventory.inventory.db import Database

    model = save_tiny_model(tmp_path / "m" / "model.pt")
    dataset = make_dataset(tmp_path / "abid")
    url = f"sqlite:///{tmp_path / 'inv.db'}"
    load(Database.open(url, create=True), dataset)
    assert main(["reconcile", "--model", str(model), "--input", str(dataset), "--db", url,
                 "--workers", "1"]) == 0
    # The ONNX engine exports model.onnx beside the artifact on first use; torch never writes it.
    assert (tmp_path / "m" / "model.onnx").is_file()


def test_export_help_says_what_benchmarks_measured_of_int8(capsys):
    text = (REPO / "BENCHMARKS.md").read_text()
    rows = dict(re.findall(r"\| ours: ONNX Runtime (fp32|int8) \| \d+ \| ([\d.]+) \|", text))
    assert set(rows) == {"fp32", "int8"}, "BENCHMARKS.md's batch inference table moved"
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    quantize = help_text[help_text.index("--quantize "):help_text.index("--manifest MANIFEST ")]
    if float(rows["int8"]) <= float(rows["fp32"]):
        assert "no faster than fp32" in quantize and "faster on CPU" not in quantize


def test_a_missing_extra_is_named_with_its_install_command():
    code = ("import sys\n"
            "sys.modules['sqlalchemy'] = None  # as if installed without the inventory extra\n"
            "from binventory.cli import main\n"
            "sys.exit(main(['inventory', 'status', '--db', 'sqlite://']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "pip install 'binventory[inventory]'" in result.stderr and "Traceback" not in result.stderr
