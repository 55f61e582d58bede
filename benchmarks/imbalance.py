"""Balanced vs not on a real set made imbalanced: zero-config training with ``train.balance`` = each mode, the
test split's balanced accuracy, macro-F1 and the rare classes' recall.

The set is a shared real one (``fname,labels,split[,group]``, e.g. ``speech_commands_ar/labels_4speakers.csv``,
speaker-disjoint splits) with the ``--rare`` classes cut to ``--keep`` of their training items
(:func:`audioclf.data.balance.drop_to_imbalance`, seeded; val and test untouched). Nothing is copied: the cut
manifest is written to ``OUT/manifest.csv`` and each run to ``OUT/<mode>``.

    python benchmarks/imbalance.py DATA.csv --rare one,no --keep 0.125 --out /tmp/imbalance [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import limit_thread_env, print_table  # noqa: E402

limit_thread_env(1)

from audioclf.config import load_config  # noqa: E402
from audioclf.data.balance import drop_to_imbalance  # noqa: E402
from audioclf.data.importers import load_manifest  # noqa: E402
from audioclf.training.trainer import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="labels CSV of a shared real set (its own splits are kept)")
    parser.add_argument("--rare", required=True, help="classes to make rare, comma-separated")
    parser.add_argument("--keep", type=float, default=0.125, help="fraction of their training items kept")
    parser.add_argument("--modes", default="none,sampler,loss", help="train.balance values to compare")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (the cut is fixed: seed 0)")
    parser.add_argument("--out", required=True, help="folder for the cut manifest and the runs (e.g. under /tmp)")
    parser.add_argument("overrides", nargs="*", help="key=value for every run (e.g. train.max_minutes=5)")
    args = parser.parse_intermixed_args()
    rare = [name.strip() for name in args.rare.split(",") if name.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cut = drop_to_imbalance(load_manifest(args.data), {name: args.keep for name in rare}, seed=0)
    cut.to_csv(out / "manifest.csv")
    counts = cut.subset("train").class_counts()
    print("training items per class: " + ", ".join(f"{name} {n}" for name, n in counts.items()), flush=True)
    rows, results = [], {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for mode in args.modes.split(","):
            run = out / f"{mode}_seed{seed}"
            cfg = load_config(None, [f"data.path={args.data}", f"out={run}", f"seed={seed}", f"train.balance={mode}",
                                     *args.overrides])
            train(cfg, manifest=cut)
            summary = json.loads((run / "summary.json").read_text())
            test, per_class = summary["metrics"]["test"], summary["per_class"]["test"]
            recall = {name: per_class[f"per_class/{name}/accuracy"] for name in rare}
            results[f"{mode}_seed{seed}"] = {"monitor": summary["monitor"], **test, "rare_recall": recall}
            rows.append([mode, str(seed), f"{test['accuracy']:.3f}", f"{test['balanced_accuracy']:.3f}",
                         f"{test['macro_f1']:.3f}", " ".join(f"{name} {r:.2f}" for name, r in recall.items()),
                         str(summary["best_epoch"]), str(summary["planned_epochs"])])
            print(rows[-1], flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(f"test split, {', '.join(rare)} cut to {args.keep:g} of their training items",
                ["balance", "seed", "accuracy", "balanced acc", "macro-F1", "rare recall", "best epoch", "epochs"],
                rows)


if __name__ == "__main__":
    main()
