"""The Python API, reading like the command line: ``audioclf.train(...)`` returns a :class:`Run`, and
``audioclf.load(path)`` opens a run folder (or an exported ``.onnx`` file) to predict with.

>>> import tempfile, audioclf
>>> from audioclf.data.synth.demo import make_demo_dataset
>>> tmp = tempfile.mkdtemp()
>>> clips = make_demo_dataset(f"{tmp}/clips", n_per_class=3, seconds=1.0)
>>> run = audioclf.train(clips, out=f"{tmp}/run", train={"epochs": 1}, features={"n_mels": 32})
>>> run.classes[:3]
['am_tone', 'chirp', 'click_train']
>>> sorted(run.metrics)
['test', 'train', 'val']
>>> [p.label in run.classes for p in run.predict(sorted(clips.rglob("*.wav"))[:2])]
[True, True]
>>> audioclf.load(f"{tmp}/run").best_epoch
1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config, load_config, merge_dicts
from ..runs import RunDir
from .run import run as run_config

__all__ = ["Run", "load", "train"]


class Run:
    """A trained run folder: its results, and what can be done with it (predict, evaluate, export, quantize)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        RunDir(self.root).require()

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``: task, classes, metrics per split, best epoch, skipped files, model size."""
        return RunDir(self.root).read_summary()

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """The best checkpoint's metrics per split (``{"train": ..., "val": ..., "test": ...}``)."""
        return self.summary.get("metrics", {})

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes") or RunDir(self.root).load_checkpoint("best")["classes"])

    @property
    def best_epoch(self) -> int | None:
        return self.summary.get("best_epoch")

    def predict(self, files: list[str | Path] | str | Path, aggregate: str = "mean", device: str = "auto") -> list:
        """:class:`~audioclf.deploy.predictor.Prediction` per audio file (folders are expanded): ``.label``,
        ``.labels``, ``.probs`` in :attr:`classes` order, or ``.error`` for a file that could not be read."""
        from ..deploy.predictor import Predictor

        paths = [files] if isinstance(files, (str, Path)) else list(files)
        return Predictor.from_run(self.root, device=device).predict_files(paths, aggregate=aggregate)

    def evaluate(self, data: str | Path | None = None, split: str | None = "test") -> dict[str, Any]:
        """Metrics on the run's own ``split``, or on every item of ``data`` (a folder or CSV) with ``split=None``
        (or only its rows of ``split``), as ``audioclf evaluate`` prints them."""
        from .evaluation import evaluate_run

        return evaluate_run(self.root, data=None if data is None else str(data), split=split)

    def export(self, path: str | Path | None = None, with_frontend: bool = False, overwrite: bool = False) -> Path:
        """ONNX file of the best checkpoint (default ``RUN/model.features.onnx``, or ``RUN/model.wave.onnx`` with the
        front-end inside), checked against PyTorch; an existing ``path`` outside the run needs ``overwrite``."""
        from ..deploy.export import export_onnx

        return export_onnx(self.root, path, with_frontend=with_frontend, overwrite=overwrite)

    def quantize(self, calibration: int = 200, method: str = "auto") -> dict[str, Any]:
        """INT8 ONNX Runtime model next to the fp32 one, and the fp32 vs int8 metrics on the test split."""
        from ..deploy.quantize import quantize_run

        return quantize_run(self.root, calibration=calibration, method=method)


def train(data: str | Path | None = None, config: Config | dict[str, Any] | str | Path | None = None, *,
          out: str | Path | None = None, resume: bool = False, overwrite: bool = False, reporter=None,
          **sections: dict[str, Any]):
    """Train as ``audioclf train`` does and return the :class:`Run` (the last stage's for a staged recipe;
    one per fold, in a list, for cross-validation).

    ``data``: a folder with a sub-folder per class, or a CSV (``data.path``). ``config``: a recipe name or
    path, a dict of config sections or a :class:`~audioclf.config.Config`. ``sections``: config sections as
    dicts, merged over it, e.g. ``train={"epochs": 20}, model={"name": "cnn6"}``. A non-empty ``out`` needs
    ``resume=True`` (continue it) or ``overwrite=True`` (replace the earlier run).
    """
    if isinstance(config, (str, Path)):
        base = load_config(config).to_dict()
    elif isinstance(config, Config):
        base = config.to_dict()
    else:
        base = dict(config or {})
    top: dict[str, Any] = dict(sections)
    if data is not None:
        top = merge_dicts(top, {"data": {"path": str(data)}})
    if out is not None:
        top["out"] = str(out)
    result = run_config(merge_dicts(base, top), resume=resume, reporter=reporter, overwrite=overwrite)
    runs = [Run(path) for path in result.runs]
    return runs if result.kind == "cv" else runs[-1]


def load(path: str | Path):
    """A :class:`Run` for a run folder, or an ONNX Runtime predictor for an exported ``.onnx`` file (both
    have ``.predict``-style use: ``Run.predict(files)``, ``OnnxPredictor.predict_files(files)``)."""
    if Path(path).suffix.lower() == ".onnx":
        from ..deploy.onnx_predictor import OnnxPredictor

        return OnnxPredictor(path)
    return Run(path)
