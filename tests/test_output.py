"""What the commands print into a log that is not a terminal (make demo piped to a file): no
progress-bar redraws, no matplotlib font-cache chatter."""
from __future__ import annotations

import subprocess
import sys

from binventory.data import synth


def test_progress_bars_stay_off_a_pipe(tmp_path, capsys):
    # capsys's stderr is no terminal, as a piped log's is not: each redraw would be a line there.
    synth.generate(tmp_path / "synth", n=3, workers=1, progress=True)
    err = capsys.readouterr().err
    assert "synth:" not in err and "img/s" not in err


def test_matplotlib_builds_its_font_cache_quietly(tmp_path):
    probe = ("from binventory.cli import configure_logging\n"
             "configure_logging()\n"
             "import logging, matplotlib.pyplot\n"
             "logging.getLogger('binventory').info('still said')\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={"MPLCONFIGDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "fontManager" not in done.stderr and "matplotlib" not in done.stderr
    assert "INFO binventory: still said" in done.stderr
