"""Decoded audio as WebDataset tar shards: written once, streamed by any number of ranks and workers.

A dataset too large for one machine's memory, or read from object storage, trains from shards: tar files of
decoded float32 waveforms, each sample ``<key>.wav.npy`` (the waveform at the set's sample rate) plus
``<key>.json`` (``id``, ``path``, ``labels``, ``split``, ``fold``, ``groups`` and ``ordinal``: the item's
position in its split). Decoding and resampling happen once, when the shards are written; streaming only crops.

A shard set is a folder (or the same files under an http(s) URL)::

    shards.json            # written last: its presence means the set is complete
    train-000000.tar ...   # {split}-{k:06d}.tar, at most max_items items / about max_bytes each
    val-000000.tar ...

Training streams the train shards with :class:`ShardStream`: per epoch the shard list is shuffled the same way on
every rank, shard ``i`` goes to rank ``i % world_size`` and, within a rank, to DataLoader worker
``j % num_workers``, so every item is read once per epoch over all ranks and workers. Item ``ordinal`` is cropped
by :func:`~.dataset.training_clip` from (seed, epoch, ordinal), as :class:`~.dataset.WaveformDataset` crops item
``ordinal`` of the split, so the crops do not depend on how the shards are read. Validation and test splits are small: they are
read whole with :func:`load_split`.

A corrupt shard met while streaming (truncated tar, a bad member) is reported with a warning naming it and the
rest of the epoch goes on; the complete items read from it before the damage are kept (they are intact).
Hostile shards are bounded before anything is allocated: a shard is read as a plain tar (a gzip-compressed one is
decompressed, its output counted), each member's size is checked from its tar header before it is read (a
waveform: ``max_seconds`` at the set's rate; metadata: :data:`MAX_JSON_BYTES`), a shard's bytes against what its
index entry says, a ``.npy`` header's shape and dtype before its array, and the metadata's fields and nesting.
Each such item or shard is a reported skip, as any damage is.
``webdataset`` is an optional dependency (``pip install 'audioclf[shards]'``), imported when first needed.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ..console import track
from ..errors import ConfigError, DataError
from ..files import atomic_write, atomic_write_text, jsonable
from ..ownership import OWNER_FILE, claim_folder
from ..tasks import check_task
from .audio import MAX_SAMPLE_RATE, MAX_SECONDS
from .dataset import training_clip
from .manifest import Item
from .splits import SPLITS

__all__ = ["FORMAT", "VERSION", "INDEX", "ShardStream", "first_items", "load_split", "read_index", "shard_counts",
           "shard_data", "shard_sizes", "shard_urls", "write_shards"]

log = logging.getLogger(__name__)

FORMAT, VERSION = "audioclf-shards", 1
INDEX = "shards.json"
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_-]+-\d{6}\.tar$")  # what an index may name: no folders, no '..'
# What an earlier shard set may leave in its folder: shards, the index, and atomic_write's temp files of either
_OURS = re.compile(r"^(?:(?:train|val|test)-\d{6}\.tar|shards\.json"
                   r"|\.(?:(?:train|val|test)-\d{6}|shards)\.tmp-[0-9a-f]+\.(?:tar|json))$")
MAX_INDEX_BYTES = 16 * 2**20  # read at most this much of a shards.json (checked before parsing)
_INDEX_KEYS = ("task", "classes", "sample_rate", "clip_seconds", "splits", "groups")
_TAR_OVERHEAD = 3 * 512  # per member: a 512-byte header and up to 511 bytes of padding (sizes are estimates)
_MAX_KEY = 80  # USTAR names hold 100 characters without a folder to split at: key + ".wav.npy" must fit
MAX_JSON_BYTES = 64 * 2**10  # an item's metadata member (id, path, labels, groups: a few hundred bytes written)
_MAX_ORDINAL = 2**53  # an item's position in its split (crop hashes take it as an unsigned 64-bit counter)
_NPY_HEADER = 4096  # room for a .npy member's header besides its samples


def _webdataset():
    """The ``webdataset`` module, or a one-line ConfigError saying how to install it."""
    try:
        import webdataset
    except ImportError:
        raise ConfigError("tar shards need webdataset: pip install 'audioclf[shards]'") from None
    return webdataset


# --- writing ------------------------------------------------------------------------------------
def write_shards(prepared, out: str | Path, max_items: int = 1000, max_bytes: int = 512 * 2**20,
                 progress: bool = False, trim_silence: bool | str | None = None) -> dict[str, Any]:
    """Write ``prepared`` (a :class:`~.prepare.PreparedData`) as a shard set in ``out``; returns its index.

    Each shard is written to a temp file and renamed when complete, and ``shards.json`` is written last, so a
    crash leaves no half shard under a final name and no index over an incomplete set. ``out`` may be new, empty
    or an earlier shard set (replaced); a folder holding anything else is refused, so no user file is overwritten.
    ``trim_silence``: how the audio was trimmed when decoded (``data.trim_silence``), recorded in the index so a
    model trained on the shards trims the recordings it is given the same way.
    """
    wds = _webdataset()
    for name, value in (("max_items", max_items), ("max_bytes", max_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"shards {name}={value!r}: expected a positive integer")
    out = Path(out)
    _clear_earlier_set(out)
    manifest = prepared.manifest
    unwritten = Counter(str(item.split) for item in manifest if item.split not in SPLITS)
    if unwritten:
        log.warning("%s: %d items in splits other than train/val/test are not written (%s)", out,
                    sum(unwritten.values()), ", ".join(sorted(unwritten)))
    splits: dict[str, list[dict[str, Any]]] = {}
    total = len(manifest) - sum(unwritten.values())
    done = iter(track(iter(range(total)), total, "writing shards", progress))  # advanced once per item written
    for split in SPLITS:
        items = [item for item in manifest if item.split == split]
        splits[split] = []
        for k, group in enumerate(_plan_shards(items, prepared.waves, max_items, max_bytes)):
            path = out / f"{split}-{k:06d}.tar"
            atomic_write(path, partial(_write_tar, wds, group, prepared.waves, done))
            splits[split].append({"name": path.name, "items": len(group), "bytes": path.stat().st_size})
    for _ in done:  # ends the progress bar
        pass
    index = {"format": FORMAT, "version": VERSION, "task": manifest.task, "classes": list(manifest.classes),
             "sample_rate": int(prepared.sample_rate), "clip_seconds": float(prepared.clip_seconds),
             "splits": splits, "groups": list(manifest.group_names), "trim_silence": trim_silence}
    atomic_write_text(out / INDEX, json.dumps(jsonable(index), indent=1) + "\n")
    return index


def shard_data(cfg, out: str | Path, max_items: int = 1000, progress: bool = False) -> dict[str, Any]:
    """The data of ``cfg.data`` imported, checked, decoded, resampled, trimmed and split
    (:func:`~.prepare.prepare_data`), then written as a shard set in ``out``; returns its index.
    ``audioclf shard`` fills ``cfg`` with training's defaults first (:func:`audioclf.workflows.shard.shard`)."""
    from .prepare import prepare_data

    prepared = prepare_data(cfg, progress=progress)
    if prepared.skipped:
        log.warning("%d file(s) could not be decoded and are not in the shards", len(prepared.skipped))
    return write_shards(prepared, out, max_items=max_items, progress=progress, trim_silence=cfg.data.trim_silence)


def _clear_earlier_set(out: Path) -> None:
    """Make ``out`` an empty folder, removing an earlier shard set; refuse a folder with anything else in it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; shards are written to a new or empty folder")
    claim_folder(out, "shard")  # an earlier shard set's own folder, or a new or empty one
    entries = sorted(entry for entry in out.iterdir() if entry.name != OWNER_FILE)
    # files put there since (by hand) are not deleted either
    foreign = [entry.name for entry in entries if not (_OURS.match(entry.name) and entry.is_file())]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise ConfigError(f"{out}: holds files that are not a shard set ({shown}); write shards to a new or "
                          "empty folder")
    # The index goes first: a crash part-way leaves shards without an index (an incomplete set), never an
    # index naming removed shards.
    (out / INDEX).unlink(missing_ok=True)
    for entry in entries:
        entry.unlink(missing_ok=True)


def _plan_shards(items: list[Item], waves: dict[str, np.ndarray], max_items: int,
                 max_bytes: int) -> list[list[tuple[int, Item]]]:
    """(ordinal, item) groups, one per shard, in split order; sizes estimated without encoding anything, so a
    shard is written in one pass without holding it in memory. An item larger than max_bytes gets its own shard."""
    shards: list[list[tuple[int, Item]]] = []
    current: list[tuple[int, Item]] = []
    size = 0
    for ordinal, item in enumerate(items):
        wave = waves[item.id]
        estimate = int(np.dtype(np.float32).itemsize * np.size(wave)) + 128 + 512 + 2 * _TAR_OVERHEAD
        if current and (len(current) >= max_items or size + estimate > max_bytes):
            shards.append(current)
            current, size = [], 0
        current.append((ordinal, item))
        size += estimate
    if current:
        shards.append(current)
    return shards


def _write_tar(wds, group: list[tuple[int, Item]], waves: dict[str, np.ndarray], done: Iterator[int],
               tmp: Path) -> None:
    """One shard's samples into ``tmp`` (renamed by :func:`~audioclf.files.atomic_write` when complete)."""
    with open(tmp, "wb") as stream:
        # mtime fixed: the same data gives byte-identical shards (TarWriter stamps the current time otherwise)
        writer = wds.TarWriter(stream, mtime=0.0, encoder=False, compress=False)
        for ordinal, item in group:
            writer.write(_sample(ordinal, item, waves[item.id]))
            next(done, None)
        writer.close()  # writes the end-of-archive blocks (the file object stays ours)


def _sample(ordinal: int, item: Item, wave: np.ndarray) -> dict[str, Any]:
    """One WebDataset sample: ``__key__``, ``wav.npy`` (float32 mono) and ``json`` (what an Item needs)."""
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if wave.ndim != 1 or len(wave) == 0:
        raise DataError(f"item {item.id}: expected a non-empty mono waveform, got shape {wave.shape}")
    buffer = io.BytesIO()
    np.save(buffer, wave, allow_pickle=False)
    meta = {"id": item.id, "path": item.path, "labels": list(item.labels), "split": item.split,
            "fold": item.fold, "groups": dict(item.groups), "ordinal": ordinal}
    return {"__key__": shard_key(item.id, ordinal), "wav.npy": buffer.getvalue(),
            "json": json.dumps(meta).encode("utf-8")}


def shard_key(item_id: str, ordinal: int) -> str:
    """A tar-safe, unique sample key: the ordinal (unique within a split) then the id with every character but
    ``[A-Za-z0-9_-]`` replaced by ``_``. WebDataset splits member names at the first '.', and treats names
    starting with ``__`` as metadata, so neither may appear; the ordinal comes first and the id is shortened to
    keep the tar name within USTAR's 100 characters."""
    return f"{ordinal:07d}-" + re.sub(r"[^A-Za-z0-9_-]", "_", item_id)[:_MAX_KEY - 8]


# --- the index ----------------------------------------------------------------------------------
def _is_url(location: str) -> bool:
    return str(location).startswith(("http://", "https://"))


def read_index(location: str | Path) -> dict[str, Any]:
    """The checked ``shards.json`` of a shard set (a folder, the json file itself, or an http(s) URL of the
    folder), with ``"root"`` added: the folder (absolute) or the URL the shard names are relative to."""
    location = str(location)
    if _is_url(location):
        root = location.rstrip("/")
        root = root[: -len(INDEX) - 1] if root.endswith("/" + INDEX) else root
        where = f"{root}/{INDEX}"
        try:
            with urllib.request.urlopen(where, timeout=60) as response:
                text = response.read(MAX_INDEX_BYTES + 1).decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise DataError(f"{where}: cannot read the shard index (HTTP {exc.code} {exc.reason})") from None
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(f"{where}: cannot read the shard index ({reason})") from None
    else:
        path = Path(location).expanduser()
        path = path / INDEX if path.is_dir() else path
        where = str(path)
        if not path.is_file():
            raise DataError(f"{where}: no shard index here; a shard set is a folder with {INDEX} and its tar files")
        try:
            with open(path, "rb") as stream:
                text = stream.read(MAX_INDEX_BYTES + 1).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{where}: cannot read the shard index ({getattr(exc, 'strerror', None) or exc})") from None
        root = str(path.parent.resolve())
        # webdataset opens local shards through urlparse: '#' or '?' in a path would cut it short
        if urlparse(root).path != root or urlparse(root).scheme:
            raise DataError(f"{where}: webdataset cannot open shards under a path holding '#', '?' or ':'; move "
                            "the folder")
    if len(text) > MAX_INDEX_BYTES:  # an index lists shards, not items: a few KB per thousand shards
        raise DataError(f"{where}: over {MAX_INDEX_BYTES // 2**20} MB, not a shard index")
    try:
        index = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{where}: not valid JSON ({str(exc).splitlines()[0]})") from None
    _check_index(index, where)
    return {**index, "root": root}


def _check_index(index: Any, where: str) -> None:
    """One-line DataError naming ``where`` for anything but a version-1 shard index."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{where}: not an audioclf shard index (expected \"format\": \"{FORMAT}\")")
    if index.get("version") != VERSION:
        raise DataError(f"{where}: shard index version {index.get('version')!r}; this audioclf reads version "
                        f"{VERSION} (rewrite the shards, or upgrade audioclf)")
    missing = [key for key in _INDEX_KEYS if key not in index]
    if missing:
        raise DataError(f"{where}: shard index lacks the key '{missing[0]}'")
    if index["task"] not in ("single_label", "multi_label"):
        raise DataError(f"{where}: task {index['task']!r}: expected single_label or multi_label")
    classes = index["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{where}: classes: expected a non-empty list of names")
    rate, clip = index["sample_rate"], index["clip_seconds"]
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise DataError(f"{where}: sample_rate {rate!r}: expected a positive integer")
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
        raise DataError(f"{where}: clip_seconds {clip!r}: expected a positive number")
    if not isinstance(index["groups"], list):
        raise DataError(f"{where}: groups: expected a list of group column names")
    if not isinstance(index["splits"], dict):
        raise DataError(f"{where}: splits: expected {{split: [shards]}}")
    for split, shards in index["splits"].items():
        if not isinstance(shards, list):
            raise DataError(f"{where}: splits.{split}: expected a list of shards")
        for entry in shards:
            ok = (isinstance(entry, dict) and isinstance(entry.get("name"), str) and _SHARD_NAME.match(entry["name"])
                  and all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool) and entry[k] >= 0
                          for k in ("items", "bytes")))
            if not ok:
                raise DataError(f"{where}: splits.{split}: bad shard entry {entry!r}; expected {{\"name\": "
                                "\"<split>-000000.tar\", \"items\": n, \"bytes\": n}")


def _shards(index: dict[str, Any], split: str) -> list[dict[str, Any]]:
    splits = index["splits"]
    if split not in splits:
        raise DataError(f"{index['root']}/{INDEX}: no split '{split}'; it has {', '.join(splits) or 'none'}")
    return splits[split]


def shard_urls(index: dict[str, Any], split: str) -> list[str]:
    """The split's shards as absolute local paths or URLs, in written order (empty for an empty split)."""
    root = index["root"]
    if _is_url(root):
        return [f"{root}/{entry['name']}" for entry in _shards(index, split)]
    return [str(Path(root) / entry["name"]) for entry in _shards(index, split)]


def shard_counts(index: dict[str, Any], split: str) -> list[int]:
    """Items per shard of the split, in the order of :func:`shard_urls`."""
    return [int(entry["items"]) for entry in _shards(index, split)]


def shard_sizes(index: dict[str, Any], split: str) -> list[int]:
    """Bytes per shard of the split as written (the tar, uncompressed), in the order of :func:`shard_urls`."""
    return [int(entry["bytes"]) for entry in _shards(index, split)]


def _wave_bound(sample_rate: int | None, max_seconds: float | None) -> int:
    """The largest waveform member a shard may hold: ``max_seconds`` (data.max_seconds: the longest recording
    decoded when the shards were written) of float32 at the set's rate."""
    seconds = MAX_SECONDS if max_seconds is None else float(max_seconds)
    return int(seconds * (sample_rate or MAX_SAMPLE_RATE)) * 4 + _NPY_HEADER


# --- reading ------------------------------------------------------------------------------------
class _BadItem(Exception):
    """A sample that cannot be used (missing or undecodable member): reported, then skipped."""


@dataclass
class _Record:
    """A decoded sample."""

    wave: np.ndarray
    meta: dict[str, Any]


@dataclass
class _Pass:
    """Bookkeeping for one pass over shards: which shard is being read (webdataset's exceptions do not always
    name it), what was reported, how many items each shard held. ``report(url, reason)`` may raise."""

    report: Callable[[str, str], None]
    counts: dict[str, int] | None = None
    sizes: dict[str, int] | None = None  # bytes per shard, from the index
    max_wave: int = _wave_bound(None, None)  # bytes a waveform member may have
    current: str | None = None
    opened: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    seen: Counter = field(default_factory=Counter)  # items met per shard, usable or not
    failure: str | None = None

    def track(self, splitter: Callable[[Iterable[dict]], Iterable[dict]] | None):
        """A workersplitter that records each shard as it is handed on. The stages after it are lazy and read one
        shard at a time, so the last shard handed on is the one whose reading failed."""
        def stage(src: Iterable[dict]) -> Iterator[dict]:
            for sample in splitter(src) if splitter is not None else src:
                self.current = sample["url"]
                self.opened.append(self.current)
                yield sample
        return stage

    def handler(self, exn: BaseException) -> bool:
        """webdataset's exception handler: report the shard once (later errors in it are consequences) and go on.

        webdataset appends the URL to ``exn.args`` in some stages only; the shard being read is the fallback."""
        if self.failure is not None:
            # A strict pass failed: webdataset calls the handler again, layer by layer, with the error it raised
            # (its args extended); raise the same clean error each time until it leaves webdataset.
            raise DataError(self.failure)
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a in self.opened), self.current)
        if url not in self.broken:
            self.broken.add(url)
            try:
                self.report(str(url), _reason(exn))
            except DataError as error:
                self.failure = str(error)
                raise DataError(self.failure) from None
        return True

    def decoded(self, samples: Iterable[dict]) -> Iterator[tuple[str, _Record]]:
        """Grouped samples -> (url, record); bad items reported and skipped; a shard that ends with fewer items
        than its index says (a tar cut at a member boundary reads as a clean end) reported at the end."""
        for sample in samples:
            url = sample.get("__url__", self.current)
            if url in self.broken:
                continue  # the incomplete last item of a shard already reported
            self.seen[url] += 1
            try:
                record = _decode(sample)
            except _BadItem as exc:
                self.report(url, f"item {sample.get('__key__')}: {exc}")
                continue
            yield url, record
        for url in self.opened:
            if self.counts is not None and url not in self.broken and self.seen[url] != self.counts.get(url, 0):
                self.broken.add(url)
                self.report(url, f"{self.seen[url]} items read, the index lists {self.counts.get(url, 0)} "
                                 "(truncated shard?)")


def _reason(exn: BaseException) -> str:
    """An exception as one short line (without the stream objects webdataset appends to its args)."""
    first = str(exn.args[0]) if exn.args else ""
    first = first.split(" @ <")[0]  # webdataset appends " @ <the file object>"
    if isinstance(exn, (IOError, OSError)) and "curl" in first and "exit 22" in first:
        first = "HTTP error (curl exit 22)"
    return " ".join(f"{type(exn).__name__}: {first}".split()) if first else type(exn).__name__


def _decode(sample: dict[str, Any]) -> _Record:
    """The waveform and metadata of one sample; anything unusable is a :class:`_BadItem`."""
    for member in ("json", "wav.npy"):
        if member not in sample:
            raise _BadItem(f"missing member {member}")
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadItem(f"json member is not valid JSON ({exc})") from None
    except RecursionError:  # within MAX_JSON_BYTES, nesting can still be thousands deep
        raise _BadItem("json member is nested too deeply") from None
    problem = _meta_problem(meta)
    if problem:
        raise _BadItem(f"json member: {problem}")
    wave = _npy_wave(sample["wav.npy"])
    if not np.isfinite(wave).all():  # would train on NaN: the run would diverge at once, far from the cause
        raise _BadItem("wav.npy holds NaN or infinite samples")
    return _Record(wave, meta)


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with an item's metadata (the fields readers use), or None."""
    if not isinstance(meta, dict):
        return "not an object"
    ordinal = meta.get("ordinal")
    if not (isinstance(meta.get("id"), str) and isinstance(meta.get("labels"), list)
            and isinstance(ordinal, int) and not isinstance(ordinal, bool)):
        return "lacks id, labels or ordinal"
    if not 0 <= ordinal < _MAX_ORDINAL:
        return f"ordinal {ordinal} is outside 0-{_MAX_ORDINAL - 1}"
    if not all(isinstance(label, str) for label in meta["labels"]):
        return "labels must be names (strings)"
    if not isinstance(meta.get("groups") or {}, dict) or not isinstance(meta.get("path", ""), str):
        return "groups must be an object and path a string"
    return None


def _npy_wave(data: bytes) -> np.ndarray:
    """A ``.npy`` member as a 1-D float32 array, its header checked against the member's length before anything
    is allocated (a header may declare any shape: numpy would allocate it, then find the data missing)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)(stream)
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
        raise _BadItem(f"wav.npy member is not a readable .npy array ({exc})") from None
    if dtype != np.float32 or len(shape) != 1 or shape[0] == 0:
        raise _BadItem(f"wav.npy holds {dtype} {shape}; expected a non-empty float32 mono waveform")
    held = (len(data) - stream.tell()) // 4
    if shape[0] != held:
        raise _BadItem(f"wav.npy declares {shape[0]} samples and holds {held}")
    return np.frombuffer(data, np.float32, count=shape[0], offset=stream.tell()).copy()


class _Bounded:
    """A read-only stream that fails once more than ``bound`` bytes have come out of it, after yielding ``head``
    (bytes already read from ``stream`` to look at)."""

    def __init__(self, stream, bound: float, what: str, head: bytes = b""):
        self.stream, self.bound, self.what, self.head, self.count = stream, bound, what, head, 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:  # "everything" is never more than the bound
            size = int(min(self.bound + 1 - self.count, 2**30))
        data, self.head = self.head[:size], self.head[size:]
        if len(data) < size:
            data += self.stream.read(size - len(data))
        self.count += len(data)
        if self.count > self.bound:
            raise DataError(f"{self.what} is over {self.bound:.0f} bytes")
        return data


def _tar_members(sources: Iterable[dict], state: _Pass) -> Iterator[dict]:
    """webdataset's tar expander with bounds: ``{"fname", "data", "__url__"}`` per member, ``{}`` at the end of each
    shard. A gzip-compressed shard is decompressed as a stream whose output is counted against the shard's bound
    (what its index entry says it holds), and every member's size is checked from its tar header before it is
    read, so a 14 MB shard holding a 3 GB member costs a header, not 3 GB."""
    for source in sources:
        url, raw = source["url"], source["stream"]
        try:
            bound = float("inf")
            if state.sizes is not None and url in state.sizes:
                bound = state.sizes[url] + 64 * 2**10  # slack for another writer's end-of-archive padding
            head = raw.read(2)
            stream = _Bounded(raw, float("inf"), url, head)
            if head == b"\x1f\x8b":
                stream = gzip.GzipFile(fileobj=stream, mode="rb")
            tar = tarfile.open(fileobj=_Bounded(stream, bound, "the tar (as its index lists it)"), mode="r|")
            for info in tar:
                # webdataset's rules: regular files only; names like __key__ are metadata, not members
                if not info.isreg() or re.match(r"__[^/]*__($|/)", info.name):
                    continue
                limit = state.max_wave if info.name.endswith(".wav.npy") else MAX_JSON_BYTES
                if info.size > limit:
                    raise DataError(f"member {info.name} is {info.size} bytes; at most {limit} are read")
                yield {"fname": info.name, "data": tar.extractfile(info).read(), "__url__": url}
                tar.members = []  # tarfile keeps every header otherwise
            yield {}
        except Exception as exn:  # reported (naming the shard) by the handler, which says whether to go on
            exn.args = (*exn.args, url)
            if not state.handler(exn):
                break
        finally:
            raw.close()


def _every_nth(src: Iterable[dict], start: int, step: int) -> Iterator[dict]:
    """Shards ``start``, ``start + step`` ... (a rank's or a worker's share)."""
    for i, sample in enumerate(src):
        if i % step == start:
            yield sample


def _open(wds, urls: list[str], state: _Pass, nodesplitter=None, workersplitter=None):
    """A webdataset pipeline over ``urls`` in the order given: the caller shuffles and splits, not webdataset.
    webdataset's stages but the tar reading, which is :func:`_tar_members` (bounded)."""
    stages = [wds.SimpleShardList(urls)] + ([nodesplitter] if nodesplitter is not None else [])
    # No look-ahead between the tracker and the reader: _Pass.track relies on it to know the shard being read.
    return wds.DataPipeline(*stages, state.track(workersplitter),
                            partial(wds.tariterators.url_opener, handler=state.handler),
                            partial(_tar_members, state=state),
                            partial(wds.tariterators.group_by_keys, handler=state.handler))


def _check_readable(urls: list[str]) -> None:
    """webdataset opens http(s) URLs by running curl: say so once rather than failing every shard."""
    if any(_is_url(url) for url in urls) and shutil.which("curl") is None:
        raise ConfigError(f"{urls[0]}: streaming shards over http(s) needs the curl program (webdataset runs it); "
                          "install curl or copy the shards to a local folder")


def _strict(url: str, reason: str) -> None:
    raise DataError(f"{url}: {reason}")


def _records(index: dict[str, Any], split: str, report: Callable[[str, str], None],
             max_seconds: float | None = None) -> Iterator[tuple[str, _Record]]:
    """Every item of a split, in written order."""
    urls = shard_urls(index, split)
    if not urls:  # webdataset's shard list fails on an empty list
        return
    _check_readable(urls)
    state = _Pass(report, counts=dict(zip(urls, shard_counts(index, split))),
                  sizes=dict(zip(urls, shard_sizes(index, split))),
                  max_wave=_wave_bound(int(index["sample_rate"]), max_seconds))
    yield from state.decoded(_open(_webdataset(), urls, state))


def _item(meta: dict[str, Any], url: str) -> Item:
    try:
        return Item(id=meta["id"], path=str(meta.get("path", "")), labels=tuple(meta["labels"]),
                    split=meta.get("split"), fold=meta.get("fold"), groups=dict(meta.get("groups") or {}))
    except (DataError, TypeError, AttributeError, ValueError) as exc:
        raise DataError(f"{url}: item {meta.get('id')}: {exc}") from None


def load_split(index: dict[str, Any], split: str, max_seconds: float | None = None,
               ) -> tuple[list[Item], dict[str, np.ndarray]]:
    """A whole (small: validation, test) split in memory: its items in split order and their waveforms by id.

    Strict: a damaged shard, or a label not in the index's classes, raises a DataError naming the shard, since an
    evaluation on part of a split would report numbers for a different set. ``max_seconds``: the longest item
    (data.max_seconds; default :data:`~.audio.MAX_SECONDS`), bounding what a member may hold.
    """
    known = set(index["classes"])
    rows: list[tuple[int, Item]] = []
    waves: dict[str, np.ndarray] = {}
    for url, record in _records(index, split, _strict, max_seconds):
        item = _item(record.meta, url)
        unknown = [label for label in item.labels if label not in known]
        if unknown:
            raise DataError(f"{url}: item {item.id}: label '{unknown[0]}' is not one of the index's classes")
        if item.id in waves:
            raise DataError(f"{url}: item id '{item.id}' appears twice in split {split}")
        rows.append((int(record.meta["ordinal"]), item))
        waves[item.id] = record.wave
    rows.sort(key=lambda row: row[0])
    return [item for _, item in rows], waves


def first_items(index: dict[str, Any], split: str, n: int, max_seconds: float | None = None) -> list[np.ndarray]:
    """The waveforms of the split's first ``n`` items in written order (e.g. to fit feature statistics), reading
    only the shards they are in. Damaged shards are reported and skipped, as in training."""
    waves: list[np.ndarray] = []
    if n <= 0:
        return waves
    for _, record in _records(index, split, _warn, max_seconds):
        waves.append(record.wave)
        if len(waves) >= n:
            break
    return waves


def _warn(url: str, reason: str) -> None:
    log.warning("skipping shard data: %s: %s", url, reason)


class ShardStream(torch.utils.data.IterableDataset):
    """Fixed-length crops and targets streamed from tar shards, each item once per epoch over ranks x workers.

    Per epoch the shard list is shuffled with a generator seeded from (seed, epoch), the same on every rank;
    shard ``i`` of that order goes to rank ``i % world_size`` and, within the rank, shard ``j`` of its share to
    DataLoader worker ``j % num_workers``. Items are shuffled in a buffer of ``shuffle_buffer`` (seeded from
    seed, epoch, rank and worker). The crop (and waveform augmentation) of an item uses
    (seed, epoch, ordinal) (:func:`~.dataset.training_clip`; augmentation: ``default_rng([seed, epoch, ordinal])``),
    as :class:`~.dataset.WaveformDataset` does for item ``ordinal``.
    Damaged shards and items are reported with a warning naming the shard and skipped; in the main process they
    are also listed in ``problems``. ``set_epoch`` reaches DataLoader workers when they are started per epoch
    (the default ``persistent_workers=False``). There is no ``__len__``: ranks may get different numbers of items
    (:meth:`items_for_rank`).
    """

    def __init__(self, urls: list[str], classes: list[str], task: str, n_samples: int, pad_mode: str = "tile",
                 crop: str = "random", seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_buffer: int = 1000, augment=None, sample_rate: int | None = None,
                 counts: list[int] | None = None, sizes: list[int] | None = None, max_seconds: float | None = None):
        super().__init__()
        _webdataset()  # fail now, not in a DataLoader worker
        check_task(task)
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1 \
                or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank!r} / world_size {world_size!r}: expected 0 <= rank < world_size")
        for name, given in (("counts", counts), ("sizes", sizes)):
            if given is not None and len(given) != len(urls):
                raise ValueError(f"{len(given)} {name} for {len(urls)} shards")
        if augment is not None and sample_rate is None:
            raise ValueError("sample_rate is required with waveform augmentation")
        _check_readable(list(urls))
        self.urls, self.counts = [str(url) for url in urls], None if counts is None else [int(c) for c in counts]
        self.sizes = None if sizes is None else dict(zip(self.urls, (int(size) for size in sizes)))
        self.max_wave = _wave_bound(sample_rate, max_seconds)  # sample_rate unknown: the highest decoded
        self.classes, self.task = list(classes), task
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        self.n_samples, self.pad_mode = int(n_samples), pad_mode
        self.crop = "center" if crop == "windows" else crop  # one item of a "windows" set is its centre clip
        self.seed, self.epoch = int(seed), 0
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = int(shuffle_buffer)
        self.augment, self.sample_rate = augment, sample_rate
        self.problems: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_order(self) -> list[int]:
        """Shard indices in this epoch's order (the same on every rank: seeded from seed and epoch only)."""
        order = list(range(len(self.urls)))
        random.Random(f"audioclf-shards:{self.seed}:{self.epoch}").shuffle(order)  # str seeds: stable hashing
        return order

    def rank_shards(self) -> list[int]:
        """Indices of the shards this rank reads this epoch."""
        return self.epoch_order()[self.rank::self.world_size]

    def items_for_rank(self) -> int:
        """Items this rank reads this epoch (from the index's counts), e.g. to size an epoch's progress or to
        stop all ranks at the smallest share."""
        if self.counts is None:
            raise ValueError("items_for_rank needs the shards' item counts (ShardStream(counts=...))")
        return sum(self.counts[i] for i in self.rank_shards())

    def _report(self, url: str, reason: str) -> None:
        message = f"{url}: {reason}"
        log.warning("skipping damaged shard data: %s", message)
        if torch.utils.data.get_worker_info() is None:  # a worker's copy is thrown away: only main-process ones
            self.problems.append(message)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.urls:
            return
        wds = _webdataset()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = [self.urls[i] for i in self.epoch_order()]
        counts = None if self.counts is None else dict(zip(self.urls, self.counts))
        state = _Pass(self._report, counts=counts, sizes=self.sizes, max_wave=self.max_wave)
        pipeline = _open(wds, order, state, nodesplitter=partial(_every_nth, start=self.rank, step=self.world_size),
                         workersplitter=partial(_every_nth, start=worker, step=workers))
        # Crop before the shuffle buffer: it then holds clips, not whole recordings.
        pipeline = pipeline.compose(partial(self._examples, state=state))
        rng = random.Random(f"audioclf-items:{self.seed}:{self.epoch}:{self.rank}:{worker}")
        if self.shuffle_buffer > 0:
            pipeline = pipeline.compose(wds.filters.shuffle(self.shuffle_buffer, rng=rng))
        yield from pipeline

    def _examples(self, samples: Iterable[dict], state: _Pass) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for url, record in state.decoded(samples):
            target = self._target(record.meta, url)
            if target is None:
                continue
            ordinal = int(record.meta["ordinal"])
            wave = training_clip(record.wave, self.n_samples, self.pad_mode, self.crop, self.seed, self.epoch, ordinal)
            if self.augment is not None:
                rng = np.random.default_rng([self.seed, self.epoch, ordinal])
                wave = self.augment(np.asarray(wave, dtype=np.float32), self.sample_rate, rng)
            yield torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), target

    def _target(self, meta: dict[str, Any], url: str) -> torch.Tensor | None:
        """The item's target in ``classes`` order; None (reported) for a label that is not a class, or a
        single-label task item without exactly one label: skipped rather than trained on a wrong target."""
        labels = [str(label) for label in meta["labels"]]
        unknown = [label for label in labels if label not in self.class_index]
        if unknown or (self.task == "single_label" and len(labels) != 1):
            why = f"label '{unknown[0]}' is not a class" if unknown else f"{len(labels)} labels in a single-label task"
            self._report(url, f"item {meta['id']}: {why}; skipped")
            return None
        if self.task == "single_label":
            return torch.tensor(self.class_index[labels[0]], dtype=torch.int64)
        target = torch.zeros(len(self.classes), dtype=torch.float32)
        target[[self.class_index[label] for label in labels]] = 1.0
        return target
