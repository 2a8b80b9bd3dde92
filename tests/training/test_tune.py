import json

import optuna
import pytest

from binventory.cli import main
from tests.training.conftest import TINY


@pytest.mark.slow
def test_tune_runs_resumes_and_exports_best_config(tiny_manifest, tmp_path, capsys):
    study = tmp_path / "study"
    argv = ["tune", "--manifest", str(tiny_manifest), "--study-dir", str(study), "--epochs", "1",
            "--image-sizes", "32", "--max-freeze", "2", *TINY]
    assert main([*argv, "--trials", "2"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["trials"] == 2
    # Rerunning with a larger budget resumes the same study: only the missing trial runs.
    assert main([*argv, "--trials", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    loaded = optuna.load_study(study_name="binventory", storage=f"sqlite:///{study / 'study.db'}")
    assert len(loaded.trials) == 3 == summary["trials"]
    best = json.loads((study / "best_config.json").read_text())
    assert best["lr"] == summary["best_params"]["lr"] and best["image_size"] == 32
    assert best["manifest"] == str(tiny_manifest)
    # The exported config trains as it is.
    assert main(["train", "--config", str(study / "best_config.json"), "--output",
                 str(tmp_path / "again"), "--epochs", "1", "--cache-dir", "", "--workers", "0",
                 "--no-progress"]) == 0
