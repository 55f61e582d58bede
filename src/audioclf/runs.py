"""Run directories: layout, crash-safe files, metrics log, plots and summary.

Layout of a run::

    RUN/config.yaml            resolved config (re-running it reproduces the run)
    RUN/manifest.csv           manifest snapshot with the splits actually used
    RUN/metrics.jsonl          one JSON object per epoch
    RUN/checkpoints/best.pt    best epoch by the monitored metric
    RUN/checkpoints/last.pt    last finished epoch (what --resume continues from)
    RUN/plots/*.png            loss/metric curves, confusion matrix
    RUN/summary.json           task, classes, val/test metrics, skipped files, complexity
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .data.store import atomic_write_bytes, atomic_write_text
from .errors import AudioclfError


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def checkpoint(self, which: str = "best") -> Path:
        return self.root / "checkpoints" / f"{which}.pt"

    def create(self) -> "RunDir":
        (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.plots.mkdir(parents=True, exist_ok=True)
        return self

    def require(self) -> "RunDir":
        if not self.checkpoint("best").exists() and not self.checkpoint("last").exists():
            raise AudioclfError(f"{self.root}: not a run directory (expected checkpoints/best.pt)")
        return self

    # --- files ---------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config.read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(_jsonable(summary), indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text()) if self.summary.exists() else {}

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(_jsonable(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop epochs after ``last_epoch`` (a resumed run re-does them)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def save_checkpoint(self, which: str, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.checkpoint(which), buffer.getvalue())

    def load_checkpoint(self, which: str = "best") -> dict[str, Any]:
        path = self.checkpoint(which)
        if not path.exists():
            raise AudioclfError(f"{path}: checkpoint not found")
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a foreign or damaged file: say which one
            raise AudioclfError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None


def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, NaN/inf to null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- plots ---------------------------------------------------------------------------------------
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
