import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from binventory.cli import main
from binventory.model.artifact import load_artifact
from binventory.training.cli import apply_config_file, sagemaker_defaults
from binventory.training.config import TrainConfig
from binventory.training.distributed import sagemaker_env, sagemaker_paths
from tests.training.conftest import TINY


def _args(manifest, output, epochs=2, *extra):
    return ["train", "--manifest", str(manifest), "--output", str(output), "--epochs", str(epochs),
            *TINY, *extra]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_train_writes_checkpoints_metrics_and_artifact(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny_manifest, out, 2)) == 0
    summary = json.loads(capsys.readouterr().out)
    for name in ("last.pt", "best.pt", "model.pt", "metrics.json", "test_predictions.npz"):
        assert (out / name).is_file(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert list((out / "tensorboard").iterdir())
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert {"model", "optimizer", "scheduler", "ema", "epoch", "rng", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["config"]["image_size"] == 32
    counter = load_artifact(out / "model.pt")
    assert counter.classes.num_classes == 7 and counter.preprocess.image_size == 32
    assert counter.temperature > 0 and counter.metrics["test"]["challenge"]["n"] > 0
    assert summary["model"] == str(out / "model.pt") and "test_challenge" in summary


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_weights(tiny_manifest, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    epochs = 4
    assert main(_args(tiny_manifest, straight, epochs)) == 0
    cmd = [sys.executable, "-m", "binventory", *_args(tiny_manifest, killed, epochs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        metrics = killed / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The kill landed mid-run: the process died of it, before its last epoch and its artifact.
    assert proc.returncode == -signal.SIGKILL
    done = len((killed / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < epochs and not (killed / "model.pt").exists()
    assert main(_args(tiny_manifest, killed, epochs, "--resume")) == 0
    a, b = _weights(straight / "last.pt"), _weights(killed / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    epochs_logged = [json.loads(x)["epoch"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert epochs_logged == list(range(1, epochs + 1))


@pytest.mark.slow
def test_a_kill_between_checkpoint_and_metrics_line_loses_no_epoch(tiny_manifest, tmp_path, monkeypatch):
    from binventory.training import train as train_mod

    out, real_log = tmp_path / "run", train_mod._log_epoch

    def killed_at_epoch_2(record, *args):
        if record["epoch"] == 2:  # last.pt for epoch 2 is written; its metrics line is not
            raise KeyboardInterrupt
        real_log(record, *args)

    monkeypatch.setattr(train_mod, "_log_epoch", killed_at_epoch_2)
    assert main(_args(tiny_manifest, out, 3)) == 130
    assert torch.load(out / "last.pt", map_location="cpu", weights_only=False)["epoch"] == 1
    monkeypatch.setattr(train_mod, "_log_epoch", real_log)
    assert main(_args(tiny_manifest, out, 3, "--resume")) == 0
    logged = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_keep_identical_weights(tiny_manifest, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           "-m", "binventory", *_args(tiny_manifest, out, 2)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    a, b = metrics["rank_weight_checksums"]
    assert a == b
    assert load_artifact(out / "model.pt").metrics["world_size"] == 2


def test_config_file_with_command_line_overrides(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.01, "epochs": 7, "image_size": 96}))
    from binventory.cli import build_parser
    argv = ["train", "--config", str(tmp_path / "c.json"), "--epochs", "3"]
    args = build_parser().parse_args(argv)
    cfg = apply_config_file(args, argv)
    assert (cfg.lr, cfg.epochs, cfg.image_size) == (0.01, 3, 96)
    (tmp_path / "bad.json").write_text(json.dumps({"nope": 1}))
    argv = ["train", "--config", str(tmp_path / "bad.json")]
    args = build_parser().parse_args(argv)
    with pytest.raises(Exception, match="unknown training options"):
        apply_config_file(args, argv)


def test_sagemaker_environment():
    env = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2",
           "SM_MODEL_DIR": "/opt/ml/model", "SM_CHANNEL_TRAINING": "/opt/ml/input/data/training"}
    assert sagemaker_env(env) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
                                  "MASTER_ADDR": "algo-1", "MASTER_PORT": "29500"}
    assert sagemaker_env({**env, "WORLD_SIZE": "4"}) == {}  # torchrun inside SageMaker wins
    assert sagemaker_paths(env)["data_dir"] == "/opt/ml/input/data/training"
    cfg = sagemaker_defaults(TrainConfig(), env)
    assert cfg.manifest == "/opt/ml/input/data/training/manifest.parquet"
    assert cfg.output == "/opt/ml/model"
    assert sagemaker_defaults(TrainConfig(output="mine"), env).output == "mine"


def test_train_needs_a_manifest(capsys):
    assert main(["train", "--epochs", "1"]) == 2
    assert "--manifest is required" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_command_writes_report(tiny_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny_manifest, out, 1)) == 0
    assert main(["evaluate", "--model", str(out / "model.pt"), "--manifest", str(tiny_manifest),
                 "--split", "test", "--workers", "0", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(report["protocols"]) == {"challenge", "udacity"}
    for name in ("confusion_challenge.png", "reliability_udacity.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 1000
    assert "accuracy" in capsys.readouterr().out
