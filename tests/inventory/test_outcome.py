"""``binventory inventory summary``: what reconciliation achieved against the dataset's own counts
(the table that ends ``make demo``), per bin by its latest photo, on SQLite and PostgreSQL."""
from __future__ import annotations

import re

from binventory.cli import main
from binventory.data.manifest import build_manifest, write_manifest
from binventory.inventory import audit
from binventory.inventory.importer import import_abid
from binventory.inventory.models import Observation, utcnow
from tests.inventory.helpers import make_dataset

COUNTS = {f"bin{i:03d}": i % 6 for i in range(12)}


def photo(db, code: str, decision: str, n: int = 0) -> None:
    """A photo of ``code`` judged ``decision`` against the bin's record as it stands."""
    with db.session() as s:
        found = audit.get_bin(s, code)
        expected = audit.expected_quantity(s, found.id)
        obs = Observation(bin_id=found.id, image_uri=f"{code}-{n}.jpg", image_sha256=f"{code}{n}".ljust(64, "0"),
                          captured_at=utcnow(), model_version="m", predicted_count=expected,
                          probabilities={}, expected_quantity=expected, decision=decision, score=0.5,
                          created_at=utcnow())
        s.add(obs)
        s.flush()
        if decision != "confirm":
            audit.open_tasks(s, [(found.id, obs.id, audit.Finding(decision, 1.0, expected, expected))])


def row(out: str, label: str) -> tuple[str, ...]:
    line = next(line for line in out.splitlines() if label in line)
    return tuple(re.findall(r"[\d.]+%?", line.split(label, 1)[1]))


def test_summary_scores_the_latest_photo_of_each_bin(db, tmp_path, capsys):
    root = make_dataset(tmp_path / "abid", COUNTS, images=False)
    manifest = tmp_path / "manifest.parquet"
    write_manifest(build_manifest(root, workers=1, progress=False), manifest, root)
    injected = import_abid(db, root, workers=1, progress=False, inject_errors=0.5, seed=0).injected
    wrong = sorted(injected)
    right = sorted(set(COUNTS) - set(injected))
    assert len(wrong) >= 4 and len(right) >= 4
    # Wrong records: two flagged (one was confirmed first, then flagged), one queued, one confirmed.
    photo(db, wrong[0], "confirm")
    photo(db, wrong[0], "flag", 1)
    photo(db, wrong[1], "flag")
    photo(db, wrong[2], "review")
    photo(db, wrong[3], "confirm")
    # Right records: three confirmed (one of them twice), one sent to review.
    for code in right[:3]:
        photo(db, code, "confirm")
    photo(db, right[0], "confirm", 1)
    photo(db, right[3], "review")
    with db.session() as s:  # a recount done: one task fewer to do
        task = audit.list_tasks(s, status="open", bin_code=wrong[1])[0][0]
        audit.resolve(s, task.id, counted_quantity=COUNTS[wrong[1]], actor="ana", reason_code="miscount")

    url = db.engine.url.render_as_string(hide_password=False)
    assert main(["inventory", "summary", "--db", url, "--truth", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert row(out, "wrong records photographed") == ("4",)
    assert row(out, "flagged (clear discrepancy)") == ("2", "50.0%")
    assert row(out, "queued for review") == ("1", "25.0%")
    assert row(out, "wrongly confirmed") == ("1", "25.0%")
    assert row(out, "right records photographed") == ("4",)
    assert row(out, "auto-confirmed") == ("3", "75.0%")
    assert row(out, "sent to a person anyway") == ("1", "25.0%")
    assert row(out, "recounts needed (audit tasks to do)") == ("3",)
    assert "…" not in out  # no column cut, though captured output is no terminal


def test_summary_without_photographed_bins_says_so(db, tmp_path, capsys):
    root = make_dataset(tmp_path / "abid", COUNTS, images=False)
    write_manifest(build_manifest(root, workers=1, progress=False), root / "manifest.parquet", root)
    import_abid(db, root, workers=1, progress=False)
    url = db.engine.url.render_as_string(hide_password=False)
    assert main(["inventory", "summary", "--db", url, "--truth", str(root)]) == 2
    assert "nothing to score" in capsys.readouterr().err
