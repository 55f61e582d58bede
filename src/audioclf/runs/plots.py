"""The pictures of a run: learning curves and confusion matrices (PNG, written atomically)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes
from ..metrics import higher_is_better, reliability_bins

__all__ = ["plot_comparison_curves", "plot_confusion", "plot_curves", "plot_effects", "plot_folds", "plot_reliability",
           "plot_timeline"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(records: list[dict[str, Any]], out_dir: Path, monitor: str, best_epoch: int | None = None,
                planned_epochs: int | None = None, train_inflated_by: list[str] | None = None) -> list[Path]:
    """loss.png (train vs val loss) and metrics.png (val scores, and the training split's where train.score_train
    logged them; losses on their own axis) per epoch, with the
    best epoch marked and, when training ended before ``planned_epochs``, where early stopping ended it.
    ``train_inflated_by``: what raised the training loss above a clean one (MixUp, label smoothing ...), said in
    the legend, so a train curve above validation's is not read as underfitting."""
    if not records:
        return []
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]

    def mark(ax) -> None:
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        if planned_epochs is not None and epochs[-1] < planned_epochs:
            ax.axvline(epochs[-1], color="tab:red", linestyle=":", linewidth=1,
                       label=f"early stop ({epochs[-1]} of {planned_epochs})")

    written = []
    fig, ax = plt.subplots(figsize=(6, 4.6))
    train = "train"
    if train_inflated_by:
        train += f" (with {', '.join(train_inflated_by)}:\nhigher than a clean loss)"
    # train.score_train: the training split scored in eval mode, beside the running training loss
    scored_train = [("train_eval/loss", "train (eval mode)")] if any("train_eval/loss" in r for r in records) else []
    for key, label in (("train/loss", train), *scored_train, ("val/loss", "val")):
        ax.plot(epochs, [r.get(key, np.nan) for r in records], marker="o", markersize=3, label=label)
    mark(ax)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    # Below the axes, as in metrics.png: a legend that explains the train curve is too long to sit on the curves.
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / "loss.png"))

    names = sorted({k for r in records for k in r if k.startswith("val/") and k != "val/loss" and k.count("/") == 1})
    scores = [k for k in names if higher_is_better(k)]
    losses = [k for k in names if not higher_is_better(k)]  # log loss etc.: another scale, another axis
    fig, ax = plt.subplots(figsize=(7, 5))
    lines = []
    for key in scores:
        values = [r.get(key, np.nan) for r in records]
        style = "-" if key == f"val/{monitor}" else "--"
        lines += ax.plot(epochs, [np.nan if v is None else v for v in values], style, marker=".", label=key[4:])
        train_key = f"train_eval/{key[4:]}"
        if any(train_key in r for r in records):  # the same score on the training split, in the line's colour
            lines += ax.plot(epochs, [r.get(train_key, np.nan) for r in records], ":", marker=".",
                             color=lines[-1].get_color(), label=f"train {key[4:]}")
    title = "Validation and training metrics" if scored_train else "Validation metrics"
    ax.set(xlabel="epoch", ylabel="score", title=f"{title} (monitor: {monitor})")
    mark(ax)
    if losses:
        right = ax.twinx()
        for key in losses:
            values = [r.get(key, np.nan) for r in records]
            lines += right.plot(epochs, [np.nan if v is None else v for v in values], ":", marker="x", color="tab:gray",
                                label=f"{key[4:]} (right axis)")
        right.set_ylabel("loss")
    handles = lines + [h for h in ax.get_lines() if h not in lines]
    # Below the axes: the curves fill the plot, and a legend inside would hide some of them.
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], fontsize="small", loc="upper center",
              bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / "metrics.png"))
    return written


def plot_folds(stats: dict[str, dict[str, Any]], path: Path, names: list[str]) -> Path:
    """Cross-validation: each score's value in every fold (dots) and its mean ± std (bar and whisker); ``names``
    are scores in [0, 1]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names) + 1.5), 4))
    for i, name in enumerate(names):
        row = stats[name]
        ax.bar(i, row["mean"], width=0.6, yerr=row["std"], color="tab:blue", alpha=0.35, capsize=6)
        ax.plot(np.full(len(row["folds"]), i) + np.linspace(-0.15, 0.15, len(row["folds"])), row["folds"], "o",
                color="tab:blue", markersize=4)
        ax.annotate(f"{row['mean']:.3f} ± {row['std']:.3f}", (i, row["mean"] + row["std"]), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.1)  # scores in [0, 1]: the whole scale, so a low score looks low
    ax.set(ylabel="test score", title=f"Cross-validation: {len(stats[names[0]]['folds'])} folds (mean ± std)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts annotated."""
    plt = _pyplot()
    counts = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(classes) <= 30:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if counts[i, j]:
                    color = "white" if normalized[i, j] > 0.5 else "black"
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    return _save(fig, path)


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str,
                     ylabel: str = "accuracy (top label)") -> Path:
    """Reliability diagram: accuracy against mean confidence in the ECE's 15 bins, one line per ``curves`` entry
    (label -> (confidence, correct) pairs, e.g. before and after temperature scaling), the diagonal being perfect
    calibration; below, how many items each bin holds (an almost empty bin's point means little)."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for i, (label, (confidence, correct)) in enumerate(curves.items()):
        bins = reliability_bins(confidence, correct)
        filled = bins["count"] > 0
        ax.plot(bins["confidence"][filled], bins["accuracy"][filled], marker="o", markersize=4, label=label)
        centres = (bins["edges"][:-1] + bins["edges"][1:]) / 2
        width = np.diff(bins["edges"]) / (len(curves) + 1)
        hist.bar(centres + (i - (len(curves) - 1) / 2) * width, bins["count"], width=width, label=label)
    ax.set(ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize="small", loc="best")  # an under- or overconfident curve leaves a different corner free
    ax.grid(alpha=0.3)
    hist.set(xlabel="confidence (mean in each of 15 bins)", ylabel="items")
    hist.grid(alpha=0.3)
    return _save(fig, path)


MAX_LABELLED_RUNS = 10  # more runs than this: the best and worst named, the others drawn thin and grey


def plot_comparison_curves(runs: list[tuple[str, list[dict[str, Any]]]], metric: str, path: Path) -> Path:
    """Several runs' validation ``metric`` (left) and training loss (right) per epoch, overlaid; ``runs`` are
    (name, metrics.jsonl records), best first."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    many = len(runs) > MAX_LABELLED_RUNS
    colors = plt.get_cmap("tab10")
    for rank, (name, records) in enumerate(runs):
        epochs = [r["epoch"] for r in records]
        if many and 0 < rank < len(runs) - 1:
            style = {"color": "0.7", "linewidth": 0.8, "label": "_others" if rank > 1 else f"{len(runs) - 2} others"}
        elif many:
            style = {"color": "tab:green" if rank == 0 else "tab:red", "linewidth": 2,
                     "label": f"{'best' if rank == 0 else 'worst'}: {name}"}
        else:
            style = {"color": colors(rank % 10), "linewidth": 1.5, "label": name}
        left.plot(epochs, [r.get(f"val/{metric}", np.nan) for r in records], marker=".", **style)
        right.plot(epochs, [r.get("train/loss", np.nan) for r in records], **style)
    left.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"Validation {metric}")
    right.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.03 + 0.045 * math.ceil(len(labels) / 3), 1, 1))
    return _save(fig, path, tight=False)


def plot_effects(effects: dict[str, list[tuple[Any, list[float]]]], metric: str, path: Path) -> Path:
    """For each swept key, one panel: every trial's validation ``metric`` (dots) at the key's value, and the mean
    per value (a bar)."""
    plt = _pyplot()
    n = len(effects)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (key, values) in zip(axes.flat, effects.items()):
        for i, (_, scores) in enumerate(values):
            ax.bar(i, float(np.mean(scores)), width=0.6, color="tab:blue", alpha=0.3)
            ax.plot(np.full(len(scores), i) + np.linspace(-0.12, 0.12, len(scores)), scores, "o", color="tab:blue",
                    markersize=4)
        labels = [_short(value) for value, _ in values]
        ax.set_xticks(range(len(values)), labels, rotation=30 if max(map(len, labels)) > 6 else 0,
                      ha="right" if max(map(len, labels)) > 6 else "center", fontsize=8)
        ax.set(xlabel=key, ylabel=f"validation {metric}")
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Effect of each swept key on validation {metric}")
    return _save(fig, path)


MAX_TIMELINE_CLASSES = 20  # more classes (AudioSet's 527): the ones that come closest to certain somewhere


def plot_timeline(starts: np.ndarray, window: float, probs: np.ndarray, classes: list[str], path: Path,
                  title: str, events: list[tuple[str, float, float]] | None = None) -> Path:
    """A long recording as a heat map: one row per class, one column per window (its centre time), the colour its
    probability; with many classes only the :data:`MAX_TIMELINE_CLASSES` whose highest probability is largest.
    ``events``: ``(class, onset, offset)`` drawn as boxes on their class's row (``predict --events``)."""
    plt = _pyplot()
    rows = np.argsort(-probs.max(axis=0))[:MAX_TIMELINE_CLASSES] if len(classes) > MAX_TIMELINE_CLASSES \
        else np.arange(len(classes))
    centres = np.asarray(starts) + window / 2
    half_step = (centres[1] - centres[0]) / 2 if len(centres) > 1 else window / 2
    fig, ax = plt.subplots(figsize=(min(16.0, 6 + 0.02 * len(centres)), 1.2 + 0.32 * len(rows)))
    image = ax.imshow(probs[:, rows].T, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest",
                      extent=(centres[0] - half_step, centres[-1] + half_step, len(rows) - 0.5, -0.5))
    ax.set_yticks(range(len(rows)), [classes[i] for i in rows], fontsize=8)
    row_of = {classes[i]: r for r, i in enumerate(rows)}
    for label, onset, offset in events or []:
        if label in row_of:  # an event of a class not shown (AudioSet's many) has no row
            ax.add_patch(plt.Rectangle((onset, row_of[label] - 0.42), offset - onset, 0.84, fill=False,
                                       edgecolor="#00e5ff", linewidth=1.6))
    ax.set(xlabel="time (s, window centres)", title=title)
    fig.colorbar(image, ax=ax, label="probability", fraction=0.03, pad=0.01)
    return _save(fig, path)


def _short(value: Any, width: int = 14) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _png_bytes(fig, tight: bool = True, dpi: int = 110, **savefig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig)
    _pyplot().close(fig)
    return buffer.getvalue()


def _save(fig, path: Path, tight: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, _png_bytes(fig, tight))
    return path
