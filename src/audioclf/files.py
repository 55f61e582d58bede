"""Crash-safe file writes, plain-JSON conversion, and the one safe way to read a PyTorch file.

Everything the project writes (checkpoints, manifests, metrics, cache entries, reports) goes through
:func:`atomic_write`: the data lands in a temp file in the *same* folder and is renamed over the target
with ``os.replace``, which is atomic on POSIX and Windows within one filesystem. A crash or Ctrl-C leaves
either the old file or the new one, never half of one (at worst a stray ``.*.tmp*`` file).
"""

from __future__ import annotations

import math
import os
import pickle
import re
import secrets
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError, UnsafeFileError

__all__ = ["CRASH_ENV", "atomic_write", "atomic_write_bytes", "atomic_write_text", "crash_point", "jsonable",
           "load_torch_file"]


# --- crash points -------------------------------------------------------------------------------
# The tests kill the process at chosen moments (``AUDIOCLF_CRASH_AT=EVENT[@N]``: the N-th time EVENT happens,
# default the first) to check that what a crash leaves behind is consistent. Events: ``temp:NAME`` (NAME's temp
# file is written, not yet renamed) and ``write:NAME`` (NAME is in place), for every file written here.
CRASH_ENV = "AUDIOCLF_CRASH_AT"
_crash_counts: dict[str, int] = {}


def crash_point(event: str) -> None:
    """Die at once (SIGKILL: no cleanup, no ``finally``) when ``AUDIOCLF_CRASH_AT`` names this occurrence."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name != event:
        return
    _crash_counts[event] = _crash_counts.get(event, 0) + 1
    if _crash_counts[event] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# --- atomic writes ------------------------------------------------------------------------------
def _temp_path(path: Path) -> Path:
    # same folder (os.replace must not cross filesystems); hidden; keeps the suffix because writers
    # such as np.save and savefig pick or append the format from it
    return path.with_name(f".{path.stem}.tmp-{secrets.token_hex(4)}{path.suffix}")


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write_fn: Callable[[Path], Any]) -> Path:
    """Call ``write_fn(tmp_path)`` to write a temp file next to ``path``, then rename it over ``path``.

    ``write_fn`` receives a path with the same suffix as ``path`` (so ``np.save``, ``torch.save``,
    ``fig.savefig`` and ``Manifest.to_csv``-style writers work unchanged). Parent folders are created.
    If ``write_fn`` raises, the temp file is removed, ``path`` is left as it was and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        write_fn(tmp)
        if not tmp.exists():
            raise DataError(f"{path}: the writer did not create its temp file {tmp.name}")
        with open(tmp, "rb+") as handle:  # flush file data before the rename makes it visible
            os.fsync(handle.fileno())
        crash_point(f"temp:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    crash_point(f"write:{path.name}")
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def spreadsheet_text(cell: str) -> str:
    """A text cell of a CSV meant for spreadsheets, with a leading quote when it starts like a formula (= + - @,
    tab, CR: OWASP's CSV-injection advice), so a label such as ``=HYPERLINK(...)`` is shown, never run. Only
    for such outputs: a manifest must round-trip its labels unchanged."""
    return f"'{cell}" if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; newlines are written as given (no platform translation)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(text.encode(encoding)))


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars and arrays to Python, NaN/inf to null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- reading PyTorch files ----------------------------------------------------------------------
# numpy arrays inside checkpoints (a run's saved random state, PANNs' sampler state) are rebuilt from a dtype
# and raw bytes: allow-listing those constructors lets the tensors-only unpickler read them, and nothing in
# them can name a function to call.
_MULTIARRAY = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2 renamed core to _core
_NUMPY_GLOBALS = [np.ndarray, np.dtype, _MULTIARRAY._reconstruct, _MULTIARRAY.scalar,
                  *(getattr(np.dtypes, name) for name in np.dtypes.__all__)]


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings, containers and numpy arrays.

    A pickle is a program: a file that names any other Python object (a crafted "checkpoint" can name
    ``os.system``) is refused with :class:`UnsafeFileError` naming the objects, before any of it runs.
    There is no full-pickle fallback; re-save such a file as a plain ``state_dict`` where it came from.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # plain pickles: refused below
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = " ".join(str(exc).split())
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint (legacy format, or no PyTorch file at all)
            names = []
        names = names or re.findall(r"GLOBAL ([\w.]+)", message)
        if not names:
            raise pickle.UnpicklingError("not a PyTorch file the tensors-only loader can read") from None
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise UnsafeFileError(f"{path}: refused: it holds Python objects ({shown}) whose loading could run "
                              "code; only tensors, numbers, strings and arrays are loaded") from None
