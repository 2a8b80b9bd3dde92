"""The torchrun launch as training and batch prediction read it (binventory.world)."""
import os
import socket
import subprocess
import sys

import pytest

from binventory import BinventoryError
from binventory.training import distributed
from binventory.world import World, world_from_env


def test_no_variables_is_one_process():
    assert world_from_env({}) == World(0, 1, 0, 1) and not world_from_env({}).enabled


def test_torchrun_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert world_from_env(env) == World(3, 4, 1, 2)
    # Without LOCAL_WORLD_SIZE every process is taken to be on this machine.
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "2"}).local_size == 2


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "inconsistent torchrun variables"),
    ({"WORLD_SIZE": "0"}, "inconsistent"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"}, "inconsistent")])
def test_impossible_launches_are_clear_errors(env, message):
    with pytest.raises(BinventoryError, match=message):
        world_from_env(env)


def test_training_reads_the_same_launch(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "SM_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(BinventoryError, match="RANK is not set"):
        distributed.setup("cpu")


def test_batch_prediction_without_a_rank_stops_at_once(tmp_path):
    # Before, both processes took rank 0 and waited for a second rank that never came.
    (tmp_path / "model.pt").write_bytes(b"not read")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"\xff\xd8\xff")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK")}
    env.update(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = subprocess.run([sys.executable, "-m", "binventory", "predict", "--model",
                             str(tmp_path / "model.pt"), "--input", str(tmp_path / "in"),
                             "--out", str(tmp_path / "out.parquet"), "--backend", "torch"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "WORLD_SIZE=2 but RANK is not set: launch with torchrun" in result.stderr
