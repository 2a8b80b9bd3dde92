"""How counts map to classes: exact counts min..max plus an optional overflow class "max+1 or more"."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from binventory.data.split import PROTOCOLS


@dataclass(frozen=True)
class CountClasses:
    min_count: int = 0
    max_count: int = 5
    overflow: bool = True

    def __post_init__(self):
        if not 0 <= self.min_count <= self.max_count:
            raise ValueError(f"need 0 <= min_count <= max_count, got {self.min_count}, {self.max_count}")

    @classmethod
    def for_protocol(cls, protocol: str, overflow: bool = True) -> "CountClasses":
        low, high = PROTOCOLS[protocol]
        # "all" has no upper bound; 0-5 exact counts plus "6 or more" is the useful head for it.
        return cls(low, 5 if high is None else high, overflow)

    @property
    def num_classes(self) -> int:
        return self.max_count - self.min_count + 1 + int(self.overflow)

    @property
    def names(self) -> list[str]:
        names = [str(c) for c in range(self.min_count, self.max_count + 1)]
        return names + [f"{self.max_count + 1}+"] if self.overflow else names

    @property
    def counts(self) -> torch.Tensor:
        """The count each class stands for (the overflow class counts as max_count + 1)."""
        return torch.arange(self.min_count, self.min_count + self.num_classes, dtype=torch.float32)

    def to_class(self, counts: torch.Tensor) -> torch.Tensor:
        """Counts to class indices; counts above the range go to overflow (or the top class)."""
        return (counts.clamp(min=self.min_count) - self.min_count).clamp(max=self.num_classes - 1).long()

    def to_count(self, classes: torch.Tensor) -> torch.Tensor:
        return classes + self.min_count

    def exact_mask(self, low: int, high: int) -> torch.Tensor:
        """Classes that are exact counts within [low, high] (to restrict predictions to a protocol)."""
        counts = self.counts
        mask = (counts >= low) & (counts <= high)
        if self.overflow:
            mask[-1] = False
        return mask

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CountClasses":
        return cls(int(d["min_count"]), int(d["max_count"]), bool(d["overflow"]))
