"""How sure a false-confirm rate measured on validation is: the upper confidence bound that
``calibrate`` keeps under the target when it picks t_confirm, and how a policy states it.

The bound is the one-sided Clopper-Pearson (exact binomial) bound on k wrong records confirmed
out of n. The wrong records of one photo share its prediction, so they are not quite independent
draws: the bound is a little optimistic, which is why ``bench/verification.py`` checks the rate
on public-test photos as well.
"""
from __future__ import annotations

import math

CONFIDENCE = 0.95    # of the false-confirm rate's upper bound that t_confirm keeps under target


def fcr_upper_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen as k of n (1.0 when n = 0)."""
    from scipy.stats import beta

    if n <= 0 or k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def allowed_false_confirms(n: int, target_fcr: float, confidence: float | None = CONFIDENCE
                           ) -> int:
    """The most of n wrong records that may be confirmed: -1 when not even 0 meets the target.

    ``confidence=None`` is the point estimate: k / n <= target.
    """
    point = int(math.floor(target_fcr * n + 1e-9))
    if confidence is None:
        return point
    k = point  # the bound lies above k / n, so the answer is at most the point rule's
    while k >= 0 and fcr_upper_bound(k, n, confidence) > target_fcr:
        k -= 1
    return k


def false_confirm_summary(r: dict) -> dict:
    """What a policy's t_confirm rests on: the validation false-confirm rate, its upper bound
    and the number of wrong records behind them (empty when nothing was measured)."""
    if not r:
        return {}
    return {"estimate": r["false_confirm_rate"], "upper_bound": r["false_confirm_upper"],
            "confidence": r["confidence"], "wrong_confirmed": r["wrong_confirmed"],
            "wrong_records": r["wrong"]}


def describe_false_confirms(policy) -> str:
    """One line for people: the rate, its bound and the evidence behind the chosen t_confirm."""
    fc = policy.stats.get("false_confirm") or {}
    if not fc:
        return "false confirms: not measured"
    return (f"false confirms on validation: {fc['estimate']:.2%} ({fc['wrong_confirmed']} of "
            f"{fc['wrong_records']} wrong records); {fc['confidence']:.0%} upper bound "
            f"{fc['upper_bound']:.2%} (target {policy.target_fcr:.2%})")
