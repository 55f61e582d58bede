"""Offline augmentation: write augmented copies of a dataset as audio files plus a manifest.

For experiments that train on "original + augmented" sets fixed on disk (González Poy 2022, DCASE 2022 Task 1:
IR-convolved copies added to training, or used as validation). Every output file is reproducible from
``(seed, item id, variant)`` alone, so a run can be resumed or extended (more variants) and gives the
same files; the manifest records how each file was made:

* ``source_id``  the id of the original item (kept through repeated augmentation), for group splits that
  keep an item and its copies on the same side;
* ``variant``    ``"0"`` for the original, ``"1"..`` for the copies;
* ``augmentation`` compact JSON of the transforms that applied and their parameters
  (``[{"index", "name", "params"}]``, ``"[]"`` for originals) — ``Compose.replay`` re-applies it.

Layout of ``out_dir``: ``audio/<id>.aug<v>.wav`` (+ ``.json`` sidecar with the record),
``augment_settings.json`` (seed, sample rate, the chain), ``manifest.csv``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..data.audio import load_audio, write_audio
from ..data.manifest import Item, Manifest
from ..data.store import AUGMENT_SETTINGS_FILE, settings_json
from ..files import atomic_write_text
from ..ownership import claim_folder
from ..console import track
from ..errors import AudioDecodeError, ConfigError, DataError
from .waveform import Compose, build_waveform_augment

__all__ = ["augment_dataset", "item_rng", "GROUP_COLUMNS"]

log = logging.getLogger(__name__)

GROUP_COLUMNS = ("source_id", "augmentation", "variant")
_SETTINGS = AUGMENT_SETTINGS_FILE
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def item_rng(seed: int, item_id: str, variant: int) -> np.random.Generator:
    """The generator for one output: from the seed, a stable hash of the item id, and the variant.

    Hashing the id (not the row number) keeps each file's augmentation the same when the manifest is
    filtered, reordered or extended.
    """
    key = int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, key, variant])


def _safe_stem(item_id: str) -> str:
    """A relative path from an id: sub-folders kept, odd characters replaced, no '..' or absolute paths."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", part) for part in re.split(r"[\\/]", item_id)
             if part not in ("", ".", "..")]
    return "/".join(parts) or "_"


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix files made with other settings into one folder (resuming must give the same files)."""
    path = out_dir / _SETTINGS
    text = settings_json(settings)
    if path.exists():
        try:
            previous = settings_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read augmentation settings ({exc})") from None
        if previous != text:
            raise DataError(f"{path}: {out_dir} holds files made with other settings (seed, sample rate or "
                            "augmentations); use a new out_dir or delete it")
        return
    atomic_write_text(path, text + "\n")


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "augmentation" in record else None


@dataclasses.dataclass
class _Output:
    variant: int
    audio: Path
    sidecar: Path


def _augment_item(item: Item, outputs: list[_Output], compose: Compose, sample_rate: int | None, seed: int,
                  subtype: str | None) -> tuple[list[dict[str, Any]], int]:
    """Records for each output of ``item`` (made now or read back) and how many clipped."""
    records: dict[int, dict[str, Any]] = {}
    for out in outputs:
        if out.audio.exists():
            record = _read_record(out.sidecar)
            if record is not None:
                records[out.variant] = record
    missing = [out for out in outputs if out.variant not in records]
    clipped = 0
    if missing:
        wave, sr = load_audio(item.path, sample_rate=sample_rate, mono=True)
        for out in missing:
            augmented, applied = compose.call_with_params(wave, sr, item_rng(seed, item.id, out.variant), out.variant)
            if (subtype or "").upper() not in _FLOAT_SUBTYPES and np.abs(augmented).max(initial=0.0) > 1.0:
                clipped += 1  # integer PCM clips at full scale
            write_audio(out.audio, augmented, sr, subtype=subtype)
            record = {"source_id": item.id, "variant": out.variant, "sample_rate": sr,
                      "n_samples": len(augmented), "augmentation": applied}
            # the sidecar comes last: a file without one is redone on resume
            atomic_write_text(out.sidecar, json.dumps(record, sort_keys=True) + "\n")
            records[out.variant] = record
    return [records[out.variant] for out in outputs], clipped


def augment_dataset(
    manifest: Manifest,
    out_dir: str | Path,
    augment: Compose | Sequence[Mapping[str, Any]],
    n_variants: int = 1,
    sample_rate: int | None = None,
    seed: int = 0,
    keep_original: bool = True,
    subtype: str | None = None,
    strict: bool = False,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> Manifest:
    """Write ``n_variants`` augmented copies of every item under ``out_dir`` and return their manifest.

    ``augment``: a :class:`Compose` or specs for :func:`build_waveform_augment`. Audio is decoded to mono
    at ``sample_rate`` (None: each file's own rate), augmented with :func:`item_rng` ``(seed, id, v)``
    and written atomically as WAV (``subtype`` as in ``write_audio``: PCM_16 by default; a warning counts
    clipped files, use ``"FLOAT"`` to keep levels above full scale). Existing outputs are kept (resume).
    Copies inherit labels, split, fold and groups of their source and add the :data:`GROUP_COLUMNS`;
    with ``keep_original`` the original items (paths unchanged, variant "0") come first for each source.
    A source that cannot be decoded is logged and gets no copies (``strict=True``: raise instead).
    The manifest is also written to ``out_dir/manifest.csv``. ``out_dir`` must be new, empty, or an earlier
    ``augment_dataset`` output (continued; ``overwrite=True``: deleted and made afresh), see
    :mod:`audioclf.ownership`.
    """
    compose = augment if isinstance(augment, Compose) else build_waveform_augment(augment)
    compose.refuse_training_set_transforms("offline augmented copies")
    if isinstance(n_variants, bool) or not isinstance(n_variants, int) or n_variants < 1:
        raise ConfigError(f"n_variants: expected an integer >= 1, got {n_variants!r}")
    compose.check_variants(n_variants, "offline augmented copies")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
    if sample_rate is not None and (isinstance(sample_rate, bool) or not isinstance(sample_rate, int)
                                    or sample_rate <= 0):
        raise ConfigError(f"sample_rate: expected a positive integer or None, got {sample_rate!r}")
    out_dir = claim_folder(out_dir, "augment", overwrite, key="out_dir")  # never into a folder of the user's
    _check_settings(out_dir, {"seed": seed, "sample_rate": sample_rate, "subtype": subtype,
                              "augment": compose.to_specs()})

    stems: dict[str, str] = {}
    plans: list[tuple[Item, list[_Output]]] = []
    for item in manifest:
        stem = _safe_stem(item.id)
        if stem in stems:
            raise DataError(f"items '{stems[stem]}' and '{item.id}' map to the same output name '{stem}'")
        stems[stem] = item.id
        outputs = [_Output(v, out_dir / "audio" / f"{stem}.aug{v}.wav", out_dir / "audio" / f"{stem}.aug{v}.json")
                   for v in range(1, n_variants + 1)]
        plans.append((item, outputs))

    def work(plan: tuple[Item, list[_Output]]):
        item, outputs = plan
        try:
            return item, outputs, *_augment_item(item, outputs, compose, sample_rate, seed, subtype), None
        except AudioDecodeError as exc:
            return item, outputs, [], 0, exc

    items: list[Item] = []
    clipped_total = 0
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        for item, outputs, records, clipped, error in track(pool.map(work, plans), len(plans), "augmenting audio", progress):
            source_id = item.groups.get("source_id", item.id)
            if keep_original:
                items.append(dataclasses.replace(
                    item, groups={**item.groups, "source_id": source_id, "augmentation": "[]", "variant": "0"}))
            if error is not None:
                if strict:
                    raise error
                log.warning("no augmented copies of %s: %s", error.path, error.reason)
                continue
            clipped_total += clipped
            for out, record in zip(outputs, records):
                items.append(Item(
                    id=f"{item.id}.aug{out.variant}", path=str(out.audio.resolve()), labels=item.labels,
                    split=item.split, fold=item.fold, duration=record["n_samples"] / record["sample_rate"],
                    groups={**item.groups, "source_id": source_id, "variant": str(out.variant),
                            "augmentation": json.dumps(record["augmentation"], sort_keys=True,
                                                       separators=(",", ":"))},
                ))
    if clipped_total:
        warnings.warn(f"{clipped_total} augmented files exceeded full scale and were clipped by the "
                      f"{subtype or 'PCM_16'} format; pass subtype='FLOAT' to keep them", stacklevel=2)
    result = Manifest(items, classes=manifest.classes, task=manifest.task)
    result.to_csv(out_dir / "manifest.csv")
    return result
