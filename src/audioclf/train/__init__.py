"""Training building blocks: losses, optimizers + schedulers, early stopping (the loop is in ``loop``)."""

from __future__ import annotations

from .callbacks import BestTracker, EarlyStopping, metric_mode
from .losses import build_loss, probabilities
from .optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler, register_optimizer, register_scheduler

__all__ = [
    "BestTracker",
    "EarlyStopping",
    "metric_mode",
    "build_loss",
    "probabilities",
    "OPTIMIZERS",
    "SCHEDULERS",
    "build_optimizer",
    "build_scheduler",
    "register_optimizer",
    "register_scheduler",
]
