"""Training: the one trainer (:mod:`.trainer`) over pluggable inputs (:mod:`.inputs`), and its building blocks:
the epoch loop (:mod:`.loop`), losses, optimizers and schedulers, early stopping, evaluation of a split
(:mod:`.evaluate`), seeds and devices (:mod:`.state`)."""

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
