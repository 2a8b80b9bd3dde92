"""Batch prediction over folders, manifests and S3; bad images, resuming, torchrun and the CLI."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.manifest import build_manifest, write_manifest
from binventory.model.artifact import load_artifact
from binventory.serving import batch as batch_mod
from binventory.serving.batch import merge_parts, parts_dir, predict_batch
from binventory.serving.export import export_onnx
from binventory.serving.predictor import Predictor
from tests.s3 import fill_public_bucket, moto_server
from tests.conftest import REPO, jpeg_bytes
from tests.serving.test_export import tiny_artifact

PROBS = [f"p_{n}" for n in ["0", "1", "2", "3", "4", "5", "6+"]]
BUCKET = "bins"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tiny_artifact(tmp_path_factory.mktemp("model") / "model.pt")
    export_onnx(path)  # once, so that each run below does not export again
    return path


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), "orange").save(buf, "PNG")
    return buf.getvalue()


# Eight inputs: five JPEGs, a PNG, a truncated JPEG and a text file named .jpg.
FILES = {f"img{i}.jpg": jpeg_bytes((48, 36), seed=i) for i in range(5)}
FILES |= {"photo.png": _png(), "cut.jpg": jpeg_bytes((64, 48), seed=9)[:300], "text.jpg": b"hello"}
BAD = {"cut": "truncated", "text": "not_jpeg"}


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for name, data in FILES.items():
        (root / ("sub/" + name if name == "img4.jpg" else name)).write_bytes(data)
    (root / "notes.txt").write_text("not an input")
    (root / ".img0.jpg.part").write_bytes(b"in-flight download")
    return root


def _predict(model, inputs, out, **kwargs):
    kwargs = {"workers": 2, "threads": 1, "progress": False, "batch_size": 4, **kwargs}
    return predict_batch(model, inputs, out, **kwargs)


def _check_rows(df: pd.DataFrame, bad: dict[str, str], model_id: str) -> None:
    assert (df.model_version == model_id).all() and df.sha256.notna().all()
    is_bad = df.image_id.isin(list(bad))
    for image_id, error in df[is_bad].set_index("image_id").error.items():
        assert error.startswith(bad[image_id] + ": ")
    assert df[is_bad][["count", "label", "confidence", *PROBS]].isna().all().all()
    good = df[~is_bad]
    assert good.error.isna().all()
    probs = good[PROBS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(good.confidence, probs.max(axis=1), rtol=1e-6)
    assert list(good.label) == [PROBS[k][2:] for k in probs.argmax(axis=1)]


# ---- inputs ------------------------------------------------------------------------------------

def test_folder_with_bad_images(model, folder, tmp_path):
    out = tmp_path / "preds.parquet"
    report = _predict(model, folder, out)
    df = pd.read_parquet(out)
    assert list(df.columns[6:13]) == PROBS
    assert sorted(df.image_id) == sorted(["cut", "img0", "img1", "img2", "img3", "photo",
                                          "sub/img4", "text"])
    assert (report.inputs, report.predicted, report.errors) == (8, 6, 2)
    assert list(df.source) == sorted(df.source) and not parts_dir(out).exists()
    _check_rows(df, BAD, load_artifact(model).model_id)
    # The same numbers as the predictor, the core every other way of counting uses.
    [expected] = Predictor.load(model, threads=1).predict([FILES["img1.jpg"]])
    row = df.set_index("image_id").loc["img1"]
    assert row["count"] == expected.count
    assert abs(row["p_3"] - expected.probabilities["3"]) < 1e-4


def test_torch_and_onnx_backends_agree(model, folder, tmp_path):
    a = pd.read_parquet(_predict(model, folder, tmp_path / "a.parquet", backend="onnx").out)
    b = pd.read_parquet(_predict(model, folder, tmp_path / "b.parquet", backend="torch").out)
    assert a.drop(columns=PROBS + ["confidence"]).equals(b.drop(columns=PROBS + ["confidence"]))
    assert np.abs(a[PROBS].to_numpy() - b[PROBS].to_numpy())[a.error.isna()].max() < 1e-4


def test_abid_layout_and_manifest(model, messy_dataset, tmp_path):
    root, labels = messy_dataset
    by_folder = pd.read_parquet(_predict(model, root, tmp_path / "f.parquet", batch_size=16).out)
    assert {"00523", "523", "truncated", "png", "garbage", "bomb"} <= set(by_folder.image_id)
    bad = by_folder.set_index("image_id").error.dropna()
    assert bad.str.split(":").str[0].to_dict() == {
        "bomb": "decompression_bomb", "empty": "empty_file", "garbage": "undecodable",
        "truncated": "truncated"}  # the PNG is a valid input here

    manifest = tmp_path / "manifest.parquet"
    write_manifest(build_manifest(root, progress=False), manifest, root)
    by_manifest = pd.read_parquet(_predict(model, manifest, tmp_path / "m.parquet",
                                           batch_size=16).out)
    assert set(by_manifest.image_id) == set(labels)  # the manifest's valid images only
    assert by_manifest.error.isna().all()
    same = by_folder.set_index("source").loc[by_manifest.source]
    assert (same["count"].to_numpy() == by_manifest["count"].to_numpy()).all()


# ---- S3 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        objects = {f"abid/bin-images/{name}": data for name, data in FILES.items()}
        objects["abid/metadata/img0.json"] = b"{}"  # not an image: not an input
        objects["abid-old/bin-images/img0.jpg"] = FILES["img0.jpg"]  # outside the prefix "folder"
        fill_public_bucket(url, BUCKET, objects)
        yield url


def test_s3_prefix(model, endpoint, folder, tmp_path):
    report = _predict(model, f"s3://{BUCKET}/abid", tmp_path / "s3.parquet", endpoint_url=endpoint)
    df = pd.read_parquet(report.out)
    assert sorted(df.image_id) == sorted(Path(n).stem for n in FILES)
    assert df.source.str.startswith(f"s3://{BUCKET}/abid/bin-images/").all()
    _check_rows(df, BAD, load_artifact(model).model_id)
    local = pd.read_parquet(_predict(model, folder, tmp_path / "local.parquet").out)
    by_sha = local.set_index("sha256")
    assert (by_sha.loc[df.sha256, "count"].fillna(-1).to_numpy()
            == df["count"].fillna(-1).to_numpy()).all()


def test_s3_missing_bucket_is_a_clear_error(model, endpoint, tmp_path):
    with pytest.raises(BinventoryError, match="cannot list s3://nope"):
        _predict(model, "s3://nope/x", tmp_path / "p.parquet", endpoint_url=endpoint)


# ---- resuming ----------------------------------------------------------------------------------

def test_rerun_processes_nothing_new(model, folder, tmp_path):
    out = tmp_path / "preds.parquet"
    _predict(model, folder, out)
    before = out.read_bytes()
    report = _predict(model, folder, out)
    assert (report.predicted, report.errors, report.skipped) == (0, 0, 8)
    assert out.read_bytes() == before  # not even rewritten
    (folder / "new.jpg").write_bytes(jpeg_bytes(seed=42))
    report = _predict(model, folder, out)
    assert (report.predicted, report.skipped) == (1, 8) and len(pd.read_parquet(out)) == 9


def test_killed_run_completes_to_the_same_result(model, folder, tmp_path, monkeypatch):
    clean = pd.read_parquet(_predict(model, folder, tmp_path / "clean.parquet").out)
    out = tmp_path / "preds.parquet"
    real_load, calls = batch_mod.load_item, []

    def dies_on_the_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # like Ctrl-C, or a kill between two part files
        return real_load(*args)

    monkeypatch.setattr(batch_mod, "load_item", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        _predict(model, folder, out, batch_size=2, workers=1, part_rows=2)
    monkeypatch.setattr(batch_mod, "load_item", real_load)
    assert not out.exists() and len(list(parts_dir(out).glob("part-*.parquet"))) >= 1
    report = _predict(model, folder, out)
    assert report.skipped >= 2 and report.skipped + report.predicted + report.errors == 8
    resumed = pd.read_parquet(out)
    pd.testing.assert_frame_equal(resumed.drop(columns=PROBS), clean.drop(columns=PROBS),
                                  check_exact=False, atol=1e-5)
    assert np.nanmax(np.abs(resumed[PROBS].to_numpy() - clean[PROBS].to_numpy())) < 1e-5


def test_read_errors_are_retried(model, folder, tmp_path, monkeypatch):
    out = tmp_path / "preds.parquet"
    real_read = batch_mod.read_bytes

    def flaky(source, *args):
        if source.endswith("img2.jpg"):
            raise ConnectionResetError("connection reset by peer")
        return real_read(source, *args)

    monkeypatch.setattr(batch_mod, "read_bytes", flaky)
    _predict(model, folder, out)
    assert pd.read_parquet(out).set_index("image_id").error["img2"].startswith("read_error")
    monkeypatch.setattr(batch_mod, "read_bytes", real_read)
    assert _predict(model, folder, out).predicted == 1
    assert pd.isna(pd.read_parquet(out).set_index("image_id").error["img2"])


def test_output_of_another_model_is_not_mixed_in(model, folder, tmp_path):
    out = tmp_path / "preds.parquet"
    df = pd.read_parquet(_predict(model, folder, out).out).assign(model_version="older")
    df.to_parquet(out)
    with pytest.raises(BinventoryError, match="'older'.*--no-resume"):
        _predict(model, folder, out)
    assert _predict(model, folder, out, resume=False).predicted == 6
    assert merge_parts(out) == 8


def test_a_retrained_model_does_not_resume_the_old_ones_output(model, folder, tmp_path):
    # Retrained on the same data with the same backbone and name: only the weights differ.
    retrained = tiny_artifact(tmp_path / "retrained" / "model.pt", seed=1)
    out = tmp_path / "preds.parquet"
    _predict(model, folder, out)
    with pytest.raises(BinventoryError, match="holds predictions of model.*--no-resume"):
        _predict(retrained, folder, out)
    assert _predict(retrained, folder, out, resume=False).predicted == 6
    assert set(pd.read_parquet(out).model_version) == {load_artifact(retrained).model_id}


# ---- torchrun and the CLI ----------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_matches_a_single_process(model, folder, tmp_path, capsys):
    single, dist_out = tmp_path / "single.parquet", tmp_path / "dist.parquet"
    assert main(["predict", "--model", str(model), "--input", str(folder), "--out", str(single),
                 "--workers", "2", "--threads", "1"]) == 0
    assert "8 images: 6 counted, 2 bad" in capsys.readouterr().out
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "binventory", "predict", "--model", str(model), "--input", str(folder),
           "--out", str(dist_out), "--workers", "1", "--batch-size", "3"]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0/2: 4 images" in done.stdout and "rank 1/2: 4 images" in done.stdout
    a, b = pd.read_parquet(single), pd.read_parquet(dist_out)
    pd.testing.assert_frame_equal(a.drop(columns=PROBS), b.drop(columns=PROBS))
    assert np.nanmax(np.abs(a[PROBS].to_numpy() - b[PROBS].to_numpy())) < 1e-5
    assert not parts_dir(dist_out).exists()


def test_predict_help_and_errors(model, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "s3://bucket/prefix" in out and "default: onnx" in out and "torchrun" in out
    args = ["predict", "--input", str(tmp_path), "--out", str(tmp_path / "p.parquet")]
    assert main([*args, "--model", str(tmp_path / "missing.pt")]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert main([*args, "--model", str(model)]) == 2
    assert "no images" in capsys.readouterr().err
