"""``binventory tune``: hyperparameter search with Optuna (TPE sampler, median pruning).

The study lives in a SQLite file, so rerunning the same command resumes it: trials already
finished (or pruned) count towards ``--trials`` and only the rest are run.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from binventory import BinventoryError
from binventory.training.config import TrainConfig

log = logging.getLogger(__name__)


def suggest(trial, base: TrainConfig, image_sizes: list[int], max_freeze: int) -> TrainConfig:
    """The search space: learning rate, weight decay, batch size, image size, label smoothing,
    frozen stages."""
    return replace(
        base,
        lr=trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-4, 0.2, log=True),
        batch_size=trial.suggest_categorical("batch_size", [16, 32, 64]),
        image_size=trial.suggest_categorical("image_size", image_sizes),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2),
        freeze=trial.suggest_int("freeze", 0, max_freeze),
    )


def tune(base: TrainConfig, trials: int, study_dir: str | Path, image_sizes: list[int],
         max_freeze: int = 8, seed: int = 0, timeout: float | None = None,
         study_name: str = "binventory") -> dict:
    import optuna

    from binventory.training.train import train

    if trials < 1:
        raise BinventoryError("--trials must be at least 1")
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name, storage=f"sqlite:///{study_dir / 'study.db'}", load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=done_states))
    if done:
        log.info("resuming study %s: %d of %d trials done", study_name, done, trials)

    def objective(trial) -> float:
        cfg = replace(suggest(trial, base, image_sizes, max_freeze),
                      output=str(study_dir / f"trial-{trial.number:03d}"), resume=False)

        def report(epoch: int, record: dict) -> None:
            trial.report(record["val_accuracy"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val accuracy {record['val_accuracy']:.3f} "
                                         f"at epoch {epoch + 1}")

        result = train(cfg, callbacks=[report])
        trial.set_user_attr("output", cfg.output)
        trial.set_user_attr("val_rmse", result["metrics"]["val"]["rmse"])
        return result["metrics"]["val"]["accuracy"]

    if done < trials:
        study.optimize(objective, n_trials=trials - done, timeout=timeout,
                       catch=(BinventoryError,))
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise BinventoryError("no trial completed: see the log for why")
    best = study.best_trial
    best_config = replace(base, **best.params, output=TrainConfig.output, resume=False)
    (study_dir / "best_config.json").write_text(json.dumps(best_config.to_dict(), indent=2))
    summary = {"best_value": best.value, "best_params": best.params, "best_trial": best.number,
               "trials": len(study.trials),
               "states": {s.name: len(study.get_trials(deepcopy=False, states=(s,)))
                          for s in optuna.trial.TrialState},
               "best_config": str(study_dir / "best_config.json")}
    (study_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
