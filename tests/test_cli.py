import subprocess
import sys

import pytest

from binventory.cli import main


@pytest.mark.parametrize("argv", [[], ["data"], ["data", "fetch"], ["data", "index"],
                                  ["data", "split"], ["data", "synth"], ["data", "summary"]])
def test_help_states_defaults(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: binventory" in out
    if argv[-1:] in (["split"], ["synth"], ["fetch"]):
        assert "(default:" in out


def test_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "binventory", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("binventory ")


def test_user_errors_have_no_traceback(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path / "missing.parquet")]) == 2
    err = capsys.readouterr().err
    assert "binventory: error: manifest not found" in err and "Traceback" not in err
