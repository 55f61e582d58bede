"""What a run's numbers say, in sentences a user can act on: overfitting, a validation/test gap, the classes
the model confuses, and which setting to change next. Built from summary.json and metrics.jsonl only, so
``report.md`` can be regenerated at any time.
"""

from __future__ import annotations

from typing import Any

from ..metrics import higher_is_better

__all__ = ["diagnose"]

# A gap (in the metric's own units, e.g. accuracy points / 100) worth a sentence.
OVERFIT_GAP = 0.15
SPLIT_GAP = 0.10


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
        if gap > SPLIT_GAP:
            found.append(f"**Validation and test disagree**: {monitor} {_fmt(val)} on validation but {_fmt(test)} "
                         "on test. The test split may hold speakers, devices or recordings that validation does "
                         "not; a `group` column (`data.group=...`) keeps each group in one split, so validation "
                         "predicts test.")

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
