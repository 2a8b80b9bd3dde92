import re
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
