"""The kinds of classification task: the one list every layer checks against."""

from __future__ import annotations

from .errors import ConfigError

__all__ = ["TASKS", "check_task"]

# single_label: exactly one class per item (softmax); multi_label: any number of classes (per-class sigmoid).
TASKS = ("single_label", "multi_label")


def check_task(task: str, what: str = "task") -> str:
    """``task`` if it is one of :data:`TASKS`, else a one-line :class:`ConfigError` naming ``what``."""
    if task not in TASKS:
        raise ConfigError(f"{what} {task!r}: expected one of {', '.join(TASKS)}")
    return task
