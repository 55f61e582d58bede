"""On-disk feature/waveform cache (entries are written with :func:`audioclf.files.atomic_write`).

:class:`FeatureCache` is content-addressed: the key hashes the audio file's *bytes* and the settings that
produced the array, so a renamed or copied file still hits and an edited file or a changed setting misses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..files import atomic_write

__all__ = ["FeatureCache", "settings_json"]

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20  # hash files in 1 MiB reads so a long recording is never held in memory
# np.load parses an .npy header with ast.literal_eval, whose AST conversion keeps its recursion depth in
# interpreter-wide state on CPython 3.11: two decoding threads parsing at once can fail with "SystemError: AST
# constructor recursion depth mismatch" (seen in a search's decode pool). Loads of cache entries take turns.
_LOAD_LOCK = threading.Lock()


# --- feature cache ------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    """Settings may hold paths, numpy scalars/arrays and dataclasses (e.g. a FeatureConfig)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise DataError(f"cache settings: cannot encode {type(value).__name__} value {value!r} as JSON")


# What `audioclf augment` (augment.offline) writes beside its copies: its seed, rate and transform chain, read back by
# data.add's made_with check.
AUGMENT_SETTINGS_FILE = "augment_settings.json"


def settings_json(settings: dict[str, Any]) -> str:
    """Canonical JSON (sorted keys, no spaces): equal settings give equal text whatever the dict order."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)


class FeatureCache:
    """Arrays keyed by (audio file contents, settings), stored as ``root/ab/abcdef....npy``.

    Safe to share between processes and threads: entries are written atomically and a racing writer
    only replaces an entry with an identical one. A corrupt or truncated entry is a miss, with a warning.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def key(self, audio_path: str | Path, settings: dict[str, Any]) -> str:
        """sha256 over the file's bytes and :func:`settings_json` of ``settings`` (64 hex chars).

        Raises ``OSError`` (e.g. ``FileNotFoundError``) when the file cannot be read, so loaders can
        report the file as skipped with the OS's reason.
        """
        digest = hashlib.sha256()
        with open(audio_path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        # the settings follow a separator so (file, settings) pairs cannot collide by shifting bytes
        digest.update(b"\0audioclf-settings\0")
        digest.update(settings_json(settings).encode("ascii"))
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives (two-character fan-out keeps folders small)."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise DataError(f"cache key {key!r}: expected 64 lowercase hex characters from FeatureCache.key")
        return self.root / key[:2] / f"{key}.npy"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str, mmap: bool = False) -> np.ndarray | None:
        """The cached array, or None on a miss or an unreadable entry; ``mmap``: memory-mapped, read-only
        (data larger than RAM: only the parts used are read)."""
        path = self.path(key)
        try:
            with _LOAD_LOCK:
                return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            # a torn copy, a disk error or a foreign file: recompute rather than fail the whole run
            warnings.warn(f"{path}: unreadable feature-cache entry treated as a miss ({exc})", stacklevel=2)
            return None

    def put(self, key: str, array: np.ndarray) -> Path:
        """Store ``array`` under ``key`` (atomically; an existing entry is replaced)."""
        path = self.path(key)
        array = np.asarray(array)
        if array.dtype == object:
            raise DataError(f"cache key {key[:12]}…: object arrays cannot be cached; expected a numeric array")
        return atomic_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False))

    def pack(self, keys: dict[str, str]) -> dict[str, np.ndarray]:
        """The float32 entries ``name -> key`` as views of ONE memory-mapped file (``root/packs/``).

        Mapping each entry on its own holds one open file per item (numpy's memmap keeps a descriptor), so a
        100,000-file dataset fails with "Too many open files"; the pack holds one. It is written once per set
        of keys, entry by entry (never more than one entry in memory), with an index of offsets beside it.
        """
        digest = hashlib.sha256("\n".join(f"{n}={k}" for n, k in keys.items()).encode()).hexdigest()[:32]
        data_path = self.root / "packs" / f"{digest}.f32"
        index_path = data_path.with_suffix(".json")
        index = self._read_index(index_path, data_path)
        if index is None:
            index = {}

            def write(tmp: Path) -> None:
                offset = 0
                with open(tmp, "wb") as out:
                    for name, key in keys.items():
                        entry = self.get(key, mmap=True)
                        if entry is None:
                            raise DataError(f"{self.path(key)}: cache entry vanished while packing")
                        out.write(np.ascontiguousarray(entry, dtype=np.float32).tobytes())
                        index[name] = [offset, int(entry.size)]
                        offset += int(entry.size)
                        del entry  # one open entry at a time

            atomic_write(data_path, write)
            atomic_write(index_path, lambda tmp: tmp.write_text(json.dumps(index)))
        mapped = np.memmap(data_path, dtype=np.float32, mode="r") if data_path.stat().st_size else np.zeros(0, np.float32)
        return {name: mapped[start:start + size] for name, (start, size) in index.items()}

    @staticmethod
    def _read_index(index_path: Path, data_path: Path) -> dict[str, list[int]] | None:
        """A pack's index when it and its data file are complete and agree, else None (written again)."""
        try:
            index = json.loads(index_path.read_text())
            size = data_path.stat().st_size
        except (OSError, ValueError):
            return None
        total = sum(n for _, n in index.values()) if isinstance(index, dict) else -1
        return index if total * 4 == size else None

    def clear(self) -> int:
        """Delete every entry (and stray temp files); returns how many entries were removed."""
        removed = 0
        if not self.root.is_dir():
            return removed
        for folder in self.root.iterdir():
            if not (folder.is_dir() and len(folder.name) == 2):
                continue
            for entry in folder.iterdir():
                if entry.suffix == ".npy" and _KEY.match(entry.stem):
                    entry.unlink(missing_ok=True)
                    removed += 1
                elif entry.name.startswith(".") and ".tmp-" in entry.name:  # left by a killed writer
                    entry.unlink(missing_ok=True)
        log.info("cleared %d feature-cache entries under %s", removed, self.root)
        return removed
