import subprocess
import sys

import pytest

from binventory.cli import main


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
