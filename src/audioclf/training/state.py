"""Reproducibility and devices: one seed for every generator, the random state a resumed run restores, and
the one place ``train.device`` / ``device=`` strings become a :class:`torch.device`."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["seed_everything", "rng_state", "set_rng_state", "resolve_device", "use_amp"]


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (CPU runs with the same seed give the same metrics)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global random state (stored in ``last.pt``: a resumed run continues the same random stream)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a one-line error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def use_amp(setting: bool | None, device: torch.device) -> bool:
    """Mixed precision: as set, else on for CUDA (``train.amp: null``)."""
    return setting if setting is not None else device.type == "cuda"
