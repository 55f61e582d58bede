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
import hashlib
import io
import json
import logging
import numbers
import os
import shutil
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from ..calibration import DECISIONS_FILE
from ..config import check_section_ranges, read_yaml
from ..data.audio import MAX_SAMPLE_RATE, MAX_SECONDS, MIN_SAMPLE_RATE
from ..errors import AudioclfError, ConfigError, UnsafeFileError
from ..features import FeatureConfig, n_frames
from ..files import atomic_write_bytes, atomic_write_text, jsonable, load_torch_file
from ..models.classifier import AudioClassifier
from ..models.complexity import Report, complexity_report
from ..ownership import OWNER_FILE, claim_folder
from ..tasks import TASKS

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
QUANTIZATION = "quantization.json"
CHECKPOINTS = ("best", "last")
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

    def claim(self, resume: bool = False) -> "RunDir":
        """Make sure the run can be written here before any data is read: ``root`` is (or becomes) a folder
        marked as a run (:mod:`audioclf.ownership`). A fresh run is refused in a folder with files but no run
        marker: :meth:`reset` would delete what is there. ``resume`` continues any run folder, also one from
        before the marker (its ``config.yaml`` and checkpoints are what is read)."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"out={self.root}: is a file, not a folder; choose another --out")
        self._created = not self.root.exists()
        try:
            if resume:
                self.root.mkdir(parents=True, exist_ok=True)
            else:
                claim_folder(self.root, "run")
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
                    if os.listdir(self.root) == [OWNER_FILE]:
                        (self.root / OWNER_FILE).unlink()
                    self.root.rmdir()

    def run_id(self) -> str | None:
        """The id of the run this folder holds (summary.json; None while the first run is still training)."""
        return self.read_summary().get("run_id")

    def checkpoint_sha256(self, which: str = "best") -> str | None:
        """sha256 of a checkpoint file's bytes (None: there is none)."""
        path = self.checkpoint(which)
        if not path.is_file():
            return None
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def stale_reason(self, artifact: dict[str, Any] | None) -> str | None:
        """Why an artifact (an export's metadata, quantization.json) is not made from this folder's current
        checkpoint, or None when it is (or when the folder holds no run to compare with). The run id tells an
        earlier run in the same folder; the checkpoint's hash (stamped by export) tells an earlier checkpoint
        of this run, which ``train --resume`` replaces while keeping the run id."""
        artifact = artifact if isinstance(artifact, dict) else {}
        current, recorded = self.run_id(), artifact.get("run_id")
        if current is not None and recorded != current:
            return f"from an earlier run in {self.root} (run {recorded or 'unknown'}, the folder now holds run {current})"
        which = artifact.get("checkpoint") if artifact.get("checkpoint") in CHECKPOINTS else "best"
        digest, recorded = self.checkpoint_sha256(which), artifact.get("checkpoint_sha256")
        if digest is None or recorded == digest:
            return None
        if not recorded:
            return f"without the hash of the {self.checkpoint(which)} it came from (an older audioclf, or edited)"
        return f"from an earlier {self.checkpoint(which)} (it changed since, e.g. by train --resume)"

    def derived_from_this_run(self, artifact: dict[str, Any] | None, what: str, again: str = "make it again") -> bool:
        """Whether an artifact was made from this folder's current checkpoint (:meth:`stale_reason`); a stale
        one is reported and must not be used."""
        reason = self.stale_reason(artifact)
        if reason is not None:
            log.warning("%s: %s was made %s; ignored — %s", self.root, what, reason, again)
        return reason is None

    def read_quantization(self) -> dict[str, Any] | None:
        """``quantization.json`` when it is well formed and made from the current checkpoint, else None: a
        damaged, hand-edited or stale file is left out with a warning naming it, never half read."""
        path = self.root / QUANTIZATION
        if not path.exists():
            return None
        again = f"run audioclf quantize {self.root} again"
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
            log.warning("%s: not readable JSON (%s); ignored — %s", path, type(exc).__name__, again)
            return None
        problem = _quantization_problem(report)
        if problem is not None:
            log.warning("%s: %s; ignored — %s", path, problem, again)
            return None
        return report if self.derived_from_this_run(report, QUANTIZATION, again) else None

    def reset(self) -> None:
        """Before a fresh run writes here: remove what an earlier run in this folder left (checkpoints, summary,
        report, plots, exports, quantization, decisions), so nothing of it can be read as this run's."""
        for name in ("summary.json", "report.md", "metrics.jsonl", QUANTIZATION, "tracking.json", DECISIONS_FILE):
            (self.root / name).unlink(missing_ok=True)
        shutil.rmtree(self.root / "tensorboard", ignore_errors=True)  # event files of the earlier run's curves
        shutil.rmtree(self.root / "members", ignore_errors=True)  # an earlier run's ensemble members
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
        """The checkpoint's state, with ``checkpoint_sha256``: the hash of its file (what exports record, so a
        later reader can tell whether the checkpoint changed since)."""
        path = self.checkpoint(which)
        if not path.exists():
            raise AudioclfError(f"{path}: checkpoint not found")
        # Hashed before it is loaded: should a training replace the file in between, the hash is the older
        # file's, and what is made from this state reads as stale (refused), never the other way round.
        digest = self.checkpoint_sha256(which)
        try:
            state = load_torch_file(path)
        except UnsafeFileError:
            raise
        except Exception as exc:  # a foreign or damaged file: say which one
            raise AudioclfError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict):
            raise AudioclfError(f"{path}: not an audioclf checkpoint (holds a {type(state).__name__}, not a dict)")
        return {**state, "checkpoint_sha256": digest}


def _quantization_problem(report: Any) -> str | None:
    """What is wrong with a quantization.json's content (None: the fields report.md reads are there, typed)."""
    if not isinstance(report, dict):
        return f"holds a {type(report).__name__}, not a JSON object"
    number = (int, float)
    for key, kind in (("method", str), ("fp32", dict), ("int8", dict), ("drop", dict), ("size_ratio", number)):
        if not isinstance(report.get(key), kind) or isinstance(report.get(key), bool):
            return f"'{key}' is missing or not a {kind.__name__ if isinstance(kind, type) else 'number'}"
    for key in ("fp32", "int8"):
        part = report[key]
        if not isinstance(part.get("metrics"), dict) or not isinstance(part.get("bytes"), int):
            return f"'{key}' lacks 'metrics' (an object) or 'bytes' (an integer)"
    for key, values in (("fp32.metrics", report["fp32"]["metrics"]), ("int8.metrics", report["int8"]["metrics"]),
                        ("drop", report["drop"])):
        # None: a metric that was not finite (jsonable writes NaN as null)
        if not all(v is None or (isinstance(v, number) and not isinstance(v, bool)) for v in values.values()):
            return f"'{key}' holds values that are not numbers"
    return None


def default_run_dir(model_name: str | None) -> Path:
    """``runs/<date>-<time>-<model>``: where a run goes when no ``out`` is given."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{model_name or 'model'}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_model_facts(facts: dict[str, Any], where: str | Path) -> None:
    """The classes, task, sample rate and clip length a model was saved with (a checkpoint's state, an ONNX
    file's metadata), checked before anything is sized by them: one line naming ``where`` and the key. A
    crafted clip_samples of 10**12 would otherwise allocate gigabytes for every file predicted."""
    classes = facts.get("classes")
    if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != len(classes)):
        raise AudioclfError(f"{where}: 'classes' = {_shown(classes)}: expected a non-empty list of distinct names")
    if facts.get("task") not in TASKS:
        raise AudioclfError(f"{where}: 'task' = {_shown(facts.get('task'))}: expected one of {', '.join(TASKS)}")
    if facts.get("input_kind", "audio") != "audio":  # embedding runs: no sample rate, no clip
        return
    rate, clip = facts.get("sample_rate"), facts.get("clip_samples")
    if not _whole(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioclfError(f"{where}: 'sample_rate' = {_shown(rate)}: expected {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    # The longest clip: as long as the longest file decoded at once (data.max_seconds' bound).
    longest = int(MAX_SECONDS * rate)
    if not _whole(clip) or not 1 <= clip <= longest:
        raise AudioclfError(f"{where}: 'clip_samples' = {_shown(clip)}: expected 1-{longest} samples "
                            f"(at most {MAX_SECONDS:g} s at {rate} Hz)")


def _check_spec(state: dict[str, Any], path: Path) -> None:
    """The model a checkpoint's ``spec`` names fits its classes and clip (checked before it is built: its
    sizes come from there)."""
    check_model_facts(state, path)
    spec = state.get("spec")
    backbone = spec.get("backbone") if isinstance(spec, dict) else None
    if not isinstance(backbone, dict) or not isinstance(state.get("model"), dict):
        raise AudioclfError(f"{path}: not an audioclf checkpoint (no 'spec' naming a model, or no 'model' weights)")
    kwargs = backbone.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise AudioclfError(f"{path}: 'kwargs' = {_shown(kwargs)} in its spec: expected a mapping of model settings")
    check_section_ranges("model", kwargs, str(path))  # widths and depths a crafted spec could make huge
    if backbone.get("n_classes") != len(state["classes"]):
        raise AudioclfError(f"{path}: 'n_classes' = {_shown(backbone.get('n_classes'))} in its spec, but it has "
                            f"{len(state['classes'])} classes")
    if state.get("input_kind", "audio") != "audio":
        return
    try:  # the input shape training gave the backbone for this clip (training.inputs.audio.build_classifier)
        features = FeatureConfig.from_dict(spec["features"]) if spec.get("features") else None
    except AudioclfError as exc:
        raise AudioclfError(f"{path}: {exc}") from None
    clip = state["clip_samples"]
    expected = [clip] if features is None else [1, features.n_bins, n_frames(features, clip)]
    if list(backbone.get("input_shape") or []) != expected:
        raise AudioclfError(f"{path}: 'input_shape' = {_shown(backbone.get('input_shape'))} in its spec; its "
                            f"clip of {clip} samples gives {expected}")


def load_model(run_dir: str | Path, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[AudioClassifier, dict[str, Any]]:
    """A run's trained model (in eval mode, on ``device``) and its checkpoint state (task, classes, config,
    input facts): the one way every command rebuilds a model from a run directory. A checkpoint whose facts
    or weights do not fit the model its spec names (crafted, or copied in from another run) is one line."""
    run = RunDir(run_dir).require()
    path = run.checkpoint(which)
    state = run.load_checkpoint(which)
    _check_spec(state, path)
    model = AudioClassifier.from_spec(state["spec"])
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # RuntimeError: missing, unexpected or other shapes
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise AudioclfError(f"{path}: its weights do not fit the {state['spec']['backbone'].get('name')} model its "
                            f"spec names ({detail[:200]})") from None
    return model.to(device).eval(), state


def run_complexity(run_dir: str | Path, which: str = "best", batchnorm_folded: bool = True) -> Report:
    """The complexity report of a trained run's network on the input it was trained on.

    The front-end is excluded: the DCASE limits count the network only (feature extraction runs before it),
    and the per-band standardisation folds into the first layer's affine in deployment.
    """
    model, _ = load_model(run_dir, which)
    return complexity_report(model.backbone, tuple(model.backbone.audioclf_spec["input_shape"]), batchnorm_folded)
