"""``train --init-from``: a fine-tune starts from the parent's weights, names it, lists its data."""
import json

import pytest
import torch

from binventory.cli import build_parser, main
from binventory.data.manifest import build_manifest, read_manifest, write_manifest
from binventory.model.artifact import load_artifact
from binventory.training import init_from
from binventory.training.cli import apply_config_file, given_options
from binventory.training.manifests import read_training_data
from tests.conftest import jpeg_bytes, write_item
from tests.tiny import save_tiny_model
from tests.training.conftest import TINY

LABELLED = [f"2026-11-{day:02d}T08:30:00.000000+00:00" for day in range(1, 19)]


@pytest.fixture
def parent(tmp_path):
    # Seed 7: not the seed a run starts its own random init from, so only loading shows.
    return save_tiny_model(tmp_path / "parent" / "model.pt", name="parent", seed=7)


@pytest.fixture
def audits(tmp_path, tiny_manifest):
    """An audit-export-like manifest: 18 new photos (12 train, 3 val, 3 test) with labelled_at
    and weak columns, one weak row in val, plus a copy of an image of tiny_manifest."""
    root = tmp_path / "audits"
    for i in range(18):
        write_item(root, f"a{i:02d}", i % 6, image=jpeg_bytes((44, 36), seed=500 + i))
    base_root = tiny_manifest.parent
    write_item(root, "00001", 0, image=(base_root / "bin-images" / "00001.jpg").read_bytes())
    df = build_manifest(root, workers=1, progress=False).sort_values("image_id")
    df["split"] = ["train"] + ["train"] * 12 + ["val"] * 3 + ["test"] * 3  # 00001 first
    df["labelled_at"] = [LABELLED[0]] + LABELLED
    df["weak"] = df.image_id.isin(["a00", "a12"])  # a12 is in val: it must not validate
    path = root / "manifest.parquet"
    write_manifest(df, path, root)
    return path


def _resolved(argv):
    args = build_parser().parse_args(argv)
    return init_from.resolve(apply_config_file(args, argv), given_options(args, argv))


def test_options_left_out_come_from_the_model_and_the_short_schedule(parent, tmp_path):
    cfg, start = _resolved(["train", "--init-from", str(parent), "--manifest", "m.parquet"])
    assert (cfg.backbone, cfg.image_size, cfg.min_count, cfg.max_count, cfg.overflow) == (
        "mobilenet_v2", 32, 0, 5, True)
    assert (cfg.epochs, cfg.lr, cfg.warmup_epochs, cfg.ema_decay, cfg.weights) == (
        3, 1e-4, 0.2, 0.99, "none")
    assert start.parent == load_artifact(parent).model_id
    # Given on the command line or in --config: kept, even when it is the usual default.
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.001}))
    cfg, _ = _resolved(["train", "--config", str(tmp_path / "c.json"), "--init-from", str(parent),
                        "--manifest", "m.parquet", "--epochs", "15", "--image-size", "32"])
    assert (cfg.epochs, cfg.lr, cfg.warmup_epochs) == (15, 0.001, 0.2)
    # Without --init-from nothing changes.
    cfg, start = _resolved(["train", "--manifest", "m.parquet"])
    assert start is None and (cfg.epochs, cfg.image_size, cfg.weights) == (15, 224, "imagenet")


def test_options_that_contradict_the_model_are_refused(parent, tiny_manifest, tmp_path, capsys):
    base = ["train", "--init-from", str(parent), "--manifest", str(tiny_manifest),
            "--output", str(tmp_path / "run")]
    assert main([*base, "--max-count", "15", "--image-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "--max-count 15 (the model has 5)" in err and "--image-size 64 (the model has 32)" in err
    assert "leave these out to take the model's" in err and "Traceback" not in err
    assert main([*base, "--backbone", "efficientnet_lite0"]) == 2
    assert "--backbone efficientnet_lite0 (the model has mobilenet_v2)" in capsys.readouterr().err
    assert main([*base, "--weights", "imagenet"]) == 2
    assert "--weights imagenet" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*base[:2], str(tmp_path / "nope.pt"), *base[3:]]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_manifests_merge_once_and_weak_rows_never_validate(tiny_manifest, audits):
    data = read_training_data(f"{tiny_manifest},{audits}")
    ok = data.rows[data.rows.status == "ok"]
    assert ok.image_id.is_unique and len(ok) == 62 + 18  # the copy of 00001 counted once
    assert not ok[ok.weak & ok.split.isin(["val", "test"])].size
    assert ok.set_index("image_id").split["a12"] == "excluded"
    assert ok.set_index("image_id").split["a00"] == "train"  # weak rows still train
    assert [s["manifest"] for s in data.sources] == [str(tiny_manifest), str(audits)]
    assert [s["labelled_until"] for s in data.sources] == [None, LABELLED[-1]]
    # The repeated option is the comma list; a config file's manifest is replaced by it.
    argv = ["train", "--manifest", str(tiny_manifest), "--manifest", str(audits)]
    args = build_parser().parse_args(argv)
    assert apply_config_file(args, argv).manifest == f"{tiny_manifest},{audits}"


@pytest.mark.slow
def test_child_starts_from_the_parent_and_names_it(parent, tiny_manifest, audits, tmp_path):
    out = tmp_path / "child"
    # lr 0 and a frozen backbone: an update would change nothing, so the child's saved weights
    # are exactly those it started from.
    argv = ["train", "--init-from", str(parent), "--manifest", str(tiny_manifest), "--manifest",
            str(audits), "--output", str(out), "--epochs", "1", "--lr", "0", "--freeze", "-1", "--diagnostics-every", "0", *TINY]
    assert main(argv) == 0
    child, mother = load_artifact(out / "model.pt"), load_artifact(parent)
    ours, theirs = child.model.state_dict(), mother.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert child.parent == mother.model_id and child.model_id != mother.model_id
    assert [(d["manifest"], d["images"], d["labelled_until"]) for d in child.data] == [
        (str(tiny_manifest), 62, None), (str(audits), 19, LABELLED[-1])]
    assert child.data[1]["hash"] and child.train_config["init_from"] == str(parent)
    df, _ = read_manifest(tiny_manifest)
    splits = child.metrics["training_data"]["splits"]
    assert splits["val"] == (df.split == "val").sum() + 2  # a13 and a14; a12 is weak
    assert splits["train"] == (df.split == "train").sum() + 12


@pytest.mark.slow
def test_resume_continues_the_fine_tune_not_the_parent(parent, audits, tmp_path, monkeypatch):
    from binventory.training import train as train_mod

    def args(out, *extra):
        return ["train", "--init-from", str(parent), "--manifest", str(audits), "--output",
                str(out), "--epochs", "2", "--diagnostics-every", "0", *TINY, *extra]

    straight, killed, real_log = tmp_path / "straight", tmp_path / "killed", train_mod._log_epoch
    assert main(args(straight)) == 0

    def killed_after_epoch_1(record, *rest):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_log_epoch", killed_after_epoch_1)
    assert main(args(killed)) == 130
    monkeypatch.setattr(train_mod, "_log_epoch", real_log)
    assert main(args(killed, "--resume")) == 0
    a, b = (torch.load(p / "last.pt", map_location="cpu", weights_only=False)["model"]
            for p in (straight, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_artifact(killed / "model.pt").parent == load_artifact(parent).model_id
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
