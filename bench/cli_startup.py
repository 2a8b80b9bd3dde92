"""How long ``binventory <command> --help`` takes to start: every run of every command, the
SageMaker job's included, pays it first.

    python bench/cli_startup.py [--runs 7] [--commands train,serve,reconcile,predict]

Runs each command's --help in a fresh process (the installed ``binventory`` beside this Python)
and prints the median and the fastest wall-clock time, plus the heavy libraries it imported.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "numpy", "pandas", "fastapi", "onnxruntime", "sqlalchemy", "sklearn")
PROBE = ("import sys, contextlib, io\n"
         "from binventory.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
         "    main(sys.argv[1:])\n"
         "print(' '.join(m for m in {heavy} if m in sys.modules))")


def time_help(command: list[str], runs: int) -> list[float]:
    exe = str(Path(sys.executable).with_name("binventory"))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([exe, *command, "--help"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def heavy_imports(command: list[str]) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *command, "--help"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--commands", default="train,serve,reconcile,predict,inventory calibrate")
    args = ap.parse_args()
    print("| command | median s | fastest s | heavy libraries imported |")
    print("| --- | ---: | ---: | --- |")
    for name in args.commands.split(","):
        command = name.split()
        times = time_help(command, args.runs)
        print(f"| `binventory {name} --help` | {statistics.median(times):.2f} | {min(times):.2f} | "
              f"{heavy_imports(command)} |")


if __name__ == "__main__":
    main()
