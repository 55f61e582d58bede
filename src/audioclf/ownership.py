"""Which folders are audioclf's: the one rule for every folder audioclf writes into or deletes.

A folder audioclf makes for an output (a run, a search, cross-validation, staged runs, a sweep, augmented
copies, synthetic mixtures, a shard set) holds ``.audioclf-owner``: JSON with the kind of output, a random id
and when it was made, written when audioclf creates the folder or finds it empty. Only that file, in the folder
itself, makes a folder audioclf's: never a ``config.yaml`` or ``summary.json`` in it or in a folder inside it
(a project folder has those too). So:

* a folder with files but no marker is never written into or deleted, ``--overwrite`` or not;
* ``--overwrite`` deletes a folder only when its own marker names a kind of output the command makes;
* a name taken from a config, a database or metadata that becomes a folder under an output (a stage, a trial)
  must stay inside it (:func:`inside`), checked before anything is written.

Folders written before the marker existed have none: they can still be read, and a run resumed, but
``--overwrite`` refuses them (delete them by hand). Guessing from their contents is what deleted project
folders with a ``config.yaml`` in them; a false refusal costs one ``rm -r``, a false guess costs the user's files.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .files import atomic_write_text

__all__ = ["OWNER_FILE", "claim_folder", "inside", "mark_folder", "owner"]

OWNER_FILE = ".audioclf-owner"


def owner(folder: str | Path) -> dict[str, Any] | None:
    """The folder's own marker (None: no marker, or a file by that name that is not one)."""
    try:
        record = json.loads((Path(folder) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("kind"), str) else None


def mark_folder(folder: str | Path, kind: str) -> Path:
    """Create ``folder`` if needed and mark it as audioclf's ``kind`` output, when it is new or empty (a folder
    that already holds something keeps what it has: marked already, or not ours to mark)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):
        record = {"kind": kind, "id": secrets.token_hex(8),
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_text(folder / OWNER_FILE, json.dumps(record) + "\n")
    return folder


def claim_folder(folder: str | Path, kind: str, overwrite: bool = False, reuse: bool = True,
                 kinds: tuple[str, ...] = (), key: str = "out") -> Path:
    """Make ``folder`` the ``kind`` output of a command, before anything is written in it; returns it.

    New or empty: created and marked. Marked as one of ``kinds`` (default: ``kind`` alone): with ``overwrite``
    deleted and made afresh; else kept for the command to continue (``reuse``) or refused (``reuse=False``: a
    run, which must be told ``--resume``). Anything else is a one-line :class:`ConfigError` naming the folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key}={folder}: is a file, not a folder; choose another folder")
    if folder.is_dir() and any(folder.iterdir()):
        found = owner(folder)
        if found is None:
            names = sorted(entry.name for entry in folder.iterdir())
            shown = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
            raise ConfigError(f"{key}={folder} holds files audioclf did not write ({shown}; no {OWNER_FILE}); it is "
                              "not deleted or written into: choose a new or empty folder (an output of an older "
                              "audioclf has no marker either: delete it by hand)")
        if found["kind"] not in (kinds or (kind,)):
            raise ConfigError(f"{key}={folder} holds an audioclf {found['kind']} output, not a {kind}; it is not "
                              "deleted or written into: choose another folder")
        if not overwrite:
            if reuse:
                return folder
            raise ConfigError(f"{key}={folder} already holds an earlier {found['kind']}; add --resume to continue "
                              "it, --overwrite to replace it, or choose another folder")
        shutil.rmtree(folder)
    return mark_folder(folder, kind)


def inside(root: str | Path, name: Any, key: str) -> Path:
    """``root / name`` for a ``name`` read from a config, a database or metadata, refused (one line naming
    ``key``) unless it stays strictly inside ``root``: no ``..``, no absolute path, no link leading out."""
    path = Path(root) / str(name)
    base = Path(root).resolve()
    if base not in path.resolve().parents:
        raise ConfigError(f"{key}={name!r}: leads outside {root}; it must name a folder inside it")
    return path
