"""Diagnostics through the real commands: binventory train, evaluate and profile."""
import json
import os
import subprocess
import sys

import pytest

from binventory.cli import main
from binventory.diagnostics.rules import RULE_NAMES
from binventory.training.config import TrainConfig
from tests.training.conftest import TINY
from tests.training.test_train import _free_port


def _train(manifest, output, epochs, *extra):
    return main(["train", "--manifest", str(manifest), "--output", str(output), "--epochs",
                 str(epochs), "--diagnostics-every", "2", *TINY, *extra])


@pytest.mark.slow
def test_train_writes_report_and_rules_and_evaluate_points_to_them(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_manifest, out, 2) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["diagnostics"] == str(out / "report.html")
    rules = json.loads((out / "rules.json").read_text())
    assert [r["rule"] for r in rules["rules"]] == list(RULE_NAMES)
    assert all(r["status"] in ("ok", "issue_found", "not_enough_data") and r["evidence"]
               for r in rules["rules"])
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 6 and "exploding_tensor" in page
    data = json.loads((out / "diagnostics.json").read_text())
    assert len(data["epochs"]) == 2 and data["samples"] and data["samples"][0]["grad_norm"]
    assert len(data["steps"]["loss"]) == len(data["steps"]["step"]) > 0

    assert main(["evaluate", "--model", str(out / "model.pt"), "--manifest", str(tiny_manifest),
                 "--workers", "0", "--out", str(tmp_path / "eval")]) == 0
    assert f"training diagnostics: {out / 'report.html'}" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["training_report"] == str(out / "report.html")


@pytest.mark.slow
def test_stop_on_issue_stops_training_early(tiny_manifest, tmp_path):
    out = tmp_path / "frozen"
    # A learning rate of zero: the loss cannot fall, and the rule says so after two epochs.
    assert _train(tiny_manifest, out, 8, "--lr", "0", "--stop-on-issue", "loss_not_decreasing",
                  "--stop-on-issue", "exploding_tensor") == 0
    epochs = (out / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(epochs) < 8
    rules = json.loads((out / "rules.json").read_text())
    assert rules["stopped_by"] == ["loss_not_decreasing"]
    assert (out / "model.pt").is_file()


@pytest.mark.slow
def test_diagnostics_can_be_turned_off(tiny_manifest, tmp_path):
    out = tmp_path / "off"
    assert _train(tiny_manifest, out, 1, "--diagnostics-every", "0") == 0
    assert not (out / "report.html").exists() and (out / "model.pt").is_file()


def test_unknown_stop_rule_is_rejected(tiny_manifest, tmp_path):
    with pytest.raises(SystemExit):
        _train(tiny_manifest, tmp_path / "x", 1, "--stop-on-issue", "no_such_rule")
    assert TrainConfig.from_dict({"stop_on_issue": ["overfit"]}).stop_on_issue == ["overfit"]


@pytest.mark.slow
def test_profile_writes_trace_and_step_split(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "profile"
    assert main(["profile", "--manifest", str(tiny_manifest), "--steps", "3", "--warmup", "1",
                 "--out", str(out), *TINY]) == 0
    assert "ms per step" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["phases"]) == {"data", "forward", "backward", "optimizer"}
    assert abs(sum(p["share"] for p in summary["phases"].values()) - 1) < 1e-6
    assert summary["top_operators"] and summary["top_operators"][0]["calls"] > 0
    trace = json.loads((out / "trace.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"data", "forward", "backward", "optimizer"} <= names


@pytest.mark.slow
def test_torchrun_ranks_stop_together_and_only_rank_0_reports(tiny_manifest, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "binventory",
           "train", "--manifest", str(tiny_manifest), "--output", str(out), "--epochs", "6",
           *TINY, "--lr", "0", "--diagnostics-every", "1", "--stop-on-issue", "loss_not_decreasing"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    # Both ranks leave the loop after the same epoch (else the run would hang in a collective).
    assert result.stderr.count("stopped after epoch") == 2
    assert json.loads((out / "rules.json").read_text())["stopped_by"] == ["loss_not_decreasing"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) < 6
