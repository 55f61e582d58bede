"""ESC-50 environmental sounds (https://github.com/karolpiczak/ESC-50): 2,000 5-s clips, 50 classes, 5 folds.

Layout of the repository checkout (or its ``master.zip``)::

    meta/esc50.csv   filename,fold,target,category,esc10,src_file,take
    audio/1-100032-A-0.wav   ({fold}-{freesound id}-{take}-{target}.wav)

Items keep ``fold`` (1-5; clips cut from one source recording share a fold) and the group column
``src_file``. The class list is ordered by ``target``, so class index == the dataset's target number.
Evaluate with 5-fold cross-validation: :func:`fold_splits` (or the importer's ``test_fold``) per fold.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ...errors import ConfigError, DataError
from ..manifest import Item, Manifest
from . import register_importer
from .csv import folder_listing, table_records

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


@register_importer("esc50")
def import_esc50(root: str | Path, esc10: bool = False, test_fold: int | None = None,
                 val_fold: int | None = None) -> Manifest:
    """ESC-50 clips (or its ESC-10 subset with ``esc10=True``) as a single-label Manifest with folds.

    With ``test_fold`` the splits follow the folds (see :func:`fold_splits`); without it items have no split.
    """
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DataError(f"{meta}: file not found; expected the ESC-50 folder with meta/esc50.csv and audio/")
    audio_dir = root / "audio"
    present = folder_listing(audio_dir)
    names: dict[int, str] = {}  # target -> category
    items, first_line = [], {}
    for line, cells in table_records(meta, COLUMNS):
        where = f"{meta}: line {line}"
        name = cells["filename"]
        if name in first_line:
            raise DataError(f"{where}: file '{name}' already listed on line {first_line[name]}")
        first_line[name] = line
        fold, target = _integer(cells, "fold", where), _integer(cells, "target", where)
        category = cells["category"]
        if names.setdefault(target, category) != category:
            raise DataError(f"{where}: target {target} is '{category}' here but '{names[target]}' before")
        if esc10 and cells["esc10"].lower() != "true":
            continue
        if name not in present:
            raise DataError(f"{where}: audio file '{name}' not found in {audio_dir}")
        items.append(Item(id=PurePosixPath(name).stem, path=os.path.abspath(audio_dir / name), labels=(category,),
                          fold=fold, groups={"src_file": cells["src_file"]}))
    if not items:
        raise DataError(f"{meta}: no clips{' marked esc10=True' if esc10 else ''}")
    used = {item.labels[0] for item in items}
    classes = [names[target] for target in sorted(names) if names[target] in used]
    manifest = Manifest(items, classes=classes, task="single_label")
    return manifest if test_fold is None else fold_splits(manifest, test_fold, val_fold)


def fold_splits(manifest: Manifest, test_fold: int, val_fold: int | None = None) -> Manifest:
    """Splits from the items' folds: ``test_fold`` -> "test", ``val_fold`` -> "val", the other folds "train".

    Without ``val_fold`` there is no val set here; ``assign_splits(method="auto")`` then carves one out of
    train. k-fold cross-validation is one call per test fold. Items without a fold are a DataError.
    """
    without = [item for item in manifest if item.fold is None]
    if without:
        raise DataError(f"item {without[0].id} has no fold; fold_splits needs a fold on every item")
    folds = sorted({item.fold for item in manifest})
    for name, value in (("test_fold", test_fold), ("val_fold", val_fold)):
        if value is not None and value not in folds:
            raise ConfigError(f"{name} {value} does not occur; folds: {', '.join(map(str, folds))}")
    if val_fold is not None and val_fold == test_fold:
        raise ConfigError(f"val_fold and test_fold are both {test_fold}; pick two different folds")
    splits = ["test" if item.fold == test_fold else "val" if item.fold == val_fold else "train" for item in manifest]
    return manifest.with_splits(splits)


# --- helpers ------------------------------------------------------------------------------------
def _integer(cells: dict[str, str], column: str, where: str) -> int:
    try:
        return int(cells[column])
    except ValueError:
        raise DataError(f"{where}: {column} '{cells[column]}' is not an integer") from None
