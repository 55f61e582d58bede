"""Early stopping and best-checkpoint tracking on a monitored validation metric.

The training loop calls ``update(value)`` once per epoch after validation: it returns whether this epoch
is the new best (save the "best" checkpoint) and sets ``should_stop`` once the metric has not improved for
``patience`` epochs in a row (Keras ``EarlyStopping`` semantics: patience 3 stops after the third epoch
without improvement, as Darna Sequeiros (2018) used it on AudioSet). Both state_dict round-trip, so
``--resume`` continues them.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from ..metrics import higher_is_better

__all__ = ["metric_mode", "EarlyStopping", "BestTracker"]


def metric_mode(metric: str) -> str:
    """``"min"`` for losses and errors, ``"max"`` for scores (accuracy, lwlrap, mAP ...), as the metric
    table says (:func:`audioclf.metrics.higher_is_better`). A split prefix is ignored: ``"val/log_loss"``
    -> ``"min"``."""
    return "max" if higher_is_better(metric) else "min"


class EarlyStopping:
    """Track the best value of ``metric``; stop after ``patience`` epochs without improvement.

    ``mode``: "max" or "min" (None: from the metric name, see :func:`metric_mode`). An improvement must
    beat the best by more than ``min_delta``. ``patience=None`` never stops (best tracking only). A NaN
    value never improves, so a diverged run stops by patience instead of being kept as the best.
    """

    def __init__(
        self, metric: str, mode: str | None = None, patience: int | None = None, min_delta: float = 0.0
    ):
        mode = mode if mode is not None else metric_mode(metric)
        if mode not in ("min", "max"):
            raise ConfigError(f"early stopping mode={mode!r} for '{metric}'; expected 'min' or 'max'")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, (int, float))
                                     or int(patience) != patience or patience < 0):
            raise ConfigError(f"train.patience={patience}; expected a non-negative int or null (off)")
        if not min_delta >= 0:
            raise ConfigError(f"train.min_delta={min_delta}; expected >= 0")
        self.metric, self.mode = metric, mode
        self.patience = None if patience is None else int(patience)
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_epoch = 0  # 1-based index of the best update; 0 before any
        self.epochs = 0  # number of updates so far
        self.bad_epochs = 0  # consecutive updates without improvement

    def is_better(self, value: float) -> bool:
        """Whether ``value`` would count as an improvement over the best so far."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float) -> bool:
        """Record this epoch's value; returns True when it is the new best."""
        value = float(value)
        self.epochs += 1
        if self.is_better(value):
            self.best, self.best_epoch, self.bad_epochs = value, self.epochs, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        # An improving epoch never stops (so patience 0 behaves like 1: stop at the first miss, as in Keras).
        return self.patience is not None and self.bad_epochs > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; patience and min_delta stay as configured now (they may be changed
        on resume), the metric and mode must match what the best value was measured with."""
        if (state["metric"], state["mode"]) != (self.metric, self.mode):
            raise ConfigError(
                f"early-stopping state tracks {state['metric']} ({state['mode']}), "
                f"the config monitors {self.metric} ({self.mode})"
            )
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch, self.epochs = int(state["best_epoch"]), int(state["epochs"])
        self.bad_epochs = int(state["bad_epochs"])


class BestTracker(EarlyStopping):
    """Keep-the-best only: ``update(value)`` says when to save the best checkpoint; never stops."""

    def __init__(self, metric: str, mode: str | None = None, min_delta: float = 0.0):
        super().__init__(metric, mode=mode, patience=None, min_delta=min_delta)
