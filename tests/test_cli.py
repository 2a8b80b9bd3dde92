import re
import socket
import subprocess
import sys

import pytest

from binventory.cli import main
from tests.tiny import save_tiny_model


# Each help page names what that command offers (its sub-commands or its own options) and, for
# commands with options worth a default, the defaults.
HELP = {
    (): ["data ", "train ", "evaluate ", "tune ", "profile ", "export ", "predict ", "serve ",
         "inventory ", "reconcile ", "--version"],
    ("data",): ["fetch ", "synth ", "index ", "split ", "merge ", "summary "],
    ("data", "fetch"): ["--subset", "--ids", "--workers", "--retries", "(default: 5)"],
    ("data", "index"): ["DIR", "--max-pixels", "default: DIR/manifest.parquet"],
    ("data", "split"): ["--protocol", "--val-fraction", "(default: challenge)"],
    ("data", "synth"): ["--max-count", "(default: 1000)"],
    ("data", "summary"): ["manifest", "per count"],
}


@pytest.mark.parametrize("argv", list(HELP), ids=lambda a: " ".join(a) or "binventory")
def test_help_names_the_command_and_what_it_offers(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    assert out.startswith(" ".join(["usage: binventory", *argv]))
    missing = [text for text in HELP[argv] if text not in out]
    assert not missing, missing


def test_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "binventory", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("binventory ")


def test_user_errors_have_no_traceback(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path / "missing.parquet")]) == 2
    err = capsys.readouterr().err
    assert "binventory: error: manifest not found" in err and "Traceback" not in err


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _all_commands(capsys, argv=()):
    """Every command path, found the way a user finds them: in each help page's command list."""
    yield argv
    for name in re.findall(r"^    ([a-z][\w-]*)", _help(argv, capsys), re.M):
        yield from _all_commands(capsys, (*argv, name))


def test_every_command_has_a_description_and_states_each_default_once(capsys):
    commands = list(_all_commands(capsys))
    assert ("inventory", "token", "revoke") in commands and ("data", "merge") in commands
    for argv in commands:
        page = _help(argv, capsys)
        usage, description = page.split("\n\n")[:2]
        assert not description.startswith(("positional arguments:", "options:")), argv
        text = " ".join(page.split())
        assert "(default: None)" not in text, argv
        # one option's help: from its flag to the next one's
        for option in re.split(r" (?=--?[a-z])", text[text.find("options:"):]):
            assert len(re.findall(r"\(default", option)) <= 1, (argv, option)


def test_required_options_say_so(capsys):
    text = " ".join(_help(["inventory", "resolve"], capsys).split())
    assert "--count COUNT items counted in the bin (required)" in text
    assert "--by BY who counted (required)" in text
    assert "--db DB database URL (default: $BINVENTORY_DB_URL, else sqlite:///data/inventory.db) --" in text
    text = " ".join(_help(["reconcile"], capsys).split())
    assert "counting model artifact (model.pt) (required)" in text
    assert "--batch-size BATCH_SIZE photos per model call (default: 32)" in text


def test_resolve_help_lists_the_reason_codes(capsys):
    from binventory.inventory.models import AGREED_REASON, REASON_CODES

    text = " ".join(_help(["inventory", "resolve"], capsys).split())
    assert f"needed when it does: {', '.join(REASON_CODES)} ({AGREED_REASON} or none" in text


@pytest.mark.parametrize("argv", [["inventory", "resolve"], ["inventory", "status"], ["inventory"]])
def test_inventory_help_imports_no_heavy_library(argv):
    """--help answers in a fraction of a second only when it imports none of these (the inventory's
    help imported torch through calibrate's options: 3.5 s on the dev box)."""
    probe = ("import sys, contextlib, io\n"
             "from binventory.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "    main(sys.argv[1:])\n"
             "print(' '.join(m for m in ('torch', 'numpy', 'pandas', 'fastapi', 'sqlalchemy', "
             "'sklearn', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe, *argv, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_file_where_a_folder_is_expected_is_called_a_file(tmp_path, capsys):
    photo = tmp_path / "bin001.jpg"
    photo.write_bytes(b"not a folder")
    assert f"{photo} is a file, not a dataset folder" in _error(["data", "index", str(photo)], capsys)
    err = _error(["inventory", "import-abid", str(photo), "--db", f"sqlite:///{tmp_path / 'i.db'}"], capsys)
    assert f"{photo} is a file, not a metadata folder" in err
    err = _error(["data", "summary", str(tmp_path)], capsys)
    assert f"{tmp_path} is a folder, not a manifest" in err


def test_a_folder_in_no_known_layout_says_what_it_lacks(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("photos to come")
    err = _error(["data", "index", str(tmp_path)], capsys)
    assert "no bin-images/ and metadata/ (ABID layout) and no count folders" in err and str(tmp_path) in err


def test_index_out_a_folder_writes_the_manifest_inside_it(tmp_path, capsys):
    from tests.inventory.helpers import make_dataset

    dataset = make_dataset(tmp_path / "abid")
    out = tmp_path / "runs"
    out.mkdir()
    assert main(["data", "index", str(dataset), "--out", str(out), "--workers", "1"]) == 0
    assert f"manifest: {out / 'manifest.parquet'}" in capsys.readouterr().out
    assert main(["data", "summary", str(out / "manifest.parquet")]) == 0


def test_a_file_that_is_no_model_is_named_as_such(tmp_path, capsys):
    import torch

    policy = tmp_path / "policy.json"
    policy.write_text('{"format": "binventory-policy"}')
    checkpoint = tmp_path / "last.pt"
    torch.save({"epoch": 3}, checkpoint)
    manifest = tmp_path / "m.parquet"
    for model in (policy, checkpoint):
        for argv in (["evaluate", "--model", str(model), "--manifest", str(manifest)],
                     ["reconcile", "--model", str(model), "--input", str(tmp_path)]):
            err = _error(argv, capsys)
            assert f"{model} is not a binventory model artifact" in err, err
            assert "expected the model.pt that 'binventory train' writes" in err
            assert "Weights only" not in err and "file an issue" not in err


def test_reconcile_that_judged_no_photo_fails(tmp_path, capsys):
    from tests.inventory.helpers import make_dataset

    model = save_tiny_model(tmp_path / "model.pt")
    dataset = make_dataset(tmp_path / "abid")  # 12 photos of bins the empty inventory lacks
    url = f"sqlite:///{tmp_path / 'inv.db'}"
    assert main(["inventory", "migrate", "--db", url]) == 0
    err = _error(["reconcile", "--model", str(model), "--input", str(dataset), "--db", url,
                  "--workers", "1", "--backend", "torch"], capsys)
    assert "none of the 12 photos was judged" in err


def test_serve_checks_the_port_before_loading_the_model(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model.pt")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _error(["serve", "--model", str(model), "--port", str(port), "--no-inventory"], capsys)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert not (tmp_path / "model.onnx").exists()  # the model was not loaded (nor exported)
