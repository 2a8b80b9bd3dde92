"""The learning loop on a simulated warehouse of real ABID images (issue 14's benchmark).

The dev images (splits/dev.txt, less the dev-only validation split) arrive in --waves waves of
bins. The first model is trained on the first wave's labels only (the recipe of the accuracy
benchmark at --image-size / --epochs). Every later wave is photographed into an inventory whose
records carry injected errors on 20% of bins (``import-abid --inject-errors``); the active model
and policy reconcile the photos; a reviewer resolves the audit queue, highest priority first, up
to --budget recounts (with the true counts), --spot-checks of them on confirmed bins drawn at
random (``inventory spot-check``). Then, through the real commands:

    binventory model compare / promote      the candidate fine-tuned after the last wave, judged
                                            on this wave's recounts, which it never saw
    binventory inventory calibrate --from-audits   (the injected-error calibration on dev
                                            validation until there are enough audits)
    binventory data from-inventory -> binventory train --init-from -> binventory model register
                                            the next candidate, on every recount so far

Per wave it reports on splits/public_test.txt (never used for choosing): exact accuracy 0-5, right
records confirmed and false confirms with the wave's policy (20% wrong records, as
bench/verification.py), recounts spent and wall time; and the model trained on all the dev labels
at once with the same recipe (bench/counter_ablation.py's "dev" variant) for comparison.

    python bench/learning_loop.py --sample ../shared/abid-sample --out runs/bench/learning_loop

A finished wave is not run again (OUT/waves.json): rerun to go on after a stop.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accuracy import V1, make_manifest  # bench/ is on sys.path when run as a script
from verification import run_once, test_folder

from binventory.data.manifest import read_manifest, write_manifest
from binventory.data.split import PROTOCOLS
from binventory.inventory import audit
from binventory.inventory.calibrate import load_sample
from binventory.inventory.db import Database
from binventory.inventory.importer import import_abid
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import reconcile
from binventory.model.metrics import evaluate_logits
from binventory.serving.predictor import Predictor


def binventory(*args: str) -> subprocess.CompletedProcess:
    """Run a binventory command as a user would; its output goes to the log."""
    cmd = [sys.executable, "-m", "binventory", *map(str, args)]
    print("$ binventory " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(cmd, text=True, capture_output=True)
    print(done.stdout[-3000:] + done.stderr[-3000:], flush=True)
    return done


def wave_manifests(dev: Path, out: Path, waves: int, seed: int, limit: int | None = None) -> list[Path]:
    """dev's train rows dealt into waves (by image, i.e. by bin; at most ``limit`` each); val and
    test kept in each."""
    df, meta = read_manifest(dev)
    root = Path(meta["root"])
    train = df[df.split == "train"].sample(frac=1.0, random_state=seed)
    paths = []
    held_out = df[df.split != "train"]
    if limit:
        held_out = held_out.groupby("split").head(limit)
    for k, part in enumerate(np.array_split(train.index.to_numpy(), waves), start=1):
        path = out / f"wave{k}.parquet"
        if not path.is_file():
            write_manifest(pd.concat([df.loc[part[:limit]], held_out]), path, root)
        paths.append(path)
    return paths


def wave_folder(manifest: Path, folder: Path) -> Path:
    """An ABID-layout folder (symlinks) of a wave's train bins: what the robots photograph."""
    df, meta = read_manifest(manifest)
    root = Path(meta["root"])
    for sub in ("bin-images", "metadata"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for row in df[df.split == "train"].itertuples():
        for rel in (row.image_path, row.metadata_path):
            link = folder / Path(rel).parent.name / Path(rel).name
            if not link.exists():
                link.symlink_to((root / rel).resolve())
    return folder


def review(db: Database, truth: dict[str, int], budget: int, spot_checks: int, seed: int) -> int:
    """A reviewer recounts ``spot_checks`` confirmed bins drawn at random (``inventory
    spot-check``: what measures the wrong records the policy confirmed), then the open tasks,
    highest priority first, up to the budget in all."""
    with db.session() as s:
        spots = [t.id for t in audit.open_spot_checks(s, spot_checks, seed=seed)] if spot_checks else []
    with db.session() as s:
        tasks, _ = audit.list_tasks(s, status="open", limit=budget + len(spots))
        rest = [t.id for t in tasks if t.id not in set(spots)]
    ids = (spots + rest)[:budget]
    for task_id in ids:
        with db.session() as s:
            task = audit.get_task(s, task_id)
            code = task.bin.code
            # A count that differs from the record needs a cause; ABID's are miscounts.
            agreed = truth[code] == audit.expected_quantity(s, task.bin_id)
            audit.resolve(s, task_id, counted_quantity=truth[code], actor="reviewer",
                          reason_code=None if agreed else "miscount")
    return len(ids)


def test_accuracy(model: Path, manifest: Path) -> dict:
    """Public-test exact accuracy and RMSE (0-5) of a model."""
    sample = load_sample(model, manifest, "test", progress=False)
    df, _ = read_manifest(manifest)
    counts = torch.tensor(df[df.split == "test"].set_index("image_id").loc[sample.ids, "label"]
                          .to_numpy(dtype=np.int64))
    logits = torch.log(torch.from_numpy(sample.probs).clamp_min(1e-12))
    m = evaluate_logits(logits, counts, sample.classes, 1.0, PROTOCOLS["challenge"])
    return {"accuracy": m["accuracy"], "rmse": m["rmse"]}


def evaluate(model: Path, manifest: Path, policy: Policy, folder: Path, work: Path, seed: int) -> dict:
    """Public-test figures of a model and its policy."""
    db_path = work / "public-test.db"
    for leftover in work.glob("public-test.db*"):
        leftover.unlink()
    v = run_once(Predictor.load(model), policy, folder, db_path, seed, 0.2)
    return {**test_accuracy(model, manifest), "right_confirmed": v["right_confirmed"],
            "false_confirms": v["false_confirms"], "wrong_caught": v["wrong_caught"]}


def calibrate_policy(model: Path, wave1: Path, db_url: str, out: Path, image_dir: Path) -> tuple[Path, str]:
    """From the audits when there are enough of them, else injected errors on dev validation."""
    policy = out / "policy.json"
    done = binventory("inventory", "calibrate", "--from-audits", "--db", db_url, "--model", model,
                      "--image-dir", image_dir, "--out", policy)
    if done.returncode == 0:
        return policy, "audits"
    done = binventory("inventory", "calibrate", "--model", model, "--manifest", wave1,
                      "--split", "val", "--out", policy)
    if done.returncode != 0:
        raise SystemExit("calibration failed (see the log above)")
    return policy, "injected errors (dev val)"


def first_model(args, wave1: Path, out: Path) -> Path:
    model = out / "model.pt"
    if not model.is_file():
        cfg = {**V1, "epochs": args.epochs, "image_size": args.image_size}
        (out / "config.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg))
        done = binventory("train", "--config", out / "config.json", "--manifest", wave1,
                          "--output", out, "--cache-dir", args.cache_dir, "--workers", "1",
                          "--no-progress")
        if done.returncode != 0:
            raise SystemExit("training the first model failed")
    return model


# What a fine-tune keeps of the first model's recipe: its loss and augmentation. Architecture
# and preprocessing come from the parent; the short schedule is --init-from's own.
FIXED_BY_PARENT = ("backbone", "weights", "image_size", "min_count", "max_count", "overflow",
                   "dropout", "epochs", "lr", "warmup_epochs", "ema_decay")


def fine_tune(args, parent: Path, manifests: list[Path], out: Path) -> Path:
    model = out / "model.pt"
    if not model.is_file():
        out.mkdir(parents=True, exist_ok=True)
        recipe = {k: v for k, v in V1.items() if k not in FIXED_BY_PARENT}
        (out / "config.json").write_text(json.dumps(recipe))
        many = [x for m in manifests for x in ("--manifest", m)]
        done = binventory("train", "--config", out / "config.json", "--init-from", parent, *many,
                          "--output", out, "--cache-dir", args.cache_dir, "--workers", "1",
                          "--no-progress")
        if done.returncode != 0:
            raise SystemExit("fine-tuning failed")
    return model


def loop_once(args, k: int, last: dict, paths: list[Path], db: Database, db_url: str) -> dict:
    """Wave k: the robots photograph its bins, the active model judges them, a reviewer recounts;
    the candidate fine-tuned after the last wave is compared with the active model on these
    recounts (which it never saw) and promoted if the gate agrees; the active model is calibrated
    (on the recounts when there are enough); and a new candidate is fine-tuned on every recount
    so far, for the next wave to judge."""
    start = time.perf_counter()
    work, photos = args.out / f"wave{k}", args.out / "photos"
    folder = wave_folder(paths[k - 1], photos / f"wave{k}")
    import_abid(db, folder, inject_errors=0.2, seed=k, progress=False)
    active = Path(last["model"])
    reconcile(db, Predictor.load(active), Policy.load(last["policy"]), folder,
              model_path=str(active), image_dir=photos, progress=False)
    # The queue holds earlier waves' leftovers too: the reviewer takes the most urgent of all.
    df = pd.concat([read_manifest(p)[0] for p in paths[:k]])
    recounts = review(db, dict(zip(df.image_id.astype(str), df.label.astype(int))), args.budget,
                      args.spot_checks, seed=k)
    promoted, verdict = False, "-"
    if last.get("candidate"):
        candidate = Path(last["candidate"])
        cid = Predictor.load(candidate).model_id
        done = binventory("model", "compare", cid, "--db", db_url, "--image-dir", photos, "--json")
        verdict = json.loads(done.stdout).get("verdict", "?") if done.returncode == 0 else "failed"
        promoted = binventory("model", "promote", cid, "--db", db_url).returncode == 0
        active = candidate if promoted else active
    policy, source = calibrate_policy(active, paths[0], db_url, work, photos)
    binventory("model", "register", active, "--policy", policy, "--db", db_url)
    audits = args.out / "audits"
    if binventory("data", "from-inventory", "--db", db_url, "--out", audits,
                  "--image-dir", photos).returncode != 0:
        raise SystemExit("export failed")
    candidate = fine_tune(args, active, [paths[0], audits / "manifest.parquet"], work / "candidate")
    # The candidate's own policy (injected errors on dev validation: every audit so far is in its
    # training data), so that the gate compares confirmations policy against policy.
    done = binventory("inventory", "calibrate", "--model", candidate, "--manifest", paths[0],
                      "--split", "val", "--out", work / "candidate" / "policy.json")
    if done.returncode != 0:
        raise SystemExit("calibrating the candidate failed")
    binventory("model", "register", candidate, "--policy", work / "candidate" / "policy.json",
               "--db", db_url)
    return {"wave": k, "model": str(active), "promoted": promoted, "verdict": verdict,
            "policy": str(policy), "policy_from": source, "candidate": str(candidate),
            "recounts": recounts, "minutes": (time.perf_counter() - start) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, default=Path("../shared/abid-sample"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/learning_loop"))
    parser.add_argument("--waves", type=int, default=4, help="waves the dev bins arrive in")
    parser.add_argument("--budget", type=int, default=300, help="recounts per wave")
    parser.add_argument("--spot-checks", type=int, default=50,
                        help="of the recounts per wave, confirmed bins drawn at random")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the first model")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None,
                        help="at most N images per wave and per held-out split (a quick check)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/bench/ablation/cache"))
    parser.add_argument("--reference", type=Path, default=Path("runs/bench/ablation/dev/results.json"),
                        help="the model trained on all dev labels at once, same recipe")
    args = parser.parse_args()
    if not (args.sample / "splits" / "public_test.txt").is_file():
        raise SystemExit(f"no ABID sample at {args.sample} (see its README)")
    args.out.mkdir(parents=True, exist_ok=True)
    dev = make_manifest(args.sample, args.out, "all", seed=0)
    paths = wave_manifests(dev, args.out, args.waves, seed=0, limit=args.limit)
    test = test_folder(args.sample, args.out / "public-test", limit=args.limit)
    db_url = f"sqlite:///{(args.out / 'warehouse.db').resolve()}"
    db = Database.open(db_url, create=True)
    results_path = args.out / "waves.json"
    rows = json.loads(results_path.read_text()) if results_path.is_file() else []
    if not rows:
        start = time.perf_counter()
        model = first_model(args, paths[0], args.out / "wave1")
        policy, source = calibrate_policy(model, paths[0], db_url, args.out / "wave1",
                                          args.out / "photos")
        binventory("model", "register", model, "--policy", policy, "--db", db_url)
        binventory("model", "promote", Predictor.load(model).model_id, "--force", "--db", db_url)
        rows.append({"wave": 1, "model": str(model), "promoted": True, "verdict": "first model",
                     "policy": str(policy),
                     "policy_from": source, "recounts": 0,
                     "minutes": (time.perf_counter() - start) / 60})
    for k in range(len(rows) + 1, args.waves + 1):
        rows.append(loop_once(args, k, rows[-1], paths, db, db_url))
        results_path.write_text(json.dumps(rows, indent=2))
    for row in rows:
        if "test" not in row:
            row["test"] = evaluate(Path(row["model"]), paths[0], Policy.load(row["policy"]), test,
                                   args.out, seed=0)
            results_path.write_text(json.dumps(rows, indent=2))
        if row.get("candidate") and "candidate_test" not in row:  # for information: the gate's call
            row["candidate_test"] = test_accuracy(Path(row["candidate"]), paths[0])
            results_path.write_text(json.dumps(rows, indent=2))
    print_table(rows, args)


def print_table(rows: list[dict], args) -> None:
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {date.today()}; "
          f"{args.waves} waves of dev bins, {args.budget} recounts per wave ({args.spot_checks} spot "
          f"checks), 20% wrong records, "
          f"{args.image_size} px; public test, 0-5\n")
    print("| wave | candidate compared: verdict | promoted | policy from | exact acc. | RMSE | right confirmed | "
          "false confirms | wrong flagged or queued | recounts (total) | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    total = 0
    for r in rows:
        total += r["recounts"]
        t = r["test"]
        print(f"| {r['wave']} | {r['verdict']} | {'yes' if r['promoted'] else 'no'} | {r['policy_from']} | "
              f"{t['accuracy']:.1%} | {t['rmse']:.3f} | {t['right_confirmed']:.1%} | "
              f"{t['false_confirms']:.2%} | {t['wrong_caught']:.1%} | {r['recounts']} ({total}) | "
              f"{r['minutes']:.1f} |")
    if args.reference.is_file():
        ref = json.loads(args.reference.read_text())["test"]
        print(f"| all dev labels at once | - | - | - | {ref['accuracy']:.1%} | {ref['rmse']:.3f} | "
              "- | - | - | - | - |")
    for r in rows:
        if "candidate_test" in r:
            c = r["candidate_test"]
            print(f"candidate fine-tuned after wave {r['wave']} (judged at the next wave): "
                  f"{c['accuracy']:.1%} exact, RMSE {c['rmse']:.3f}")


if __name__ == "__main__":
    main()
