"""What a run's numbers say, in sentences a user can act on: overfitting, a validation/test gap, the classes
the model confuses, and which setting to change next. Built from summary.json and metrics.jsonl only, so
``report.md`` can be regenerated at any time.
"""

from __future__ import annotations

import math

from typing import Any

from ..metrics import higher_is_better

__all__ = ["diagnose", "group_list"]

# A gap (in the metric's own units, e.g. accuracy points / 100) worth a sentence.
OVERFIT_GAP = 0.15
SPLIT_GAP = 0.10  # for metrics that are not a share of items (lwlrap, mAP): no standard error to compare with
PROPORTIONS = ("accuracy", "balanced_accuracy")
FEW_GROUPS = 3  # held-out groups (speakers ...) in validation or test at or below which one score is a lottery
LISTED_GROUPS = 8  # group names shown per split; the rest counted


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def group_list(entry: dict[str, Any], cap: int = LISTED_GROUPS) -> str:
    """One split's groups as "2 (s01, s02)": how many, and the first ``cap`` names (then "+N more")."""
    names, count = entry.get("names", [])[:cap], entry.get("count", 0)
    more = f", +{count - len(names)} more" if count > len(names) else ""
    return f"{count} ({', '.join(names)}{more})" if names else str(count)


def _split_gap_cause(split_groups: dict[str, Any] | None) -> str:
    """What a validation/test gap means: without groups kept apart, a leak of speakers (devices ...) across the
    splits is the first suspect; with them, the splits hold different groups and the gap is how much they differ."""
    if not split_groups:
        return ("The test split may hold speakers, devices or recordings that validation does not; a `group` column "
                "(`data.group=...`) keeps each group in one split, so validation predicts test.")
    column = split_groups["column"]
    val, test = split_groups.get("val", {}), split_groups.get("test", {})
    text = (f"Each {column} is already in one split (validation: {group_list(val)}; test: "
            f"{group_list(test)}), so this is neither a leak nor overfitting to validation: it is how differently the "
            f"model does on these {column}s ({column} variation).")
    few = min(val.get("count", 0), test.get("count", 0))
    if few <= FEW_GROUPS:
        # Items of one group are alike, so the items do not vary independently: the spread of a score over a
        # handful of groups is far larger than the standard error over its items.
        folds = min(5, sum(split_groups.get(s, {}).get("count", 0) for s in ("train", "val", "test")))
        text += (f" With so few held-out {column}s ({val.get('count', 0)} in validation, {test.get('count', 0)} in "
                 f"test) either number depends on which {column}s were drawn, and its spread is large: group k-fold "
                 f"cross-validation (`cv={folds}`, the same grouping: each {column} tested once) gives a mean and a "
                 "spread to trust.")
    return text


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
                         f"on test, more than their sizes explain{why}. " + _split_gap_cause(summary.get("split_groups")))

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
