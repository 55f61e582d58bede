"""Harder splits of the shared real sets: whole groups (speakers, recording sources) held out of training.

For each dataset folder (``labels.csv`` with ``fname,labels,split,group[,fold]``) it writes
``OUT/<dataset>/labels_<variant>.csv`` (``fname,labels,split,group``, ``fname`` absolute, so the data stays
where it is). Every split is seeded (``SEED``) and no group appears in two of train/val/test. How each is built,
chosen from the columns the set has:

* **speakers** (many clips per group, e.g. ``speech_commands_ar``: group = speaker): ``SPEAKERS`` = 6 speakers
  drawn at random; rotation k (k < ``ROTATIONS``) tests on speaker k, validates on speaker k + 3 and trains on the
  other 4. This mirrors the hidden set of issue 22 (4 training speakers, 1 unseen validation speaker, 1 unseen
  test speaker). Variant ``6spk_<test speaker>``.
* **folds** (a ``fold`` column, e.g. ESC-10, whose folds keep the clips of one freesound source together):
  val/test folds in ``FOLD_ROTATIONS``, the rest train. The first, train 1-3 / val 4 / test 5, is the set's own
  split; the second holds out fold 1 instead. Variant ``fold<test>``.
* **units** (one clip per group, e.g. instruments: group = FSDKaggle2018 clip id): groups are
  ``split_unit`` from ``metadata.csv`` when it exists (near-duplicate clips share one), dealt per class into
  ``N_UNIT_FOLDS`` folds in seeded order; rotation k tests on fold 2k and validates on fold 2k + 1. With one clip
  per source this is a re-draw of the split, not a harder shift: it shows how much the score moves with the draw.
  Variant ``units<k>``.

    python benchmarks/heldout_splits.py [DATASET_DIR ...] --out DIR   (default: every set under ../shared/realdata)
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

SEED = 22
SPEAKERS = 6
ROTATIONS = 3
FOLD_ROTATIONS = (("4", "5"), ("2", "1"))  # (val fold, test fold)
N_UNIT_FOLDS = 5
MIN_CLIPS_PER_SPEAKER = 10  # a group this large is a speaker (or device), not a single recording

Rows = list[dict[str, str]]


def read_rows(csv_path: Path) -> Rows:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def assign(rows: Rows, split_of_group: dict[str, str], key: str = "group") -> Rows:
    """Rows of the chosen groups with their new split; rows whose group is not chosen are left out."""
    return [{**row, "split": split_of_group[row[key]]} for row in rows if row[key] in split_of_group]


def speaker_splits(rows: Rows) -> dict[str, Rows]:
    speakers = sorted({row["group"] for row in rows})
    if len(speakers) < SPEAKERS:
        raise ValueError(f"speaker splits need {SPEAKERS} groups, the set has {len(speakers)}")
    chosen = random.Random(SEED).sample(speakers, SPEAKERS)
    splits = {}
    for k in range(ROTATIONS):
        test, val = chosen[k], chosen[k + SPEAKERS // 2]
        splits[f"6spk_{test}"] = assign(rows, {s: "test" if s == test else "val" if s == val else "train"
                                               for s in chosen})
    return splits


def fold_splits(rows: Rows) -> dict[str, Rows]:
    splits = {}
    for val, test in FOLD_ROTATIONS:
        split_of_fold = {f: "val" if f == val else "test" if f == test else "train" for f in {r["fold"] for r in rows}}
        splits[f"fold{test}"] = assign(rows, split_of_fold, key="fold")
    return splits


def unit_splits(rows: Rows, unit_of: dict[str, str]) -> dict[str, Rows]:
    """Units dealt per class into folds, so every fold holds about the same number of clips of each class."""
    units_by_class: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        unit = unit_of.get(row["fname"], row["group"])
        if unit not in units_by_class[row["labels"]]:
            units_by_class[row["labels"]].append(unit)
    fold_of: dict[str, int] = {}
    rng = random.Random(SEED)
    for label in sorted(units_by_class):
        units = sorted(units_by_class[label])
        rng.shuffle(units)
        offset = len(fold_of)  # start each class where the last left off, so fold sizes stay even
        for i, unit in enumerate(units):
            fold_of.setdefault(unit, (offset + i) % N_UNIT_FOLDS)
    splits = {}
    for k in range(N_UNIT_FOLDS // 2):
        split_of_fold = {2 * k: "test", 2 * k + 1: "val"}
        split_of = {unit: split_of_fold.get(fold, "train") for unit, fold in fold_of.items()}
        splits[f"units{k}"] = [{**row, "split": split_of[unit_of.get(row["fname"], row["group"])]} for row in rows]
    return splits


def held_out_splits(dataset_dir: Path) -> dict[str, Rows]:
    """The group-held-out variants of one dataset folder, by name (see the module docstring)."""
    labels = dataset_dir / "labels.csv"
    rows = read_rows(labels)
    missing = {"fname", "labels", "group"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{labels}: no column {', '.join(sorted(missing))} (held-out splits need groups)")
    sizes = defaultdict(int)
    for row in rows:
        sizes[row["group"]] += 1
    if "fold" in rows[0]:
        splits = fold_splits(rows)
    elif min(sizes.values()) >= MIN_CLIPS_PER_SPEAKER:
        splits = speaker_splits(rows)
    else:
        metadata = dataset_dir / "metadata.csv"
        meta = read_rows(metadata) if metadata.exists() else []
        unit_of = {row["fname"]: row["split_unit"] for row in meta if row.get("split_unit")}
        splits = unit_splits(rows, unit_of)
    for name, split_rows in splits.items():
        check_disjoint(split_rows, f"{dataset_dir.name} {name}")
    return splits


def check_disjoint(rows: Rows, where: str) -> None:
    """Refuse a split where one group (or fold) lands in two of train/val/test: it would not be held out."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        splits_of[row["group"]].add(row["split"])
    shared = sorted(group for group, splits in splits_of.items() if len(splits) > 1)
    if shared:
        raise ValueError(f"{where}: group {shared[0]} is in {sorted(splits_of[shared[0]])} ({len(shared)} such groups)")
    if {row["split"] for row in rows} != {"train", "val", "test"}:
        raise ValueError(f"{where}: a split is empty")


def write_held_out(dataset_dirs: list[Path], out: Path) -> list[Path]:
    """Write every dataset's variants under ``out/<dataset>/``; returns the CSV paths written."""
    written = []
    for dataset_dir in dataset_dirs:
        for name, rows in held_out_splits(dataset_dir).items():
            path = out / dataset_dir.name / f"labels_{name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".csv.tmp")  # written whole, then renamed: never a half-written CSV
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["fname", "labels", "split", "group"])
                for row in rows:
                    writer.writerow([str((dataset_dir / row["fname"]).resolve()), row["labels"], row["split"],
                                     row["group"]])
            tmp.replace(path)
            written.append(path)
    return written


def default_root() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "realdata"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", help="dataset folders (default: every folder under --root)")
    parser.add_argument("--root", default=str(default_root()))
    parser.add_argument("--out", required=True, help="folder for the derived CSVs (outside the repository)")
    args = parser.parse_args()
    dirs = [Path(d) for d in args.datasets] or sorted(p.parent for p in Path(args.root).glob("*/labels.csv"))
    try:
        paths = write_held_out(dirs, Path(args.out))
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    for path in paths:
        counts = defaultdict(int)
        for row in read_rows(path):
            counts[row["split"]] += 1
        print(f"{path}: " + " / ".join(f"{s} {counts[s]}" for s in ("train", "val", "test")))


if __name__ == "__main__":
    main()
