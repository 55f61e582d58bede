"""A run's wall time: the estimate from its first timed steps, and ``train.max_minutes``, a hard cap.

The estimate comes from steps that are part of the real training (the first batches of the first epoch), so
no work is spent on it; ``train --dry-run`` times a few steps it then throws away. A validation pass is taken
as a third of a training pass per item (a forward pass against forward and backward, the ratio
:func:`~audioclf.training.inputs.zero_config.plan_epochs` budgets with).

``train.max_minutes`` is checked between batches: the epoch it cuts short is validated and kept like any other,
so a capped run always ends with a scored best checkpoint.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from .loop import train_one_epoch

__all__ = ["Deadline", "FirstSteps", "format_duration", "time_first_steps"]

# The cap's clock and the steps' timer, by name (tests move them instead of waiting).
_clock = time.monotonic
_timer = time.perf_counter

WARMUP_STEPS = 1  # the first step allocates and initialises lazily: not timed when there are later ones
TIMED_STEPS = 5


def format_duration(seconds: float) -> str:
    """``40 s``, ``35 min``, ``2.5 h``: the precision an estimate has."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Deadline:
    """``train.max_minutes`` of this invocation, counted from its start (data preparation included)."""

    def __init__(self, max_minutes: float | None):
        self.max_minutes = max_minutes
        self.start = _clock() if max_minutes is not None else 0.0
        self.stopped: dict[str, Any] | None = None  # where the cap ended training, once it has

    def passed(self) -> bool:
        return self.max_minutes is not None and _clock() - self.start >= self.max_minutes * 60

    def stop(self, epoch: int, epoch_items: int | None, of_items: int) -> None:
        """Record where training ended: during ``epoch`` after ``epoch_items`` items, or (None) after it."""
        self.stopped = {"max_minutes": self.max_minutes, "epoch": epoch, "epoch_items": epoch_items,
                        "of_items": of_items, "minutes": round((_clock() - self.start) / 60, 2)}

    def reason(self) -> str:
        """One line for the console and summary.json's ``stopped``."""
        s = self.stopped or {}
        where = f"after epoch {s['epoch']}" if s.get("epoch_items") is None else \
            f"during epoch {s['epoch']}, after {s['epoch_items']} of its {s['of_items']} items (validated and kept)"
        return f"stopped by train.max_minutes={self.max_minutes:g} {where}"


class FirstSteps:
    """Times the first batches of an epoch and turns them into one estimate line for the epochs to come.

    ``items`` training items per epoch, ``val_items`` validated after each, ``epochs`` still to train."""

    def __init__(self, items: int, val_items: int, epochs: int, resumed: bool = False,
                 max_minutes: float | None = None):
        self.items, self.val_items, self.epochs = items, val_items, epochs
        self.resumed, self.max_minutes = resumed, max_minutes
        self.marks: list[tuple[float, int]] = [(_timer(), 0)]  # (time, items so far)
        self.reported = False

    def record(self, n: int) -> None:
        """A batch of ``n`` items is done."""
        self.marks.append((_timer(), self.marks[-1][1] + n))

    def batch_done(self, n: int) -> str | None:
        """After each batch: the estimate once :data:`TIMED_STEPS` steps after the warm-up are timed."""
        self.record(n)
        if self.reported or len(self.marks) < WARMUP_STEPS + TIMED_STEPS + 1:
            return None
        return self.estimate()

    def estimate(self) -> str | None:
        """The line from what was timed (the warm-up step too when it is all there is); None if nothing."""
        if self.reported or len(self.marks) < 2:
            return None
        first = WARMUP_STEPS if len(self.marks) > WARMUP_STEPS + 1 else 0
        (t0, n0), (t1, n1) = self.marks[first], self.marks[-1]
        self.reported = True
        per_item = (t1 - t0) / max(n1 - n0, 1)
        return self.line(per_item * (self.items + self.val_items / 3))

    def epoch_done(self, seconds: float) -> str | None:
        """At the end of the epoch, if its batches were too few to report earlier: its measured time."""
        if self.reported:
            return None
        self.reported = True
        return self.line(seconds)

    def line(self, epoch_seconds: float) -> str:
        epochs = f"{self.epochs} {'more ' if self.resumed else ''}epoch{'s' if self.epochs != 1 else ''}"
        total, each = format_duration(epoch_seconds * self.epochs), format_duration(epoch_seconds)
        text = f"≈ {total} on this machine ({epochs} × ~{each})"
        if self.max_minutes is not None and epoch_seconds * self.epochs > self.max_minutes * 60:
            text += f"; train.max_minutes={self.max_minutes:g} ends it sooner"
        return text


def time_first_steps(model, loader, step, optimizer, device, clock: FirstSteps, **kwargs: Any) -> str | None:
    """``train --dry-run``: run the first few steps only (their weights are thrown away) and estimate."""
    first = itertools.islice(loader, WARMUP_STEPS + TIMED_STEPS)
    train_one_epoch(model, first, step, optimizer, device, progress=clock.record, **kwargs)
    return clock.estimate()
