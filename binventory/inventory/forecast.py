"""What a policy's rates among right and among wrong records mean for a store: the shares of
all bins it confirms, flags and sends to review, and the recounts it asks for, where a stated
share of the records is wrong (``calibrate --error-rate``)."""
from __future__ import annotations

ERROR_RATE = 0.2     # share of wrong records assumed when none is stated (--error-rate)


def shares_at(r: dict, error_rate: float) -> dict:
    """Shares of all bins confirmed, flagged and sent to review when ``error_rate`` of their
    records are wrong, from the rates among right and among wrong records (``rates``)."""
    e = error_rate
    confirm = (1 - e) * r["right_confirmed"] + e * r["false_confirm_rate"]
    flag = (1 - e) * r["right_flagged"] + e * r["wrong_flagged"]
    review = max(1.0 - confirm - flag, 0.0)
    return {"error_rate": e, "confirm_share": confirm, "flag_load": flag, "review_load": review,
            "recounts_per_1000": 1000 * (flag + review),
            "false_confirms_per_1000": 1000 * e * r["false_confirm_rate"]}


def describe_forecast(r: dict) -> str:
    """The workload a policy makes, per 1,000 photos of bins at the stated error rate."""
    flagged, review = round(1000 * r["flag_load"]), round(1000 * r["review_load"])
    return (f"workload forecast at {r['error_rate']:.0%} wrong records, per 1,000 photos: "
            f"{flagged + review:,} recounts ({flagged:,} flagged, {review:,} to review), "
            f"{1000 - flagged - review:,} confirmed by photo, of which about "
            f"{r['false_confirms_per_1000']:,.1f} wrong")
