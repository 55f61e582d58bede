"""Mixtures of real recordings: a multi-label set made from a single-label one, and the shared machinery of
the mixture generators (per-item random streams, resumable writing, the generation record).

Every generator here follows the same rules, so a 100,000-file set survives a crash or a Ctrl-C:

* mixture ``i`` is drawn from its own generator seeded by ``(seed, ..., i)``: it does not depend on how many
  mixtures are made or which ones already exist, so the same seed gives byte-identical files and a rerun
  continues where the last one stopped;
* each WAV is written atomically (temp name, then rename), so a file under its final name is complete and
  is skipped on a rerun (stray temp files of a killed run are removed);
* the metadata CSV is rebuilt from the per-item plan and written atomically at the end;
* ``out_dir/.audioclf_synth.json`` records the settings (all but ``n``); rerunning into the same folder with
  other settings is refused instead of mixing two datasets.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ...console import track
from ...errors import ConfigError, DataError
from ...ownership import claim_folder
from ..audio import fix_length, load_audio, trim_silence_by_length, write_audio
from ..manifest import Item, Manifest
from ...files import atomic_write_text

__all__ = [
    "MixtureJob",
    "OnItem",
    "item_rng",
    "source_fingerprint",
    "check_generation_record",
    "write_mixture_files",
    "write_csv",
    "check_count",
    "mixture_samples",
    "make_multilabel_mixtures",
]

RECORD_NAME = ".audioclf_synth.json"
# Called after every mixture with its path and whether it was written now (False: it already existed).
OnItem = Callable[[Path, bool], None]


# --- shared machinery ---------------------------------------------------------------------------
def item_rng(seed: int, *index: int) -> np.random.Generator:
    """A generator for one item, independent of every other item: ``SeedSequence([seed, *index])``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(i) for i in index)]))


@dataclass(frozen=True)
class MixtureJob:
    """One file to produce: where it goes and how to compute its samples (called only when needed)."""

    path: Path
    render: Callable[[], np.ndarray]


def source_fingerprint(rows: Iterable[Sequence[str]]) -> str:
    """sha256 of the sorted rows (e.g. id, label, group values) that define a source set, not its paths, so a
    moved dataset folder still resumes while a different selection of files does not."""
    digest = hashlib.sha256()
    for row in sorted(tuple(str(cell) for cell in row) for row in rows):
        digest.update(json.dumps(row).encode("utf-8"))
    return digest.hexdigest()


def check_generation_record(out_dir: Path, settings: dict[str, Any], first: Sequence[str] = (),
                            older: dict[str, Any] | None = None) -> None:
    """Refuse to continue a generation in ``out_dir`` made with other ``settings``; record them otherwise.
    The refusal names the first changed key, those in ``first`` before the rest (the one a user chose).
    ``older``: what a record written before a key existed meant by its absence."""
    path = Path(out_dir) / RECORD_NAME
    settings = json.loads(json.dumps(settings))  # normalise tuples/ints as they will be read back
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable generation record ({exc}); delete it or use an empty folder") from None
        previous = {**(older or {}), **previous}
        changed = sorted((key for key in previous.keys() | settings.keys() if previous.get(key) != settings.get(key)),
                         key=lambda key: (key not in first, key))
        if changed:
            key = changed[0]
            raise DataError(f"{out_dir}: already holds a set generated with {key}={previous.get(key)!r}, not "
                            f"{settings.get(key)!r}; use an empty folder (or the same settings to resume)")
        return
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _is_complete(path: Path, sample_rate: int, n_samples: int) -> bool:
    """A file under its final name was renamed there complete; checking the header also catches a file
    someone else left there with another length or rate."""
    if not path.is_file():
        return False
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError):
        return False
    return info.samplerate == sample_rate and info.frames == n_samples and info.channels == 1


def _remove_stale_temps(paths: Sequence[Path]) -> None:
    """Delete temp files (``.<stem>.tmp-<random><suffix>``, see ``write_audio``) a killed run left for our files."""
    stems_by_dir: dict[Path, set[str]] = {}
    for path in paths:
        stems_by_dir.setdefault(path.parent, set()).add(path.stem)
    for folder, stems in stems_by_dir.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            name = entry.name
            if name.startswith(".") and ".tmp-" in name and name[1: name.index(".tmp-")] in stems:
                Path(entry.path).unlink(missing_ok=True)


def write_mixture_files(
    jobs: Sequence[MixtureJob],
    sample_rate: int,
    n_samples: int,
    progress: bool = True,
    description: str = "mixtures",
    on_item: OnItem | None = None,
) -> int:
    """Render and write every job whose file is not complete yet; returns how many were written."""
    _remove_stale_temps([job.path for job in jobs])
    written = 0
    for job in track(jobs, len(jobs), description, progress, min_total=1):
        done = _is_complete(job.path, sample_rate, n_samples)
        if not done:
            write_audio(job.path, job.render(), sample_rate)
            written += 1
        if on_item is not None:
            on_item(job.path, not done)
    return written


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV atomically (labels holding commas are quoted by the csv module)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def check_count(n: int, name: str = "n") -> int:
    """``n`` as an int, or ConfigError when it is not a non-negative int (a number of mixtures)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigError(f"{name}={n!r}; expected a non-negative int (number of mixtures)")
    return int(n)


def mixture_samples(seconds: float, sample_rate: int) -> int:
    """The mixture length in samples, after validating ``seconds`` and ``sample_rate``."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ConfigError(f"sample_rate={sample_rate!r}; expected a positive int (Hz)")
    try:
        n_samples = int(round(float(seconds) * sample_rate))
    except (TypeError, ValueError):
        n_samples = 0
    if n_samples < 1:
        raise ConfigError(f"seconds={seconds!r}; expected a positive duration of at least one sample")
    return n_samples


# --- multi-label mixtures -----------------------------------------------------------------------
@dataclass(frozen=True)
class _MultiLabelPlan:
    fname: str
    labels: tuple[str, ...]
    sources: tuple[Item, ...]


def _plan_multilabel(index: int, seed: int, by_class: dict[str, list[Item]], classes: list[str],
                     max_events: int) -> _MultiLabelPlan:
    rng = item_rng(seed, 0, index)  # stream 0: the plan; stream 1: the audio (see _render_multilabel)
    k = int(rng.integers(1, max_events + 1))
    first = index % len(classes)  # cycling the first class puts every class in >= n // C mixtures
    others = [c for c in range(len(classes)) if c != first]
    chosen = sorted([first, *rng.choice(others, size=k - 1, replace=False).tolist()])
    sources = tuple(by_class[classes[c]][int(rng.integers(len(by_class[classes[c]])))] for c in chosen)
    return _MultiLabelPlan(f"mix_{index:06d}.wav", tuple(classes[c] for c in chosen), sources)


PLACEMENTS = ("tile", "events")


def _placed_sources(plan: _MultiLabelPlan, index: int, seed: int, sample_rate: int, n_samples: int,
                    placement: str) -> list[tuple[int, np.ndarray]]:
    """Each source of a mixture as ``(first sample, wave)``. ``tile``: filling the whole mixture. ``events``:
    its leading and trailing silence cut, at most the mixture's length, at a random start (silence around it)."""
    rng = item_rng(seed, 1, index)
    placed = []
    for item in plan.sources:
        wave, _ = load_audio(item.path, sample_rate)
        if placement == "tile":
            # FSD2019 recipe: short clips are tiled, long ones give their loudest of 3 random windows, so a
            # short event in a long clip is not cropped away.
            placed.append((0, fix_length(wave, n_samples, mode="tile", crop="max_energy", k=3, rng=rng)))
            continue
        wave = trim_silence_by_length(wave, sample_rate, edges_only=True)  # the label is where the sound is
        if len(wave) > n_samples:
            wave = fix_length(wave, n_samples, mode="pad", crop="max_energy", k=3, rng=rng)
        placed.append((int(rng.integers(0, n_samples - len(wave) + 1)), wave))
    return placed


def _render_multilabel(plan: _MultiLabelPlan, index: int, seed: int, sample_rate: int, n_samples: int,
                       placement: str = "tile") -> np.ndarray:
    mixture = np.zeros(n_samples, dtype=np.float64)
    placed = _placed_sources(plan, index, seed, sample_rate, n_samples, placement)
    for start, wave in placed:
        mixture[start : start + len(wave)] += wave
    return (mixture / len(placed)).astype(np.float32)


def _strong_rows(plan: _MultiLabelPlan, index: int, seed: int, sample_rate: int, n_samples: int,
                 placement: str) -> list[tuple]:
    """``filename,onset,offset,event_label`` of a mixture's sources (a tiled source spans the whole mixture)."""
    if placement == "tile":
        return [(plan.fname, "0.000", f"{n_samples / sample_rate:.3f}", label) for label in plan.labels]
    placed = _placed_sources(plan, index, seed, sample_rate, n_samples, placement)
    return [(plan.fname, f"{start / sample_rate:.3f}", f"{(start + len(wave)) / sample_rate:.3f}", label)
            for (start, wave), label in zip(placed, plan.labels)]


def make_multilabel_mixtures(
    source: Manifest,
    out_dir: str | os.PathLike,
    n: int,
    max_events: int = 3,
    seed: int = 0,
    seconds: float = 2.0,
    sample_rate: int = 16000,
    progress: bool = True,
    on_item: OnItem | None = None,
    overwrite: bool = False,
    placement: str = "tile",
) -> Path:
    """Turn a single-label set into a multi-label one: ``n`` mixtures of 1..``max_events`` clips of distinct
    classes, averaged (sum / k), each ``seconds`` long at ``sample_rate``.

    Mixture ``i`` holds class ``i mod C`` (so every class appears in at least ``n // C`` mixtures) plus
    ``k - 1`` other random classes, ``k`` uniform in 1..``max_events``, one random clip of each. Writes
    ``out_dir/audio/mix_<i:06d>.wav`` and returns ``out_dir/labels.csv`` with columns ``fname,labels,sources``
    (labels comma-joined in source class order, FSD2019 style; sources = the mixed item ids joined by ``|``),
    which :func:`~audioclf.data.importers.load_manifest` reads as a multi-label manifest. Deterministic from
    ``seed`` and resumable (see the module docstring). To keep splits apart, call it once per split with
    ``source.subset(split)`` and a folder per split. ``out_dir`` must be new, empty or an earlier set of
    this function (``overwrite``: deleted and made afresh), see :mod:`audioclf.ownership`.

    ``placement``: ``tile`` (every source fills the mixture, as above) or ``events`` (each source, its silent
    edges cut, sits at a random time with silence around it: sound events to detect). Either way
    ``out_dir/strong_labels.csv`` says where each source sits: ``filename,onset,offset,event_label`` (DCASE).
    """
    n, n_samples = check_count(n), mixture_samples(seconds, sample_rate)
    if placement not in PLACEMENTS:
        raise ConfigError(f"placement={placement!r}; expected one of {', '.join(PLACEMENTS)}")
    if source.task != "single_label":
        raise DataError(f"make_multilabel_mixtures needs a single-label source; this one is {source.task}")
    by_class: dict[str, list[Item]] = {}
    for item in sorted(source, key=lambda it: it.id):  # id order: independent of the manifest's row order
        by_class.setdefault(item.labels[0], []).append(item)
    classes = [name for name in source.classes if name in by_class]
    if isinstance(max_events, bool) or not isinstance(max_events, int) or not 1 <= max_events <= len(classes):
        raise ConfigError(f"max_events={max_events!r}; expected 1..{len(classes)} (classes with clips in the source)")
    out = claim_folder(out_dir, "synth", overwrite, key="out_dir")  # never into a folder of the user's
    check_generation_record(out, {
        "kind": "multilabel_mixtures", "version": 1, "seed": int(seed), "max_events": max_events,
        "seconds": float(seconds), "sample_rate": int(sample_rate),
        "source": source_fingerprint((item.id, item.labels[0]) for item in source),
        **({} if placement == "tile" else {"placement": placement}),  # tile: the records of earlier versions
    })
    plans = [_plan_multilabel(i, seed, by_class, classes, max_events) for i in range(n)]
    jobs = [MixtureJob(out / "audio" / plan.fname,
                       lambda plan=plan, i=i: _render_multilabel(plan, i, seed, sample_rate, n_samples, placement))
            for i, plan in enumerate(plans)]
    write_mixture_files(jobs, sample_rate, n_samples, progress, "multi-label mixtures", on_item)
    # Placement is drawn again from each mixture's own random stream (the sources decoded again), so a resumed
    # run writes the same labels without keeping the audio of every mixture in memory.
    write_csv(out / "strong_labels.csv", ("filename", "onset", "offset", "event_label"),
              [row for i, plan in enumerate(plans) for row in _strong_rows(plan, i, seed, sample_rate, n_samples,
                                                                             placement)])
    rows = [(plan.fname, ",".join(plan.labels), "|".join(item.id for item in plan.sources)) for plan in plans]
    return write_csv(out / "labels.csv", ("fname", "labels", "sources"), rows)
