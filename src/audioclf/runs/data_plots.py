"""The pictures of a data set before training (``audioclf describe``): class counts, durations and sample rates,
labels per clip and metadata columns, each split in its own colour (PNG, written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.summary import DataSummary, column_values, shared_values
from .plots import _png_bytes, _pyplot, _save

__all__ = ["MAX_DRAWN_VALUES", "plot_audio", "plot_class_counts", "plot_columns",
           "plot_labels_per_item", "spectrogram_thumbnail"]

# A column with more values than this (400 Freesound ids, 1,000 speakers) is drawn as distinct values per
# split: one bar per value would be unreadable.
MAX_DRAWN_VALUES = 40
SPLIT_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def _color(split: str) -> str:
    return SPLIT_COLORS.get(split, "tab:gray")


def _counts_axis(axis) -> None:
    """Whole ticks on an axis of counts (3 files, not 2.5)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _stacked_rows(ax, rows: list[str], counts: dict[str, dict[str, int]], splits: list[str]) -> None:
    """One horizontal bar per row (first row on top), its parts the splits' counts; the total at its end."""
    left = np.zeros(len(rows))
    for split in splits:
        values = np.array([counts[split].get(row, 0) for row in rows], dtype=float)
        ax.barh(range(len(rows)), values, left=left, color=_color(split), label=split)
        left += values
    for y, total in enumerate(left):
        ax.annotate(f"{int(total)}", (total, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top, as in the markdown table
    ax.set_xlim(0, max(1.0, float(left.max(initial=0))) * 1.12)  # room for the totals
    _counts_axis(ax.xaxis)
    ax.grid(alpha=0.3, axis="x")


def _title_and_legend(ax, title: str) -> None:
    """The splits' legend in a strip above the axes (inside, it would hide bars), the title above it (beside it,
    a long title and the legend overlap when long tick labels narrow the axes)."""
    ax.legend(fontsize="small", loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False,
              borderaxespad=0.1, borderpad=0.1)
    ax.set_title(title, loc="left", pad=20)


def _rows_height(n_rows: int) -> float:
    return 1.6 + 0.24 * n_rows


def plot_class_counts(summary: DataSummary, path: Path) -> Path:
    """Items per class, one stacked bar per class (its splits' parts)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, _rows_height(len(summary.classes))))
    _stacked_rows(ax, summary.classes, summary.class_counts, summary.splits)
    unit = "labels" if summary.task == "multi_label" else "items"
    ax.set(xlabel=f"{unit} (multi-label: a clip counts once per label)" if unit == "labels" else "items")
    _title_and_legend(ax, f"Class counts per split ({len(summary.classes)} classes)")
    return _save(fig, path)


def plot_audio(summary: DataSummary, path: Path) -> Path:
    """Left: histogram of file durations per split (stacked; side by side on a log axis); right: files per native sample rate."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    every = np.concatenate([np.asarray(summary.durations[s], dtype=float) for s in summary.splits])
    low, high = float(every.min()), float(every.max())
    if high - low < 1e-3:  # clips cut to one length: one narrow bar centred on it
        bins = low + np.linspace(-0.5, 0.5, 22) * (0.4 * low or 1.0)
        title = f"Durations: all {len(every)} files {low:.2f} s"
    else:
        bins = np.linspace(low, high, min(40, max(5, int(math.sqrt(len(every))))) + 1)
        title = f"Durations: median {np.median(every):.2f} s, {low:.2f}–{high:.2f} s"
    top, _ = np.histogram(every, bins=bins)
    # Most files in one bin (clips cut to a length, a few not): on a linear axis the others would not show. On a
    # log axis stacked parts would misstate their sizes, so the splits' bars stand side by side instead.
    log = bool(top.max() > 0.5 * len(every) and np.count_nonzero(top) > 1)
    left.hist([summary.durations[s] for s in summary.splits], bins=bins, stacked=not log,
              color=[_color(s) for s in summary.splits], label=summary.splits)
    if log:
        left.set_yscale("log")
    else:
        _counts_axis(left.yaxis)
    left.set(xlabel="duration (s, from the file headers)",
             ylabel="files (log scale)" if left.get_yscale() == "log" else "files")
    _title_and_legend(left, title)
    left.grid(alpha=0.3, axis="y")
    rates = sorted({rate for s in summary.splits for rate in summary.sample_rates[s]})
    bottom = np.zeros(len(rates))
    for split in summary.splits:
        values = np.array([summary.sample_rates[split].get(rate, 0) for rate in rates], dtype=float)
        right.bar(range(len(rates)), values, bottom=bottom, color=_color(split), label=split, width=0.6)
        bottom += values
    for x, total in enumerate(bottom):
        right.annotate(f"{int(total)}", (x, total), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    right.set_xticks(range(len(rates)), [f"{rate / 1000:g} kHz" for rate in rates],
                     rotation=30 if len(rates) > 4 else 0, fontsize=8)
    right.set_xlim(-0.8, max(len(rates), 2) - 0.2)  # one rate: a bar, not a wall
    right.set_ylim(0, bottom.max() * 1.1)  # room for the totals above the bars
    right.set_ylabel("files")
    right.set_title("Native sample rates", loc="left", pad=20)  # level with the durations' title
    _counts_axis(right.yaxis)
    right.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_labels_per_item(summary: DataSummary, path: Path) -> Path:
    """Multi-label: how many clips have 0, 1, 2 ... labels, per split (stacked)."""
    plt = _pyplot()
    per = summary.labels_per_item or {}
    counts = sorted({n for split in summary.splits for n in per.get(split, {})})
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(counts) + 2.5), 3.8))
    bottom = np.zeros(len(counts))
    for split in summary.splits:
        values = np.array([per.get(split, {}).get(n, 0) for n in counts], dtype=float)
        ax.bar(range(len(counts)), values, bottom=bottom, color=_color(split), label=split, width=0.6)
        bottom += values
    ax.set_xticks(range(len(counts)), [str(n) for n in counts])
    ax.set(xlabel="labels per clip", ylabel="clips")
    _counts_axis(ax.yaxis)
    _title_and_legend(ax, "Label cardinality")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_columns(summary: DataSummary, path: Path) -> Path:
    """One panel per metadata column: items per value (stacked by split), or, for a column with more than
    :data:`MAX_DRAWN_VALUES` values, the distinct values each split holds."""
    plt = _pyplot()
    names = list(summary.columns)
    sizes = [len(column_values(summary, name)) for name in names]
    heights = [_rows_height(n) if n <= MAX_DRAWN_VALUES else 3.4 for n in sizes]
    fig, axes = plt.subplots(len(names), 1, figsize=(7.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, name in zip(axes[:, 0], names):
        values = column_values(summary, name)
        kept = f" (the split keeps each {name} in one split)" if name == summary.group else ""
        if len(values) <= MAX_DRAWN_VALUES:
            _stacked_rows(ax, [v or "(none)" for v in values],
                          {s: {(v or "(none)"): n for v, n in summary.columns[name][s].items()} for s in summary.splits},
                          summary.splits)
            ax.set(xlabel=f"items{kept}")
            _title_and_legend(ax, f"{name}: items per value")
        else:
            distinct = [len(summary.columns[name][s]) for s in summary.splits]
            ax.bar(range(len(distinct)), distinct, color=[_color(s) for s in summary.splits], width=0.6)
            for x, n in enumerate(distinct):
                ax.annotate(str(n), (x, n), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
            ax.set_xticks(range(len(distinct)), summary.splits)
            ax.set_ylim(0, max(distinct) * 1.15)  # room for the numbers above the bars
            shared = len(shared_values(summary, name))
            ax.set(ylabel="distinct values", xlabel=kept.strip(" ()"))
            ax.set_title(f"{name}: {len(values)} values, {shared} in more than one split", loc="left")
            ax.grid(alpha=0.3, axis="y")
            _counts_axis(ax.yaxis)
    return _save(fig, path)


def spectrogram_thumbnail(log_mel: np.ndarray, db_range: tuple[float, float],
                          size: tuple[int, int] = (300, 80)) -> bytes:
    """A small PNG (``size`` pixels, width x height) of a log-mel spectrogram (mels, frames) in dB, low bands at the
    bottom, no axes: a glance at the clip, not a plot. ``db_range``: the dB mapped to black and to the brightest
    colour, one scale for every thumbnail, so a silent clip looks dark and a quieter copy looks quieter."""
    plt = _pyplot()
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(np.asarray(log_mel, dtype=float), origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
              vmin=db_range[0], vmax=db_range[1])
    ax.set_axis_off()
    return _png_bytes(fig, tight=False, dpi=100)
