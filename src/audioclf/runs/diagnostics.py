"""What a run's numbers say, in sentences a user can act on: overfitting, a validation/test gap, the classes
the model confuses, and which setting to change next. Built from summary.json and metrics.jsonl only, so
``report.md`` can be regenerated at any time.
"""

from __future__ import annotations

import math

from typing import Any

from ..metrics import higher_is_better

__all__ = ["diagnose"]

# A gap (in the metric's own units, e.g. accuracy points / 100) worth a sentence.
OVERFIT_GAP = 0.15
SPLIT_GAP = 0.10  # for metrics that are not a share of items (lwlrap, mAP): no standard error to compare with
PROPORTIONS = ("accuracy", "balanced_accuracy")


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def diagnose(summary: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """Findings about one run, most important first (an empty list when nothing stands out)."""
    metrics = summary.get("metrics", {})
    monitor = summary.get("monitor")
    found: list[str] = []
    if not monitor or not metrics.get("val"):
        return found
    better_high = higher_is_better(monitor)
    train, val, test = (metrics.get(s, {}).get(monitor) for s in ("train", "val", "test"))

    if train is not None and val is not None:
        gap = (train - val) if better_high else (val - train)
        if gap > OVERFIT_GAP:
            found.append(f"**Overfitting**: {monitor} is {_fmt(train)} on the training clips but {_fmt(val)} on "
                         "validation. More data or augmentation (`augment.*`), a smaller model, or more weight "
                         "decay (`train.weight_decay`) usually close the gap.")
        elif better_high and train < 0.6 and gap < 0.05:
            found.append(f"**Underfitting**: {monitor} is only {_fmt(train)} even on the training clips. Try more "
                         "epochs, a larger model (`model.name`), or a higher learning rate (`train.lr`).")

    if val is not None and test is not None:
        gap = (val - test) if better_high else (test - val)
        counts = summary.get("counts", {})
        n_val, n_test = counts.get("val", 0), counts.get("test", 0)
        if monitor in PROPORTIONS and n_val and n_test:
            # A share of items: two splits of these sizes differ by chance by about one standard error.
            se = math.sqrt(val * (1 - val) / n_val + test * (1 - test) / n_test)
            beyond_chance = gap > max(3 * se, 0.02)
            why = f" ({gap / se:.1f} standard errors for {n_val} and {n_test} items)" if se > 0 else ""
        else:
            beyond_chance, why = gap > SPLIT_GAP, ""
        if beyond_chance:
            found.append(f"**Validation and test disagree**: {monitor} {_fmt(val)} on validation but {_fmt(test)} "
                         f"on test, more than their sizes explain{why}. The test split may hold speakers, devices or "
                         "recordings that validation does not; a `group` column (`data.group=...`) keeps each group "
                         "in one split, so validation predicts test.")

    epochs = [r["epoch"] for r in records]
    best = summary.get("best_epoch")
    if epochs and best is not None:
        planned = summary.get("planned_epochs") or max(epochs)
        if best == max(epochs) and best >= planned:
            found.append(f"**Still improving**: the best epoch was the last one ({best}); more epochs "
                         "(`train.epochs`) may help.")
        elif len(epochs) >= 10 and best <= max(2, len(epochs) // 10):
            found.append(f"**Best epoch came early** ({best} of {len(epochs)}): the model stopped improving almost "
                         "at once; a lower learning rate (`train.lr`) or more regularisation may help.")

    confusion = summary.get("confusion", {}).get("test")
    classes = summary.get("classes", [])
    if confusion and classes:
        pairs = sorted(((count, i, j) for i, row in enumerate(confusion) for j, count in enumerate(row)
                        if i != j and count > 0), reverse=True)[:3]
        if pairs:
            listed = "; ".join(f"{classes[i]} taken for {classes[j]} ({count}x)" for count, i, j in pairs)
            found.append(f"**Most confused (test)**: {listed}.")
    return found
