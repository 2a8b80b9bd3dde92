"""A tree record verifier saved in a policy scores exactly as the scikit-learn model it came from."""
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from binventory import BinventoryError
from binventory.inventory.policy import Policy
from binventory.inventory.verify import FEATURES, RecordVerifier

NAMES = FEATURES[:6]


def _fitted(rng):
    x = rng.normal(size=(600, len(NAMES)))
    right = (x[:, 0] + 0.5 * x[:, 3] + rng.normal(0, 0.5, 600) > 0).astype(int)
    return x, GradientBoostingClassifier(n_estimators=40, learning_rate=0.1, max_depth=3,
                                         subsample=0.8, random_state=0).fit(x, right)


def _full(x):
    """Rows in FEATURES order, the verifier's input, with the fitted columns first."""
    out = np.zeros((len(x), len(FEATURES)))
    out[:, :len(NAMES)] = x
    return out


def test_policy_round_trip_scores_equal_the_fitted_estimator(tmp_path):
    rng = np.random.default_rng(0)
    x, gb = _fitted(rng)
    verifier = RecordVerifier.from_gradient_boosting(gb, NAMES, prior_logit=0.7)
    loaded = Policy.load(Policy(verifier, 0.9, 0.1).save(tmp_path / "policy.json")).verifier
    # Training rows, new rows, and rows sitting exactly on the trees' thresholds.
    on_threshold = np.repeat(x[:1], 40, axis=0)
    for i, est in enumerate(gb.estimators_):
        tree = est[0].tree_
        inner = tree.feature >= 0
        on_threshold[i, tree.feature[inner][0]] = tree.threshold[inner][0]
    for rows in (x, rng.normal(size=(300, len(NAMES))), on_threshold):
        logit = loaded.logit(_full(rows)) - 0.7
        assert np.allclose(logit, gb.decision_function(rows), rtol=0, atol=1e-9)
        assert np.allclose(1 / (1 + np.exp(-logit)), gb.predict_proba(rows)[:, 1], rtol=0, atol=1e-12)


def test_fit_goes_through_the_public_reader():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, len(FEATURES)))
    right = (x[:, 0] > 0).astype(int)
    verifier = RecordVerifier.fit(x, right, feature_names=NAMES, error_rate=0.2)
    assert verifier.model == "trees" and verifier.feature_names == NAMES
    scores = 1 / (1 + np.exp(-verifier.logit(x)))
    assert ((scores > 0.5) == right.astype(bool)).mean() > 0.9


def test_a_multiclass_estimator_is_refused():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 2))
    gb = GradientBoostingClassifier(n_estimators=3).fit(x, np.arange(90) % 3)
    with pytest.raises(BinventoryError, match="binary"):
        RecordVerifier.from_gradient_boosting(gb, FEATURES[:2])
