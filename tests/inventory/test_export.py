"""binventory data from-inventory: resolved audits become a split, idempotent ABID-layout dataset
(SQLite and PostgreSQL)."""
import hashlib
import json
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest
from sqlalchemy import select

from binventory import BinventoryError
from binventory.cli import main
from binventory.data.abid import read_metadata
from binventory.data.dataset import BinDataset
from binventory.data.manifest import build_manifest, read_manifest
from binventory.data.merge import merge_manifests
from binventory.data.split import assign_splits
from binventory.inventory import audit
from binventory.inventory.export import export, parse_since
from binventory.inventory.models import Adjustment, AuditTask, BinContent, Observation, utcnow
from binventory.inventory.photos import photo_uri
from tests.inventory.helpers import load, make_dataset
from tests.tiny import image_bytes

COUNTS = {f"b{i:02d}": 1 + i % 5 for i in range(12)}


@pytest.fixture
def shop(db, tmp_path):
    """An inventory of 12 bins (records 1..5) and a photo store."""
    load(db, make_dataset(tmp_path / "abid", COUNTS, images=False))
    store = tmp_path / "store"
    store.mkdir()
    return db, store


def observe(db, store, code, *, decision="flag", predicted=1, seed=0, data=None) -> tuple[int, int | None]:
    """A photo of ``code`` in the store judged ``decision``; returns (observation id, task id)."""
    photo = store / f"{code}-{seed}.jpg"
    photo.write_bytes(image_bytes(seed) if data is None else data)
    with db.session() as s:
        found = audit.get_bin(s, code)
        expected = audit.expected_quantity(s, found.id)
        obs = Observation(bin_id=found.id, image_uri=photo_uri(photo, store),
                          image_sha256=hashlib.sha256(photo.read_bytes()).hexdigest(),
                          captured_at=utcnow(), model_version="m1", predicted_count=predicted,
                          probabilities={}, expected_quantity=expected, decision=decision,
                          score=0.5, created_at=utcnow())
        s.add(obs)
        s.flush()
        if decision == "confirm":
            return obs.id, None
        audit.open_tasks(s, [(found.id, obs.id, audit.Finding(decision, 1.0, predicted, expected))])
        return obs.id, s.scalar(select(AuditTask.id).where(AuditTask.observation_id == obs.id))


def recount(db, store, code, count, seed=0, **kw) -> int:
    """An observation of ``code``, its task, resolved with ``count``; returns the task id."""
    _, task_id = observe(db, store, code, seed=seed, **kw)
    with db.session() as s:
        expected = audit.expected_quantity(s, audit.get_bin(s, code).id)
        audit.resolve(s, task_id, counted_quantity=count, actor="ana",
                      reason_code=None if count == expected else "miscount")
    return task_id


def run(db, store, out, **kw):
    return export(db, out, image_dir=store, progress=False, **kw)


def manifest(out) -> pd.DataFrame:
    return read_manifest(out / "manifest.parquet")[0]


def test_audits_become_an_abid_layout_dataset_with_the_record_after_each_recount(shop, tmp_path):
    db, store = shop
    first = recount(db, store, "b04", 3, seed=1)      # record 5 -> 3
    second = recount(db, store, "b04", 7, seed=2)     # then 3 -> 7
    recount(db, store, "b01", 2, seed=3, data=image_bytes(3, "PNG"))  # a PNG upload, agreed
    out = tmp_path / "audits"
    report = run(db, store, out)
    assert report.added == {"audit": 3, "confirmed": 0} and not report.skipped
    df = manifest(out).set_index("task_id")
    assert list(df.loc[[first, second], "label"]) == [3, 7]
    # each row's record is the bin's as it stood right after that recount, not today's
    assert list(df.loc[[first, second], "sku_quantity_sum"]) == [3, 7]
    record = read_metadata(out / df.loc[first, "metadata_path"], df.loc[first, "image_id"])
    assert record.expected_quantity == 3 and sum(s.quantity for s in record.skus) == 3
    assert {s.asin for s in record.skus} <= {"B00TEST000", "B00TEST001"}
    assert set(df.source) == {"audit"} and not df.weak.any() and df.has_record.all()
    assert list(df.loc[[first, second], "expected_before"]) == [5, 3]
    stamps = [datetime.fromisoformat(t) for t in df.labelled_at]
    assert all(t.tzinfo == timezone.utc for t in stamps)
    # the ABID layout as 'binventory data index' reads it: same ids, labels, and all valid (the
    # PNG was re-encoded as JPEG)
    indexed = build_manifest(out, workers=1, progress=False).set_index("image_id")
    assert (indexed.status == "ok").all()
    assert indexed.label.to_dict() == df.set_index("image_id").label.to_dict()


def test_a_line_changed_outside_the_ledger_later_leaves_an_earlier_recounts_record(shop, tmp_path):
    # The export once rebuilt a record as "now less every later recount's delta", calibrate from
    # the ledger rows' quantity_before: they part when a line changes outside the ledger (a
    # re-import) after the later recount. The first recount left 3 whatever happened since.
    db, store = shop
    first = recount(db, store, "b04", 3, seed=1)      # record 5 -> 3
    second = recount(db, store, "b04", 7, seed=2)     # then 3 -> 7
    with db.session() as s:
        booked = s.scalars(select(Adjustment).where(Adjustment.task_id == second)).first()
        s.get(BinContent, (booked.bin_id, booked.sku_id)).quantity += 5
    df = manifest(run(db, store, tmp_path / "audits").out).set_index("task_id")
    assert df.loc[first, "sku_quantity_sum"] == 3


def test_a_bin_sits_in_one_split_and_the_newest_audits_validate(shop, tmp_path):
    db, store = shop
    tasks = {}
    for i, code in enumerate(sorted(COUNTS)[:10]):
        tasks[code] = recount(db, store, code, COUNTS[code], seed=i)
    late = recount(db, store, "b00", 2, seed=50)   # b00: the oldest audit and the newest
    out = tmp_path / "audits"
    run(db, store, out, val_fraction=0.2)
    df = manifest(out)
    assert df.groupby("bin_code").split.nunique().max() == 1
    # 11 audits: the newest ceil(0.2 x 11) = 3 are b09's, b08's and b00's second; their bins validate
    assert set(df[df.split == "val"].bin_code) == {"b00", "b08", "b09"}
    assert set(df[df.task_id.isin([tasks["b00"], late])].split) == {"val"}
    assert len(df[df.split == "train"]) == 7


def test_confirmed_photos_are_weak_train_labels_never_for_a_val_bin(shop, tmp_path):
    db, store = shop
    for i, code in enumerate(["b00", "b01", "b02", "b03"]):
        recount(db, store, code, COUNTS[code], seed=i)
    observe(db, store, "b00", decision="confirm", seed=10)   # a train bin
    observe(db, store, "b03", decision="confirm", seed=11)   # the val bin (newest audit)
    observe(db, store, "b07", decision="confirm", seed=12)   # never audited
    out = tmp_path / "audits"
    report = run(db, store, out, include_confirmed=True, val_fraction=0.25)
    df = manifest(out)
    weak = df[df.weak]
    assert set(weak.bin_code) == {"b00", "b07"} and report.withheld == 1
    assert set(weak.source) == {"confirmed"} and set(weak.split) == {"train"}
    assert weak.set_index("bin_code").label.to_dict() == {"b00": COUNTS["b00"], "b07": COUNTS["b07"]}
    assert weak.task_id.isna().all() and weak.observation_id.notna().all()
    assert set(df[df.split == "val"].bin_code) == {"b03"}
    # without the flag, no confirmed photo
    assert not manifest(run(db, store, tmp_path / "plain").out).weak.any()


def test_a_rerun_adds_only_new_audits_and_moves_nothing(shop, tmp_path):
    db, store = shop
    for i, code in enumerate(["b00", "b01", "b02", "b03", "b04"]):
        recount(db, store, code, COUNTS[code], seed=i)
    out = tmp_path / "audits"
    run(db, store, out, val_fraction=0.2)
    before = manifest(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "bin-images").iterdir()}
    assert set(before[before.split == "val"].bin_code) == {"b04"}
    # nothing new: the manifest is left byte for byte
    data = (out / "manifest.parquet").read_bytes()
    assert run(db, store, out, val_fraction=0.2).added == {"audit": 0, "confirmed": 0}
    assert (out / "manifest.parquet").read_bytes() == data

    recount(db, store, "b00", 4, seed=20)   # newest audit, but b00 is already in train
    recount(db, store, "b09", 3, seed=21)   # a new bin: newest, so val
    report = run(db, store, out, val_fraction=0.2)
    after = manifest(out)
    assert report.added["audit"] == 2 and report.kept == 5 and report.written == 2
    kept = after[after.image_id.isin(before.image_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "bin-images").iterdir()
            if p.name in mtimes} == mtimes
    assert set(after[after.bin_code == "b00"].split) == {"train"}
    assert set(after[after.bin_code == "b09"].split) == {"val"}
    assert after.groupby("bin_code").split.nunique().max() == 1


def test_since_exports_only_later_audits(shop, tmp_path):
    db, store = shop
    recount(db, store, "b00", 1, seed=0)
    cut = utcnow()
    late = recount(db, store, "b01", 2, seed=1)
    df = manifest(run(db, store, tmp_path / "audits", since=cut).out)
    assert list(df.task_id) == [late]
    assert parse_since("2026-11-30") == datetime(2026, 11, 30, tzinfo=timezone.utc)
    with pytest.raises(BinventoryError, match="--since wants an ISO-8601"):
        parse_since("last tuesday")


def test_a_missing_or_broken_photo_is_skipped_with_a_warning_and_exported_later(shop, tmp_path):
    db, store = shop
    recount(db, store, "b00", 1, seed=0)
    recount(db, store, "b01", 2, seed=1)
    recount(db, store, "b02", 3, seed=2, data=image_bytes(2)[:300])   # truncated
    (store / "b01-1.jpg").unlink()
    out = tmp_path / "audits"
    report = run(db, store, out)
    why = dict(report.skipped)
    assert why.keys() == {"b01-a2", "b02-a3"}
    assert why["b01-a2"].startswith("cannot read b01-1.jpg") and "truncated" in why["b02-a3"]
    assert len(report.skipped) == 2 and "warning: 2 photos skipped" in report.describe()
    assert list(manifest(out).bin_code) == ["b00"]
    (store / "b01-1.jpg").write_bytes(image_bytes(1))
    assert run(db, store, out).added["audit"] == 1
    assert sorted(manifest(out).bin_code) == ["b00", "b01"]


def test_the_export_merges_with_an_abid_manifest_and_loads_for_training(shop, good_dataset, tmp_path, capsys):
    db, store = shop
    for i, code in enumerate(sorted(COUNTS)):
        recount(db, store, code, COUNTS[code], seed=i)
    out = tmp_path / "audits"
    assert main(["data", "from-inventory", "--db", db.engine.url.render_as_string(hide_password=False),
                 "--out", str(out), "--image-dir", str(store)]) == 0
    assert "added 12 audits" in capsys.readouterr().out
    root, _ = good_dataset
    abid = tmp_path / "abid.parquet"
    from binventory.data.manifest import write_manifest
    write_manifest(assign_splits(build_manifest(root, workers=1, progress=False), seed=0), abid, root)
    merged_path = tmp_path / "merged.parquet"
    assert main(["data", "merge", str(abid), str(out / "manifest.parquet"), "--out", str(merged_path)]) == 0
    merged, _ = merge_manifests([abid, out / "manifest.parquet"])
    assert (merged.source == "audit").sum() == 12
    train = BinDataset(merged_path, "train")
    audit_rows = [i for i, name in enumerate(train.image_ids) if "-a" in name]
    assert audit_rows and train.load_array(audit_rows[0]).shape[2] == 3
    assert len(BinDataset(out / "manifest.parquet", "val")) >= 1


def test_refuses_a_folder_holding_another_manifest(shop, good_dataset):
    db, store = shop
    root, _ = good_dataset
    recount(db, store, "b00", 1)
    from binventory.data.manifest import write_manifest
    write_manifest(build_manifest(root, workers=1, progress=False), root / "manifest.parquet", root)
    with pytest.raises(BinventoryError, match="not an inventory export"):
        run(db, store, root)


def test_nothing_to_export_is_an_error_not_an_empty_dataset(shop, tmp_path):
    db, store = shop
    with pytest.raises(BinventoryError, match="nothing to export"):
        run(db, store, tmp_path / "audits")
    assert not (tmp_path / "audits" / "manifest.parquet").exists()


@pytest.mark.parametrize("argv", [["data", "from-inventory"], ["data"]])
def test_help_imports_no_heavy_library(argv):
    probe = ("import sys, contextlib, io\n"
             "from binventory.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
             "    main(sys.argv[1:])\n"
             "print(' '.join(m for m in ('torch', 'numpy', 'pandas', 'sqlalchemy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe, *argv, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.slow
def test_the_export_trains(shop, tmp_path, capsys):
    from tests.training.conftest import TINY

    db, store = shop
    for round_ in range(3):
        for i, code in enumerate(sorted(COUNTS)):
            recount(db, store, code, (COUNTS[code] + round_) % 6, seed=100 * round_ + i)
    out = tmp_path / "audits"
    run(db, store, out, val_fraction=0.3)
    assert main(["train", "--manifest", str(out / "manifest.parquet"), "--output",
                 str(tmp_path / "run"), "--epochs", "1", *TINY]) == 0
    assert (tmp_path / "run" / "model.pt").is_file()
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == str(tmp_path / "run" / "model.pt")


def test_the_same_database_exports_the_same_rows(shop, tmp_path):
    db, store = shop
    for i, code in enumerate(["b00", "b01", "b02", "b03"]):
        recount(db, store, code, COUNTS[code] + 1, seed=i)
    observe(db, store, "b05", decision="confirm", seed=9)
    one = manifest(run(db, store, tmp_path / "one", include_confirmed=True).out)
    two = manifest(run(db, store, tmp_path / "two", include_confirmed=True).out)
    pd.testing.assert_frame_equal(one, two)


def test_a_run_killed_half_way_leaves_the_old_manifest_and_the_rerun_completes(shop, tmp_path, monkeypatch):
    from binventory.inventory import export_layout

    db, store = shop
    recount(db, store, "b00", 1, seed=0)
    out = tmp_path / "audits"
    run(db, store, out)
    data = (out / "manifest.parquet").read_bytes()
    for i, code in enumerate(["b01", "b02", "b03"]):
        recount(db, store, code, 2, seed=10 + i)
    real, calls = export_layout._jpeg, []

    def killed_on_the_third(photo):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(photo)

    monkeypatch.setattr(export_layout, "_jpeg", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run(db, store, out)
    assert (out / "manifest.parquet").read_bytes() == data
    monkeypatch.setattr(export_layout, "_jpeg", real)
    report = run(db, store, out)
    assert report.added["audit"] == 3 and (report.written, report.unchanged) == (1, 2)
    assert sorted(manifest(out).bin_code) == ["b00", "b01", "b02", "b03"]
    assert not [p for p in out.rglob(".*") if p.is_file()]   # no temporary file left behind


def test_photos_reconcile_read_from_a_dataset_folder_export_while_the_store_does_not_exist(shop, tmp_path):
    """reconcile records a dataset photo relative to the store (../abid/bin-images/x.jpg) and never
    makes the store: the photo must still be found through the store's name."""
    db, store = shop
    recount(db, store, "b00", 1, seed=0)
    missing_store = tmp_path / "data" / "observations"
    with db.session() as s:
        obs = s.scalars(select(Observation)).one()
        obs.image_uri = photo_uri(store / "b00-0.jpg", missing_store)
    assert obs.image_uri.startswith("../../")
    report = export(db, tmp_path / "audits", image_dir=missing_store, progress=False)
    assert report.added["audit"] == 1 and not report.skipped
