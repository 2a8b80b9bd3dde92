"""reconcile with a head over 0..15 plus "16+": the observations and audit tasks carry counts
past 5, and the overflow class as count 16 (SQLite and PostgreSQL)."""
import pytest
from sqlalchemy import select

from binventory.inventory.models import AuditTask, Observation
from binventory.inventory.policy import Policy
from binventory.inventory.reconcile import reconcile
from binventory.inventory.verify import BlindVerifier
from binventory.model.classes import CountClasses
from binventory.serving.predictor import Predictor
from tests.inventory.helpers import load, make_dataset
from tests.tiny import save_tiny_model

K15 = CountClasses(0, 15, True)
RECORDS = {"bin-twelve": 12, "bin-two": 2, "bin-twenty": 20}


@pytest.fixture(scope="module")
def predictors(tmp_path_factory):
    """Two 17-class models: one that sees 12 items in every photo, one that sees "16+"."""
    folder = tmp_path_factory.mktemp("k15")
    return {seen: Predictor.load(save_tiny_model(folder / f"{seen}.pt", name=f"k15-{seen}",
                                                 classes=K15, favour=seen))
            for seen in (12, 16)}


def judged(db) -> tuple[dict, dict]:
    with db.reader() as s:
        obs = {o.bin.code: (o.predicted_count, o.decision, list(o.probabilities))
               for o in s.scalars(select(Observation))}
        tasks = {t.bin.code: (t.reason, t.predicted_count, t.expected_quantity)
                 for t in s.scalars(select(AuditTask))}
    return obs, tasks


@pytest.mark.parametrize("seen", [12, 16])
def test_counts_past_5_reach_the_observations_and_tasks(db, predictors, tmp_path, seen):
    dataset = make_dataset(tmp_path / "abid", RECORDS)
    load(db, dataset)
    policy = Policy(BlindVerifier(), t_confirm=0.7, t_flag=0.1)
    report = reconcile(db, predictors[seen], policy, dataset, batch_size=3, workers=1,
                       progress=False)
    assert report.observed == 3
    obs, tasks = judged(db)
    names = [str(c) for c in range(16)] + ["16+"]
    assert all(count == seen and probs == names for count, _, probs in obs.values())
    if seen == 12:  # the record of 12 is backed; 2 and 20 are flagged, with what the photo shows
        assert {c: d for c, (_, d, _) in obs.items()} == {
            "bin-twelve": "confirm", "bin-two": "flag", "bin-twenty": "flag"}
        assert tasks == {"bin-two": ("flag", 12, 2), "bin-twenty": ("flag", 12, 20)}
    else:  # "16+" backs a record of 20 and of nothing below 16
        assert {c: d for c, (_, d, _) in obs.items()} == {
            "bin-twelve": "flag", "bin-two": "flag", "bin-twenty": "confirm"}
        assert tasks == {"bin-twelve": ("flag", 16, 12), "bin-two": ("flag", 16, 2)}
