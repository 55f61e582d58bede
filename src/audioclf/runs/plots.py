"""The pictures of a run: learning curves and confusion matrices (PNG, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_bytes

__all__ = ["plot_curves", "plot_confusion"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(records: list[dict[str, Any]], out_dir: Path, monitor: str) -> list[Path]:
    """loss.png (train vs val loss) and metrics.png (val metrics) per epoch."""
    if not records:
        return []
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("train/loss", "train"), ("val/loss", "val")):
        ax.plot(epochs, [r.get(key, np.nan) for r in records], marker="o", label=label)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / "loss.png"))

    names = sorted(
        {k for r in records for k in r if k.startswith("val/") and k != "val/loss" and "per_group" not in k}
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in names:
        values = [r.get(key, np.nan) for r in records]
        style = "-" if key == f"val/{monitor}" else "--"
        ax.plot(epochs, [np.nan if v is None else v for v in values], style, marker=".", label=key[4:])
    ax.set(xlabel="epoch", title=f"Validation metrics (monitor: {monitor})")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / "metrics.png"))
    return written


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


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
