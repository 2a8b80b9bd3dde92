"""Where this process stands in a torchrun launch (rank, world size, local rank, processes on this
machine), read from torchrun's environment variables: one reading for training and for batch
prediction, which may not import each other."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from binventory import BinventoryError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine, which share its cores

    @property
    def enabled(self) -> bool:
        return self.size > 1


def _number(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise BinventoryError(f"{name}={text!r} is not a whole number (torchrun sets it)") from None


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The launch torchrun describes in RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (one
    process when none is set); a clear error for values no launch could have set."""
    environ = os.environ if environ is None else environ
    size = _number(environ, "WORLD_SIZE", 1)
    rank = _number(environ, "RANK", None if size > 1 else 0)
    if rank is None:
        # Every process would take rank 0 and wait forever for the others.
        raise BinventoryError(f"WORLD_SIZE={size} but RANK is not set: launch with torchrun")
    local_rank = _number(environ, "LOCAL_RANK", 0)
    local_size = _number(environ, "LOCAL_WORLD_SIZE", size)
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise BinventoryError(f"inconsistent torchrun variables: RANK={rank}, WORLD_SIZE={size}, "
                              f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_size}")
    return World(rank, size, local_rank, local_size)
