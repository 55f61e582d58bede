"""TAU Urban Acoustic Scenes 2022 Mobile, development set (DCASE 2022 Task 1).

Layout of ``TAU-urban-acoustic-scenes-2022-mobile-development/`` (https://zenodo.org/records/6337421), all tables
tab-separated with a header line::

    meta.csv                          filename  scene_label  identifier  source_label
    evaluation_setup/fold1_train.csv  filename  scene_label
    evaluation_setup/fold1_evaluate.csv  filename  scene_label
    audio/airport-lisbon-1000-40000-0-a.wav    (scene-city-location-segment-index-device)

The 2020 Mobile naming without the 1-s index (``airport-lisbon-1000-40000-a.wav``) parses too. Group columns:
``device`` (a, b, c, s1 ... s6), ``city`` and ``location`` (the ``identifier``, e.g. ``lisbon-1000``: one
recording location). Splits come from the fold files: train -> "train", evaluate -> "test"; the val set is
carved out of train later (``assign_splits(method="auto", group="location")`` keeps locations apart).
Clips of meta.csv that are in neither fold file are left out, as in the official setup.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ...errors import ConfigError, DataError
from ..manifest import Item, Manifest
from . import register_importer
from .csv import folder_listing, table_records

log = logging.getLogger(__name__)

# The official ten scenes, alphabetical (the order of the DCASE baseline's outputs).
SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")
UNSEEN_DEVICES = ("s4", "s5", "s6")  # in the evaluate fold only


@register_importer("tau2022")
def import_tau2022(root: str | Path, fold: int | None = 1, heldout_devices: Sequence[str] = (),
                   classes: Sequence[str] | None = SCENES) -> Manifest:
    """TAU 2022 Mobile clips as a single-label Manifest with groups device, city, location.

    ``fold``: which ``evaluation_setup/fold<k>_{train,evaluate}.csv`` give the splits; ``None`` ignores the
    setup and returns every clip of meta.csv without a split. ``heldout_devices`` (e.g. ``["s1"]``): clips
    of these devices are dropped from train and kept in test, to measure unseen-device robustness with
    devices the official setup does show in training; dropping (not moving to test) keeps test free of
    copies of training recordings (s1-s6 are simulated from device a). ``classes`` fixes the class order
    (the ten official scenes by default; ``None``: sorted labels); a label outside it is a DataError.
    """
    root = Path(root)
    meta_path = root / "meta.csv"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: file not found; expected the TAU-urban-acoustic-scenes-2022-mobile-"
                        "development folder with meta.csv, audio/ and evaluation_setup/")
    meta = _read_meta(meta_path, classes)
    heldout = {device.strip().lower() for device in heldout_devices}
    unknown = sorted(heldout - {item.groups["device"] for item in meta.values()})
    if unknown:
        devices = sorted({item.groups["device"] for item in meta.values()})
        raise ConfigError(f"tau2022 heldout device '{unknown[0]}' does not occur; devices: {', '.join(devices)}")

    if fold is None:
        if heldout:
            raise ConfigError("tau2022 heldout_devices needs a fold (the split files) to hold devices out of")
        items = list(meta.values())
    else:
        setup = root / "evaluation_setup"
        items = (_fold_items(setup / f"fold{fold}_train.csv", "train", meta)
                 + _fold_items(setup / f"fold{fold}_evaluate.csv", "test", meta))
        unused = len(meta) - len(items)
        if unused:
            log.info("%s: %d clip(s) are in neither fold-%s file and are left out", meta_path, unused, fold)
        if heldout:
            kept = [item for item in items if item.split != "train" or item.groups["device"] not in heldout]
            log.info("tau2022: dropped %d train clip(s) of held-out devices %s", len(items) - len(kept),
                     ", ".join(sorted(heldout)))
            items = kept
    return Manifest(items, classes=classes, task="single_label")


def parse_tau_filename(name: str) -> dict[str, str]:
    """``audio/airport-lisbon-1000-40000-0-a.wav`` -> scene, city, location (``lisbon-1000``), device.

    Scene names use underscores, so the dash-separated fields are unambiguous: scene, city, location id,
    segment id(s), device. ValueError when there are fewer than five fields.
    """
    parts = PurePosixPath(name.replace("\\", "/")).stem.split("-")
    if len(parts) < 5:
        raise ValueError(f"file name '{name}' is not scene-city-location-segment-device.wav")
    return {"scene": parts[0], "city": parts[1], "location": f"{parts[1]}-{parts[2]}", "device": parts[-1].lower()}


# --- helpers ------------------------------------------------------------------------------------
def _read_meta(path: Path, classes: Sequence[str] | None) -> dict[str, Item]:
    """meta.csv rows by file name; the file must exist and its name agree with the scene label."""
    known = None if classes is None else set(classes)
    items: dict[str, Item] = {}
    first_line: dict[str, int] = {}
    folders: dict[Path, set[str]] = {}  # one directory listing per folder instead of a stat per clip
    for line, cells in table_records(path, ("filename", "scene_label")):
        where = f"{path}: line {line}"
        name, label = cells["filename"], cells["scene_label"]
        if name in first_line:
            raise DataError(f"{where}: file '{name}' already listed on line {first_line[name]}")
        first_line[name] = line
        if known is not None and label not in known:
            raise DataError(f"{where}: unknown scene '{label}'; expected one of {', '.join(classes)}")
        try:
            fields = parse_tau_filename(name)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
        if fields["scene"] != label:
            raise DataError(f"{where}: file '{name}' names scene '{fields['scene']}' but scene_label is '{label}'")
        audio = path.parent / name
        if audio.name not in folders.setdefault(audio.parent, folder_listing(audio.parent)):
            raise DataError(f"{where}: audio file '{name}' not found in {audio.parent}")
        groups = {
            "device": (cells.get("source_label") or fields["device"]).lower(),
            "city": fields["city"],
            "location": cells.get("identifier") or fields["location"],
        }
        items[name] = Item(id=PurePosixPath(name).stem, path=os.path.abspath(audio), labels=(label,), groups=groups)
    return items


def _fold_items(path: Path, split: str, meta: dict[str, Item]) -> list[Item]:
    """The meta items listed in one fold file, with ``split`` set; labels must agree with meta.csv."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a tab-separated 'filename<TAB>scene_label' table "
                        "(or fold=None to import meta.csv without splits)")
    items, first_line = [], {}
    for line, cells in table_records(path, ("filename", "scene_label")):
        where = f"{path}: line {line}"
        name = cells["filename"]
        if name not in meta:
            raise DataError(f"{where}: file '{name}' is not in meta.csv")
        if name in first_line:
            raise DataError(f"{where}: file '{name}' already listed on line {first_line[name]}")
        first_line[name] = line
        item = meta[name]
        if cells["scene_label"] != item.labels[0]:
            raise DataError(f"{where}: scene_label '{cells['scene_label']}' disagrees with meta.csv "
                            f"('{item.labels[0]}')")
        items.append(Item(id=item.id, path=item.path, labels=item.labels, split=split, groups=item.groups))
    return items
