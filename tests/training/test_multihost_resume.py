"""--resume on a cluster whose hosts each have their own disk, as in a SageMaker job: only rank
0 wrote last.pt, and every rank must still resume from it, at the same epoch."""
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.training.conftest import TINY

HOSTS = ["127.0.0.1", "localhost"]  # sorted: the first is rank 0 and the master


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_cluster(manifest, tmp_path, *options) -> list[subprocess.CompletedProcess]:
    port = str(_free_port())
    procs = []
    for host in HOSTS:
        env = {**os.environ, "SM_HOSTS": json.dumps(HOSTS), "SM_CURRENT_HOST": host,
               "SM_CHANNEL_TRAINING": str(manifest.parent), "MASTER_PORT": port,
               "SM_MODEL_DIR": str(tmp_path / f"model-{host}"), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "binventory", "train", *TINY, *options],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=240)  # a rank left waiting on the other: a hang
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return results


@pytest.mark.slow
def test_resume_on_hosts_with_their_own_disks_continues_together(tiny_manifest, tmp_path):
    first = _run_cluster(tiny_manifest, tmp_path, "--epochs", "1")
    assert all(r.returncode == 0 for r in first), first[0].stderr[-2000:] + first[1].stderr[-2000:]
    rank0, rank1 = (tmp_path / f"model-{host}" for host in HOSTS)
    assert (rank0 / "last.pt").is_file() and not (rank1 / "last.pt").exists()

    resumed = _run_cluster(tiny_manifest, tmp_path, "--epochs", "3", "--resume")
    assert all(r.returncode == 0 for r in resumed), (resumed[0].stderr[-2000:]
                                                     + resumed[1].stderr[-2000:])
    assert "resumed from" in resumed[0].stderr
    epochs = [json.loads(line)["epoch"] for line in (rank0 / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    metrics = json.loads((rank0 / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    a, b = metrics["rank_weight_checksums"]
    assert a == b
