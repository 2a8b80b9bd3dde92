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

    def index_of(self, count: int) -> int:
        """The class of one count, or -1 when none holds it (below min_count, or above
        max_count without an overflow class). Unlike ``to_class`` (training targets), a count
        is never moved into a class that stands for another count."""
        count = int(count)
        if count < self.min_count:
            return -1
        if count <= self.max_count:
            return count - self.min_count
        return self.num_classes - 1 if self.overflow else -1

    @classmethod
    def from_names(cls, names: list[str]) -> "CountClasses":
        """The classes whose ``names`` these are (a stored prediction's probability keys)."""
        names = [str(n) for n in names]
        overflow = bool(names) and names[-1].endswith("+")
        exact = names[:-1] if overflow else names
        try:
            counts = [int(n) for n in exact]
            found = cls(counts[0], counts[-1], overflow) if counts else None
        except (ValueError, IndexError):
            found = None
        if found is None or found.names != names:
            raise ValueError(f"not the names of count classes: {names}")
        return found

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
