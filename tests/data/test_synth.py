import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from binventory import BinventoryError
from binventory.cli import main
from binventory.data import synth
from binventory.data.abid import read_metadata


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ids = synth.generate(root, n=60, seed=0, max_count=5, workers=2, progress=False)
    return root, ids


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = synth.generate(tmp_path / "a", n=6, seed=3, workers=1, progress=False)
    b = synth.generate(tmp_path / "b", n=6, seed=3, workers=2, progress=False)
    c = synth.generate(tmp_path / "c", n=6, seed=4, workers=1, progress=False)
    assert a == b == c
    da, db, dc = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert len(da) == 13 and da == db and "SYNTHETIC.json" in da  # 6 photos, 6 records, the marker
    images = [k for k in da if k.startswith("bin-images/")]
    assert all(da[k] != dc[k] for k in images)


def test_layout_and_records(dataset):
    root, ids = dataset
    assert ids == [f"synth-{i:06d}" for i in range(60)]
    assert sorted(p.name for p in (root / "bin-images").iterdir()) == [f"{i}.jpg" for i in ids]
    assert sorted(p.name for p in (root / "metadata").iterdir()) == [f"{i}.json" for i in ids]
    counts, sizes = [], set()
    for image_id in ids:
        with Image.open(root / "bin-images" / f"{image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            im.load()
            sizes.add(im.size)
            assert 300 <= im.width <= 480 and 250 <= im.height <= 420
        record = read_metadata(root / "metadata" / f"{image_id}.json")
        assert record.image_id == image_id and record.image_fname == f"{image_id}.jpg"
        count = record.expected_quantity
        counts.append(count)
        assert record.sku_quantity_sum == count
        assert len(record.skus) == 0 if count == 0 else 1 <= len(record.skus) <= min(count, 4)
        assert len({s.asin for s in record.skus}) == len(record.skus)
        for sku in record.skus:
            assert re.fullmatch(r"B0[A-Z0-9]{8}", sku.asin) and sku.quantity >= 1
            assert len(sku.name.split()) >= 3
            assert sku.length >= sku.width >= sku.height > 0 and sku.length < 20
            assert sku.weight > 0
    assert set(counts) == set(range(6))
    assert len(sizes) > 30


def test_explicit_counts_and_id_padding(tmp_path):
    ids = synth.generate(tmp_path, n=3, seed=1, counts=[0, 4, 2], workers=1, progress=False,
                         id_prefix="demo")
    assert ids == ["demo-000000", "demo-000001", "demo-000002"]
    assert [read_metadata(tmp_path / "metadata" / f"{i}.json").expected_quantity
            for i in ids] == [0, 4, 2]
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2, seed=-1), dict(n=2, max_count=-1),
                                    dict(n=2, max_count=synth.MAX_ITEMS + 1),
                                    dict(n=2, workers=0), dict(n=2, id_prefix="../x"),
                                    dict(n=2, counts=[1])])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(BinventoryError):
        synth.generate(tmp_path, progress=False, **kwargs)


def render_plain(seed: int, count: int, monkeypatch, straps: bool = False) -> np.ndarray:
    """A bin before the camera's lighting and noise, so that items are the only difference."""
    with monkeypatch.context() as m:
        m.setattr(synth, "_camera", lambda rng, img: img)
        if not straps:
            m.setattr(synth, "_draw_straps", lambda rng, img, plan: None)
        image, record = synth.render_bin(np.random.default_rng(seed), count, "x")
    assert record.expected_quantity == count
    return np.asarray(image, np.int16)


def test_more_items_cover_more_of_the_bin(monkeypatch):
    cover = {c: [] for c in (1, 2, 3, 5)}
    for seed in range(10):
        empty = render_plain(seed, 0, monkeypatch)
        for c in cover:
            changed = np.abs(render_plain(seed, c, monkeypatch) - empty).max(axis=2) > 30
            cover[c].append(changed.mean())
    means = [np.mean(cover[c]) for c in (1, 2, 3, 5)]
    assert min(min(v) for v in cover.values()) > 0.01  # every bin with items shows them
    assert means[0] < means[1] < means[3] and means[0] < means[2] < means[3]
    assert means[3] < 0.8  # the bin stays visible around the items


def test_straps_cross_the_whole_bin(monkeypatch):
    for seed in range(5):
        plain = render_plain(seed, 2, monkeypatch)
        strapped = render_plain(seed, 2, monkeypatch, straps=True)
        changed = np.abs(strapped - plain).max(axis=2) > 12
        assert changed.any(axis=0).mean() > 0.95  # from one side of the bin to the other
        assert changed.any(axis=1).mean() < 0.75  # in bands, not all over


def test_final_images_differ_with_items_and_are_not_flat(dataset):
    root, ids = dataset
    for image_id in ids[:10]:
        a = np.asarray(Image.open(root / "bin-images" / f"{image_id}.jpg"), np.float32)
        assert 40 < a.mean() < 230 and a.std() > 8


def test_cli_writes_a_dataset(tmp_path, capsys):
    assert main(["data", "synth", "--n", "8", "--seed", "1", "--out", str(tmp_path)]) == 0
    assert len(list((tmp_path / "bin-images").glob("*.jpg"))) == 8
    assert len(list((tmp_path / "metadata").glob("*.json"))) == 8
    assert "wrote 8 synthetic bins" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--n", "2", "--max-count", "99"], "max count must be an integer from 0 to"),
])
def test_cli_rejects_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["data", "synth", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
