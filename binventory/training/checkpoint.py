"""Training checkpoints: plain dicts, written atomically so a crash never corrupts the last one."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from binventory import BinventoryError
from binventory.files import atomic_write


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BinventoryError(f"no checkpoint to resume from at {path}")
    try:
        # Our own file: it holds optimizer state and RNG tuples, not just tensors.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise BinventoryError(f"checkpoint {path} is unreadable: {e}") from None
