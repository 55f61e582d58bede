"""What ``--resume`` may change, checked before anything is read or written.

A resumed run continues on its own snapshot of the data (``manifest.csv``), model and front-end, so a value
of ``data.*``, ``features.*``, ``model.*``, ``seed`` or ``init_from`` other than the one the run started with
would not be used, yet would be written to ``config.yaml``: it is refused in one line instead. How the rest
goes on (``train.epochs``, ``train.lr``, augmentation ...) may change; the run's config.yaml says so after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import flat_config
from ..errors import ConfigError

__all__ = ["check_resume_changes", "check_resume_epochs"]

FIXED = ("seed", "init_from", "data.", "features.", "model.")
# data.* keys that change where and how the same items are held, not which items are trained on or how they
# are cut: a resumed run may set them.
HANDLING = ("data.cache_dir", "data.memory_gb", "data.device_cache", "data.strict")
PATHS = ("data.path", "data.audio_root", "init_from")  # the same folder, however it is written, is no change


def check_resume_changes(stored: dict[str, Any], given: dict[str, Any], root: Path) -> None:
    """:class:`ConfigError` naming every key of ``given`` (what the caller set now) that would change what the
    run in ``root`` (``stored``: its config.yaml) trains on, with the value it was trained with."""
    before = flat_config(stored)
    changed = []
    for key, value in flat_config(given).items():
        if not key.startswith(FIXED) or key in HANDLING or key not in before and value is None:
            continue
        old = before.get(key)
        if value != old and not (key in PATHS and _same_path(value, old)):
            changed.append(f"{key}={value} (was {old})")
    if changed:
        raise ConfigError(f"--resume: {root} continues on what it started with; {', '.join(changed)} would change "
                          f"that: leave {'them' if len(changed) > 1 else 'it'} out to continue, or train a new run "
                          f"with another --out")


def check_resume_epochs(epochs: int | None, trained: int, root: Path) -> None:
    """A resumed run asking for fewer epochs than it has trained: one line instead of a scheduler's error."""
    if epochs is not None and epochs < trained:
        raise ConfigError(f"--resume: {root} already trained {trained} epochs; train.epochs={epochs} is fewer: "
                          f"set train.epochs above {trained} to continue it (its best checkpoint is kept as it is)")


def _same_path(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):  # a loop of links: not the same as far as we can tell
        return False
