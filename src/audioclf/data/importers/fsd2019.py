"""Freesound Audio Tagging 2019 (FSDKaggle2019; DCASE 2019 Task 2, Fonseca et al. 2019): 80-class multi-label tagging.

Two layouts are recognised under ``root``:

Kaggle competition download (``kaggle competitions download -c freesound-audio-tagging-2019``)::

    train_curated.csv   fname,labels   (labels: comma-separated, quoted when several)
    train_noisy.csv     fname,labels
    sample_submission.csv   fname,<80 class columns, alphabetical>   (the test clips)
    train_curated/*.wav  train_noisy/*.wav  test/*.wav

Zenodo release (https://zenodo.org/records/3612637), which adds the test labels::

    FSDKaggle2019.meta/{train_curated,train_noisy,test}_post_competition.csv
    FSDKaggle2019.audio_train_curated/  FSDKaggle2019.audio_train_noisy/  FSDKaggle2019.audio_test/

Items get the group column ``source`` (curated / noisy / test) and ids ``<source>/<file stem>``. The class
list is the header of ``sample_submission.csv`` when present (so outputs line up with a submission),
otherwise the sorted labels of the train CSVs.

Splits (as in a reference FSD2019 solution): validation comes from the curated clips only, 80/20 by
iterative multi-label stratification; noisy clips always train; test clips (``include_test``) are "test". See
:func:`fsd2019_splits`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ...errors import ConfigError, DataError
from ..manifest import Item, Manifest
from ..splits import iterative_stratified_split, random_split
from . import register_importer
from .csv import folder_listing, read_table, table_records

_QUOTE_HINT = " (quote a labels cell that holds commas)"

log = logging.getLogger(__name__)

SUBSETS = ("curated", "noisy", "both")
# From the Zenodo README: five curated clips carry a wrong label (a renaming bug) and one has no signal.
KNOWN_BAD_CURATED = ("f76181c4.wav", "77b925c2.wav", "6a1f682a.wav", "c7db12aa.wav", "7752cc8a.wav",
                     "1d44b0bd.wav")


@dataclass(frozen=True)
class _Part:
    """One labelled table of the dataset and the folder its audio is in."""

    source: str  # curated | noisy | test
    table: Path
    audio_dir: Path


def _layout(root: Path) -> dict[str, _Part]:
    """The parts present under ``root`` (Kaggle or Zenodo naming); DataError when neither is found."""
    if (root / "train_curated.csv").is_file() or (root / "sample_submission.csv").is_file():
        return {
            "curated": _Part("curated", root / "train_curated.csv", root / "train_curated"),
            "noisy": _Part("noisy", root / "train_noisy.csv", root / "train_noisy"),
            "test": _Part("test", root / "sample_submission.csv", root / "test"),
        }
    meta = root / "FSDKaggle2019.meta"
    if meta.is_dir():
        return {
            source: _Part(source, meta / f"{name}_post_competition.csv", root / f"FSDKaggle2019.audio_{name}")
            for source, name in (("curated", "train_curated"), ("noisy", "train_noisy"), ("test", "test"))
        }
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; expected the FSDKaggle2019 folder with train_curated.csv")
    raise DataError(f"{root}: no train_curated.csv, sample_submission.csv or FSDKaggle2019.meta/; expected the "
                    "Kaggle 'freesound-audio-tagging-2019' download or the Zenodo FSDKaggle2019 release")


@register_importer("fsd2019")
def import_fsd2019(root: str | Path, subset: str = "curated", include_test: bool = False,
                   val_fraction: float | None = 0.2, noisy_val_fraction: float = 0.0, seed: int = 0,
                   drop_known_bad: bool = False) -> Manifest:
    """FSDKaggle2019 clips as a multi-label Manifest with group column ``source``.

    ``subset``: "curated", "noisy" or "both" train clips. ``include_test`` adds the test clips with split
    "test": labelled in the Zenodo layout, unlabelled (rows of ``sample_submission.csv``) in the Kaggle
    one. ``val_fraction`` / ``noisy_val_fraction`` / ``seed`` go to :func:`fsd2019_splits`;
    ``val_fraction=None`` leaves the train clips without a split (then ``include_test`` must be off, since a
    manifest is split everywhere or nowhere). ``drop_known_bad`` leaves out the six curated clips the
    dataset authors list as mislabelled or silent (:data:`KNOWN_BAD_CURATED`).
    Errors (missing file, unknown label, malformed row) name the CSV and its 1-based line.
    """
    if subset not in SUBSETS:
        raise ConfigError(f"fsd2019 subset '{subset}' is not one of {', '.join(SUBSETS)}")
    if val_fraction is None and include_test:
        raise ConfigError("fsd2019: include_test needs val_fraction (a number), so every item gets a split")
    root = Path(root)
    parts = _layout(root)
    classes = _classes(root, parts)

    items: list[Item] = []
    for source in ("curated", "noisy") if subset == "both" else (subset,):
        skip = KNOWN_BAD_CURATED if drop_known_bad and source == "curated" else ()
        items += _read_part(parts[source], classes, labelled=True, skip=skip)
    if include_test:
        test = parts["test"]
        labelled = test.table.name != "sample_submission.csv"  # Kaggle kept the test labels private
        items += [replace(item, split="test") for item in _read_part(test, classes, labelled, skip=())]
    manifest = Manifest(items, classes=classes, task="multi_label")
    if val_fraction is None:
        return manifest
    return fsd2019_splits(manifest, val_fraction=val_fraction, noisy_val_fraction=noisy_val_fraction, seed=seed)


def fsd2019_splits(manifest: Manifest, val_fraction: float = 0.2, noisy_val_fraction: float = 0.0,
                   seed: int = 0) -> Manifest:
    """Train/val splits for FSD2019 (a reference solution's recipe): val from curated clips only.

    Curated clips: ``val_fraction`` to "val" by iterative multi-label stratification, the rest "train".
    Noisy clips: "train", or ``noisy_val_fraction`` of them to "val" at random (the reference's plain 80/20 for
    monitoring noisy pre-training). Items already in "test" stay there. Needs the ``source`` group column.
    """
    for name, value in (("val_fraction", val_fraction), ("noisy_val_fraction", noisy_val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"fsd2019 {name} {value}: expected a number in [0, 1)")
    sources = [item.groups.get("source") for item in manifest]
    splits: list[str | None] = [item.split if item.split == "test" else None for item in manifest]
    curated = [i for i, (s, sp) in enumerate(zip(sources, splits)) if s == "curated" and sp is None]
    noisy = [i for i, (s, sp) in enumerate(zip(sources, splits)) if s == "noisy" and sp is None]
    if curated:
        matrix = manifest.label_matrix()[curated]
        cut = iterative_stratified_split(matrix, (1.0 - val_fraction, val_fraction, 0.0), seed)
        for i, split in zip(curated, cut.tolist()):
            splits[i] = split
    if noisy:
        cut = random_split(len(noisy), (1.0 - noisy_val_fraction, noisy_val_fraction, 0.0), seed)
        for i, split in zip(noisy, cut.tolist()):
            splits[i] = split
    missing = [item for item, split in zip(manifest, splits) if split is None]
    if missing:
        raise DataError(f"item {missing[0].id}: group 'source' is '{missing[0].groups.get('source', '')}'; "
                        "fsd2019_splits expects curated, noisy or a test item")
    return manifest.with_splits(splits)


# --- helpers ------------------------------------------------------------------------------------
def _classes(root: Path, parts: dict[str, _Part]) -> list[str]:
    """Class columns of sample_submission.csv, else the sorted labels of the train CSVs present."""
    sample = root / "sample_submission.csv"
    if sample.is_file():
        header, _ = read_table(sample)
        if not header or header[0].lower() != "fname" or len(header) < 2:
            raise DataError(f"{sample}: line 1: expected a header 'fname,<class>,<class>...', "
                            f"got '{','.join(header[:3])}...'")
        return header[1:]
    labels: set[str] = set()
    for source in ("curated", "noisy"):
        if parts[source].table.is_file():
            for _, cells in table_records(parts[source].table, ("fname", "labels"), _QUOTE_HINT):
                labels.update(_split_labels(cells["labels"]))
    if not labels:
        raise DataError(f"{root}: no sample_submission.csv and no labelled train CSV to take the classes from")
    return sorted(labels)


def _read_part(part: _Part, classes: Sequence[str], labelled: bool, skip: Sequence[str]) -> list[Item]:
    """Items of one table; every file must exist in the part's audio folder."""
    if not part.table.is_file():
        raise DataError(f"{part.table}: file not found; needed for the FSD2019 {part.source} clips")
    present = folder_listing(part.audio_dir)
    known = set(classes)
    items, first_line = [], {}
    required = ("fname", "labels") if labelled else ("fname",)
    for line, cells in table_records(part.table, required, _QUOTE_HINT):
        where = f"{part.table}: line {line}"
        fname = cells["fname"]
        if not fname:
            raise DataError(f"{where}: empty 'fname' cell; expected a file name like 0006ae4e.wav")
        if fname in first_line:
            raise DataError(f"{where}: file '{fname}' already listed on line {first_line[fname]}")
        first_line[fname] = line
        if fname in skip:
            continue
        labels = _split_labels(cells["labels"]) if labelled else ()
        if labelled and not labels:
            raise DataError(f"{where}: empty 'labels' cell; expected one or more of the {len(classes)} classes")
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise DataError(f"{where}: unknown label '{unknown[0]}'; expected one of the {len(classes)} classes")
        if fname not in present:
            raise DataError(f"{where}: audio file '{fname}' not found in {part.audio_dir}")
        items.append(Item(id=f"{part.source}/{Path(fname).stem}", path=os.path.abspath(part.audio_dir / fname),
                          labels=labels, groups={"source": part.source}))
    if skip:
        log.info("%s: left out %d known-bad clip(s)", part.table, len(set(skip) & set(first_line)))
    return items


def _split_labels(cell: str) -> tuple[str, ...]:
    """'Bark,Walk_and_footsteps' -> ('Bark', 'Walk_and_footsteps'), duplicates dropped."""
    return tuple(dict.fromkeys(label.strip() for label in cell.split(",") if label.strip()))
