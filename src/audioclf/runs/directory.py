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

import contextlib
import io
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import read_yaml
from ..errors import AudioclfError, ConfigError, UnsafeFileError
from ..files import atomic_write_bytes, atomic_write_text, jsonable, load_torch_file
from ..models.classifier import AudioClassifier
from ..models.complexity import Report, complexity_report

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_HELD: dict[str, int] = {}  # run folders this process holds the lock of -> nesting depth


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # half-written by a writer killed at that moment: stale


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's process still runs (another host's lock counts as held: we cannot tell)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# Files that mark a folder as audioclf output: a run, a search, cross-validation or a staged recipe.
OUTPUT_MARKERS = ("config.yaml", "summary.json", "cv_summary.json", "search.json", LOCK_FILE)


def is_audioclf_output(root: Path) -> bool:
    """Whether ``root`` (or a folder right inside it: a stage, a fold) holds what audioclf writes."""
    folders = [Path(root), *(p for p in Path(root).iterdir() if p.is_dir())]
    return any((folder / name).exists() for folder in folders for name in OUTPUT_MARKERS)


def live_lock_holder(root: Path) -> dict[str, Any] | None:
    """Who holds ``root``'s run lock, when that process still runs (None: free, or its writer is gone)."""
    holder = _read_lock(Path(root) / LOCK_FILE)
    return holder if holder is not None and _alive(holder) else None


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

    def claim(self) -> "RunDir":
        """Make sure the run can be written here before any data is read: ``root`` is (or becomes) a folder."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"out={self.root}: is a file, not a folder; choose another --out")
        self._created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"out={self.root}: cannot create the run directory ({exc.strerror})") from None
        return self

    @contextlib.contextmanager
    def lock(self) -> Iterator["RunDir"]:
        """Hold ``RUN/.lock`` while writing the run: a second writer (another training into the same --out)
        is refused with the holder's pid, host and start time, instead of mixing two runs' files. A lock
        whose process is gone (killed) is taken over. Temp files a killed writer left are removed."""
        path = self.root / LOCK_FILE
        key = str(self.root.resolve())
        if key in _HELD:  # this process already writes here (quantize exporting into its run): nested
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                other = _read_lock(path)
                if other is not None and _alive(other):
                    raise AudioclfError(
                        f"{self.root} is in use by another run (pid {other.get('pid')} on {other.get('host')}, since "
                        f"{other.get('since')}); wait for it to finish or choose another --out") from None
                path.unlink(missing_ok=True)  # its writer is gone
        else:
            raise AudioclfError(f"{self.root}: cannot take the run lock {path}")
        with os.fdopen(fd, "w") as handle:
            json.dump(holder, handle)
        _HELD[key] = 1
        try:
            for stale in self.root.rglob(".*.tmp-*"):  # halves of files a killed writer never renamed
                stale.unlink(missing_ok=True)
            yield self
        finally:
            del _HELD[key]
            path.unlink(missing_ok=True)
            if getattr(self, "_created", False):  # a run refused before writing anything leaves no folder
                with contextlib.suppress(OSError):
                    self.root.rmdir()

    def run_id(self) -> str | None:
        """The id of the run this folder holds (summary.json; None while the first run is still training)."""
        return self.read_summary().get("run_id")

    def derived_from_this_run(self, artifact: dict[str, Any] | None, what: str) -> bool:
        """Whether an artifact's recorded ``run_id`` is this folder's run; a stale one (made from an earlier
        run in the same folder) is reported and must not be used."""
        current = self.run_id()
        recorded = (artifact or {}).get("run_id")
        if current is None or recorded == current:
            return True
        log.warning("%s: %s comes from an earlier run in this folder (run %s, now %s); ignored — make it again",
                    self.root, what, recorded, current)
        return False

    def reset(self) -> None:
        """Before a fresh run writes here: remove what an earlier run in this folder left (checkpoints, summary,
        report, plots, exports, quantization), so nothing of it can be read as this run's."""
        for name in ("summary.json", "report.md", "metrics.jsonl", "quantization.json", "tracking.json"):
            (self.root / name).unlink(missing_ok=True)
        shutil.rmtree(self.root / "tensorboard", ignore_errors=True)  # event files of the earlier run's curves
        for export in self.root.glob("model*.onnx"):  # model.wave.onnx, model.features.int8.onnx, ...
            export.unlink(missing_ok=True)
        for folder, pattern in ((self.root / "checkpoints", "*.pt"), (self.plots, "*.png")):
            for path in folder.glob(pattern) if folder.is_dir() else ():
                path.unlink(missing_ok=True)

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
        return read_yaml(self.config)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(jsonable(summary), indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text()) if self.summary.exists() else {}

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(jsonable(record)) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The logged epochs; a line cut short by a kill (the last one) is dropped, not an error."""
        if not self.metrics.exists():
            return []
        records = []
        for number, line in enumerate(self.metrics.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: line %d is incomplete (an interrupted write); ignored", self.metrics, number)
        return records

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
            return load_torch_file(path)
        except UnsafeFileError:
            raise
        except Exception as exc:  # a foreign or damaged file: say which one
            raise AudioclfError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None


def default_run_dir(model_name: str | None) -> Path:
    """``runs/<date>-<time>-<model>``: where a run goes when no ``out`` is given."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{model_name or 'model'}"


def load_model(run_dir: str | Path, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[AudioClassifier, dict[str, Any]]:
    """A run's trained model (in eval mode, on ``device``) and its checkpoint state (task, classes, config,
    input facts): the one way every command rebuilds a model from a run directory."""
    state = RunDir(run_dir).require().load_checkpoint(which)
    model = AudioClassifier.from_spec(state["spec"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def run_complexity(run_dir: str | Path, which: str = "best", batchnorm_folded: bool = True) -> Report:
    """The complexity report of a trained run's network on the input it was trained on.

    The front-end is excluded: the DCASE limits count the network only (feature extraction runs before it),
    and the per-band standardisation folds into the first layer's affine in deployment.
    """
    model, _ = load_model(run_dir, which)
    return complexity_report(model.backbone, tuple(model.backbone.audioclf_spec["input_shape"]), batchnorm_folded)
