import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from binventory.model.artifact import load_artifact

REPO = Path(__file__).resolve().parents[2]


def _launcher():
    spec = importlib.util.spec_from_file_location("launch", REPO / "examples/sagemaker/launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_staged_entry_point_trains_like_a_sagemaker_job(tiny_manifest, tmp_path):
    """The staged source_dir runs as SageMaker runs it: hyperparameters as options, data from
    SM_CHANNEL_TRAINING, model into SM_MODEL_DIR, SM_HOSTS for a (here one-host) cluster."""
    code = _launcher().stage_source(tmp_path / "code")
    assert {"entry.py", "requirements.txt", "binventory"} <= {p.name for p in code.iterdir()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SM_CHANNEL_TRAINING=str(tiny_manifest.parent), SM_MODEL_DIR=str(tmp_path / "model"),
               SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1")
    hyper = ["--epochs", "1", "--image-size", "32", "--batch-size", "8", "--weights", "none",
             "--workers", "0", "--cache-dir", "", "--no-progress"]
    result = subprocess.run([sys.executable, "entry.py", *hyper], cwd=code, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counter = load_artifact(tmp_path / "model" / "model.pt")
    assert counter.train_config["manifest"] == str(tiny_manifest.parent / "manifest.parquet")
