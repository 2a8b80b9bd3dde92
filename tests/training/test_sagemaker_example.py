import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from binventory.model.artifact import load_artifact
from tests.training.conftest import TINY

REPO = Path(__file__).resolve().parents[2]


def _launcher():
    spec = importlib.util.spec_from_file_location("launch", REPO / "examples/sagemaker/launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clean_env(**extra) -> dict:
    """This environment minus anything that would let the job see the project's own .venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def _sagemaker_env(manifest: Path, tmp: Path) -> dict:
    return _clean_env(SM_CHANNEL_TRAINING=str(manifest.parent), SM_MODEL_DIR=str(tmp / "model"),
                      SM_OUTPUT_DATA_DIR=str(tmp / "output"), SM_HOSTS='["algo-1"]',
                      SM_CURRENT_HOST="algo-1", SM_NUM_GPUS="0", SM_NUM_CPUS="2",
                      OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_staged_job_trains_in_a_venv_with_only_the_train_extra(tiny_manifest, tmp_path):
    """As SageMaker runs it: pip installs the staged requirements (binventory's wheel with the
    train extra) into a bare Python, then runs entry.py with the job's hyperparameters as options,
    data from SM_CHANNEL_TRAINING and the model into SM_MODEL_DIR. Nothing for serving or the
    inventory is installed, and the job must not need it."""
    code = _launcher().stage_source(tmp_path / "code")
    assert {p.name for p in code.iterdir()} >= {"entry.py", "requirements.txt"}
    assert "[train]" in (code / "requirements.txt").read_text()
    venv = tmp_path / "venv"
    try:
        # A fresh venv sees none of the project's or the system's packages; pip takes the pinned
        # torch and torchvision from the local wheel store where there is one.
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        python = str(venv / "bin" / "python")
        install = subprocess.run([python, "-m", "pip", "install", "-q", "-r", "requirements.txt"],
                                 cwd=code, env=_clean_env(), capture_output=True, text=True,
                                 timeout=1200)
        assert install.returncode == 0, install.stderr[-3000:]
        # (SQLAlchemy is there: Optuna, in the train extra, stores its studies with it.)
        for absent in ("fastapi", "uvicorn", "onnxruntime", "psycopg", "sklearn"):
            probe = subprocess.run([python, "-c", f"import {absent}"], capture_output=True,
                                   env=_clean_env())
            assert probe.returncode != 0, f"{absent} is installed: the test proves nothing"

        hyper = ["--epochs", "1", *TINY]
        result = subprocess.run([python, "entry.py", *hyper], cwd=code,
                                env=_sagemaker_env(tiny_manifest, tmp_path),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # several GB: never left behind in pytest's tmp
    counter = load_artifact(tmp_path / "model" / "model.pt")
    assert counter.train_config["manifest"] == str(tiny_manifest.parent / "manifest.parquet")
    assert counter.train_config["epochs"] == 1


def test_train_help_loads_no_serving_or_database_library():
    """The SageMaker job installs only the train extra: building the command line must import
    none of the libraries of the other extras (nor torch, so that --help is quick)."""
    code = ("import sys, contextlib, io\n"
            "from binventory.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    main(['train', '--help'])\n"
            "print(' '.join(sorted({m.partition('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=_clean_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "binventory" in loaded
    assert not loaded & {"fastapi", "onnxruntime", "onnx", "sqlalchemy", "sklearn", "torch",
                         "numpy", "uvicorn", "prometheus_client"}
