"""Noisy training labels on a real set: how well confident learning finds flipped labels, and what
``train.noisy=drop`` and ``train.loss=gce`` recover of the test accuracy.

:func:`flip_labels` writes a copy of a ``labels.csv`` (``fname,labels,split,...``) with a given fraction of its
training rows moved to another class (drawn uniformly from the others, seeded), ``fname`` made absolute so the
audio stays where it is; the copy goes wherever ``out`` says (never into the shared set).

    python benchmarks/noisy_labels.py issues DATASET_DIR --out /tmp/noisy [--fraction 0.1] [key=value ...]
    python benchmarks/noisy_labels.py train DATASET_DIR --out /tmp/noisy [--fraction 0.2] [key=value ...]

``issues`` prints the label issues' precision and recall against the flipped rows; ``train`` trains plain,
``train.noisy=drop`` and ``train.loss=gce`` on the same flipped copy and prints each test accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

SEED = 25


def flip_labels(labels_csv: Path, out_csv: Path, fraction: float, seed: int = SEED,
                split: str = "train") -> set[str]:
    """Write ``labels_csv`` to ``out_csv`` with ``round(fraction * n)`` of its ``split`` rows relabelled to another
    class (single-label rows); returns the flipped rows' ``fname`` (as written: absolute)."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction={fraction}: expected 0..1")
    with open(labels_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = list(reader.fieldnames or []), list(reader)
    root = Path(labels_csv).resolve().parent
    for row in rows:
        row["fname"] = str((root / row["fname"]).resolve())
    classes = sorted({row["labels"] for row in rows})
    candidates = [i for i, row in enumerate(rows) if row.get("split", split) == split]
    rng = random.Random(seed)
    chosen = rng.sample(candidates, round(fraction * len(candidates)))
    for i in chosen:
        rows[i]["labels"] = rng.choice([c for c in classes if c != rows[i]["labels"]])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {rows[i]["fname"] for i in chosen}


def precision_recall(found: set[str], truth: set[str]) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / max(1, len(truth))


def measure_issues(dataset: Path, out: Path, fraction: float, folds: int, overrides: list[str]) -> dict[str, float]:
    from audioclf.config import apply_overrides, config_from_dict
    from audioclf.training.inputs import inputs_for
    from audioclf.training.label_issues import find_label_issues

    flipped = flip_labels(dataset / "labels.csv", out / f"flipped_{fraction:g}.csv", fraction)
    inputs = inputs_for(config_from_dict(apply_overrides({"data": {"path": str(out / f"flipped_{fraction:g}.csv")}},
                                                         overrides)))
    inputs.prepare()
    issues = find_label_issues(inputs, folds=folds)
    by_id = {item.id: item.path for item in inputs.prepared.split("train")}
    found = {str(Path(by_id[issue.id]).resolve()) for issue in issues.ranked()}
    precision, recall = precision_recall(found, flipped)
    return {"flipped": len(flipped), "flagged": len(found), "precision": round(precision, 3),
            "recall": round(recall, 3), "folds": issues.folds, "folds_by": issues.folds_by}


def measure_training(dataset: Path, out: Path, fraction: float, overrides: list[str]) -> dict[str, float]:
    import audioclf
    from audioclf.config import apply_overrides

    manifest = out / f"flipped_{fraction:g}.csv"
    flip_labels(dataset / "labels.csv", manifest, fraction)
    results = {}
    for name, extra in (("plain", {}), ("noisy=drop", {"train": {"noisy": "drop"}}),
                        ("loss=gce", {"train": {"loss": "gce"}})):
        run = out / name.replace("=", "_")
        if not (run / "summary.json").exists():  # a run an earlier call finished is read, not trained again
            audioclf.train(manifest, out=run, quiet=True, **apply_overrides(extra, overrides))
        summary = json.loads((run / "summary.json").read_text())
        results[name] = summary["metrics"]["test"]["accuracy"]
        print(name, results[name], f"best epoch {summary['best_epoch']}", summary.get("stopped", ""),
              (summary.get("noisy_labels") or {}).get("message", ""), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("issues", "train"))
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fraction", type=float)
    parser.add_argument("--folds", type=int, default=10)  # training.label_issues.DEFAULT_FOLDS
    parser.add_argument("overrides", nargs="*", help="key=value for the data (e.g. data.group=group) and every training run")
    args = parser.parse_intermixed_args()
    if args.what == "issues":
        print(json.dumps(measure_issues(args.dataset, args.out, args.fraction or 0.1, args.folds, args.overrides)))
    else:
        print(json.dumps(measure_training(args.dataset, args.out, args.fraction or 0.2, args.overrides)))


if __name__ == "__main__":
    main()
