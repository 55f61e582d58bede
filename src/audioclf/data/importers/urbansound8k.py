"""UrbanSound8K (https://urbansounddataset.weebly.com/urbansound8k.html): 8,732 clips <= 4 s, 10 classes,
10 predefined folds.

Layout of the extracted ``UrbanSound8K.tar.gz``::

    metadata/UrbanSound8K.csv   slice_file_name,fsID,start,end,salience,fold,classID,class
    audio/fold1/100032-3-0-0.wav ... audio/fold10/...   ({fsID}-{classID}-{occurrence}-{slice}.wav)

Items keep ``fold`` (the authors ask for 10-fold cross-validation on these folds: slices of one recording
share a fold, so a random split would leak), the duration ``end - start`` and group columns ``fsID`` (the
source recording) and ``salience`` (foreground / background). The class list is ordered by ``classID``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ...errors import DataError
from ..manifest import Item, Manifest
from . import register_importer
from .csv import folder_listing, table_records
from .esc50 import _integer, fold_splits  # same fold-CSV conventions

COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
SALIENCE = {"1": "foreground", "2": "background"}


@register_importer("urbansound8k")
def import_urbansound8k(root: str | Path, test_fold: int | None = None, val_fold: int | None = None) -> Manifest:
    """UrbanSound8K slices as a single-label Manifest with folds 1-10 and groups fsID, salience.

    With ``test_fold`` the splits follow the folds (:func:`~audioclf.data.importers.esc50.fold_splits`).
    """
    root = Path(root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    if not meta.is_file():
        raise DataError(f"{meta}: file not found; expected the UrbanSound8K folder with metadata/UrbanSound8K.csv "
                        "and audio/fold1 ... audio/fold10")
    listings: dict[int, set[str]] = {}
    names: dict[int, str] = {}  # classID -> class
    items, first_line = [], {}
    for line, cells in table_records(meta, COLUMNS):
        where = f"{meta}: line {line}"
        name = cells["slice_file_name"]
        if name in first_line:
            raise DataError(f"{where}: file '{name}' already listed on line {first_line[name]}")
        first_line[name] = line
        fold, class_id = _integer(cells, "fold", where), _integer(cells, "classID", where)
        label = cells["class"]
        if names.setdefault(class_id, label) != label:
            raise DataError(f"{where}: classID {class_id} is '{label}' here but '{names[class_id]}' before")
        if cells["salience"] not in SALIENCE:
            raise DataError(f"{where}: salience '{cells['salience']}' is not 1 (foreground) or 2 (background)")
        folder = root / "audio" / f"fold{fold}"
        if name not in listings.setdefault(fold, folder_listing(folder)):
            raise DataError(f"{where}: audio file '{name}' not found in {folder}")
        items.append(Item(
            id=PurePosixPath(name).stem, path=os.path.abspath(folder / name), labels=(label,), fold=fold,
            groups={"fsID": cells["fsID"], "salience": SALIENCE[cells["salience"]]},
            duration=_duration(cells, where),
        ))
    if not items:
        raise DataError(f"{meta}: no clips listed")
    classes = [names[class_id] for class_id in sorted(names)]
    manifest = Manifest(items, classes=classes, task="single_label")
    return manifest if test_fold is None else fold_splits(manifest, test_fold, val_fold)


def _duration(cells: dict[str, str], where: str) -> float:
    """``end - start`` in seconds, rounded to microseconds (drops float noise like 3.9999999999)."""
    try:
        start, end = float(cells["start"]), float(cells["end"])
    except ValueError:
        raise DataError(f"{where}: start '{cells['start']}' / end '{cells['end']}' are not numbers") from None
    if end <= start:
        raise DataError(f"{where}: end {end} is not after start {start}")
    return round(end - start, 6)
