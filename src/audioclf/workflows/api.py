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

import dataclasses
from pathlib import Path
from typing import Any

from ..config import Config, load_config, merge_dicts
from ..errors import ConfigError
from ..registry import did_you_mean
from ..runs import RunDir
from .run import RunResult, run as run_config

__all__ = ["Run", "load", "run", "train"]


class Run:
    """A trained run folder: its results, and what can be done with it (predict, evaluate, export, quantize).

    It answers the calls an exported model (``audioclf.load("model.onnx")``) answers, with the same results:
    :attr:`classes`, :attr:`task`, :meth:`predict`, :meth:`predict_files`, :meth:`top_k`, :meth:`timeline`.
    """

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
        return list(self.summary.get("classes") or self._checkpoint()["classes"])

    @property
    def task(self) -> str:
        """``single_label`` or ``multi_label``."""
        return self.summary.get("task") or self._checkpoint()["task"]

    @property
    def best_epoch(self) -> int | None:
        return self.summary.get("best_epoch")

    def _checkpoint(self) -> dict[str, Any]:
        return RunDir(self.root).load_checkpoint("best")

    def predictor(self, device: str = "auto", tta: int = 1):
        """The best checkpoint as a :class:`~audioclf.deploy.predictor.Predictor` (with the ensemble's classical
        member when the run kept it), loaded now (so a run trained again in place is never answered from its
        earlier weights). ``tta``: test-time augmentation, copies scored per window (N times the compute)."""
        from ..deploy.predictor import Predictor

        return Predictor.from_run(self.root, device=device, tta=tta)

    def predict(self, files: list[str | Path] | str | Path, aggregate: str = "mean", device: str = "auto",
                tta: int = 1, min_confidence: float | None = None) -> list:
        """:class:`~audioclf.deploy.predictor.Prediction` per audio file (folders are expanded): ``.label``,
        ``.labels``, ``.probs`` in :attr:`classes` order, or ``.error`` for a file that could not be read.
        ``min_confidence`` (single-label): below it a prediction abstains (``.abstained``, no label)."""
        return self.predict_files([files] if isinstance(files, (str, Path)) else list(files), aggregate, device, tta,
                                  min_confidence)

    def predict_files(self, paths: list[str | Path], aggregate: str = "mean", device: str = "auto",
                      tta: int = 1, min_confidence: float | None = None) -> list:
        """:meth:`predict` for a list of files and folders (the name the predictors and ``predict`` use)."""
        predictor = self.predictor(device, tta)
        predictor.min_confidence = min_confidence
        return predictor.predict_files(paths, aggregate=aggregate)

    def top_k(self, probs, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable ``(class, probability)`` of one prediction's ``.probs``."""
        from ..deploy.predictor import top_k

        return top_k(self.classes, probs, k)

    def timeline(self, path: str | Path, device: str = "auto"):
        """Every window's probabilities against time for one long recording (``.to_csv(path)``)."""
        return self.predictor(device).timeline(path)

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

    def quantize(self, calibration: int = 200, method: str = "auto", max_drop: float | None = 1.0,
                 force: bool = False, keep_float: str | list[str] = ()) -> dict[str, Any]:
        """INT8 ONNX Runtime model next to the fp32 one, and the fp32 vs int8 metrics on the test split; as
        ``audioclf quantize``, refused (:class:`~audioclf.deploy.quantize.QuantizationRefused`) when INT8 loses
        more than ``max_drop`` points on validation here, unless ``force`` (see
        :func:`~audioclf.deploy.quantize.quantize_run`)."""
        from ..deploy.quantize import quantize_run

        return quantize_run(self.root, calibration=calibration, method=method, max_drop=max_drop, force=force,
                            keep_float=keep_float)


# What audioclf.train() takes besides config sections; a section of the same name could never be passed.
_TRAIN_KEYWORDS = ("config", "out", "resume", "overwrite", "quiet", "reporter")


def train(data: str | Path | None = None, /, config: Config | dict[str, Any] | str | Path | None = None, *,
          out: str | Path | None = None, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          reporter=None, **sections: Any):
    """Train as ``audioclf train`` does, showing the same header and progress on stderr (none with
    ``quiet=True``), and return the :class:`Run` (the last stage's for a staged recipe; one per fold, in a
    list, for cross-validation).

    ``data`` (first argument): a folder with a sub-folder per class, or a CSV (``data.path``). ``config``: a
    recipe name or path, a dict of config sections or a :class:`~audioclf.config.Config`. ``sections``: any
    config section (``data``, ``features``, ``model``, ``augment``, ``limits``, ``train``) as a dict, or a
    top-level key (``seed``, ``cv``, ``init_from``, ``stages``), merged over it, e.g.
    ``train={"epochs": 20}, data={"sample_rate": 16000}``. A non-empty ``out`` needs ``resume=True``
    (continue it) or ``overwrite=True`` (replace the earlier run). ``reporter``: another progress display.
    """
    if isinstance(config, (str, Path)):
        base = load_config(config).to_dict()
    elif isinstance(config, Config):
        base = config.to_dict()
    else:
        base = dict(config or {})
    top = _sections_over(data, sections)
    if out is not None:
        top["out"] = str(out)
    result = run_config(merge_dicts(base, top), resume=resume, reporter=_reporter(quiet, reporter),
                        overwrite=overwrite)
    runs = [Run(path) for path in result.runs]
    return runs if result.kind == "cv" else runs[-1]


def _sections_over(data: str | Path | None, sections: dict[str, Any]) -> dict[str, Any]:
    """The keyword sections of :func:`train` as a config dict: an unknown keyword is one line naming it; the
    first argument (or ``data="clips/"``, a path rather than a dict) is ``data.path``."""
    valid = [f.name for f in dataclasses.fields(Config) if f.name != "out"]
    for key in sections:
        if key not in valid:
            raise ConfigError(f"audioclf.train(): unknown keyword '{key}'"
                              f"{did_you_mean(key, [*valid, *_TRAIN_KEYWORDS])}")
    top = dict(sections)
    if isinstance(top.get("data"), (str, Path)):  # data="clips/": the path, as the first argument is
        top["data"] = {"path": top["data"]}
    section = top.get("data", {})
    if isinstance(section, dict):  # anything else is refused by the config, naming the key
        given = section.get("path")
        if data is not None and given is not None and str(given) != str(data):
            raise ConfigError(f"audioclf.train(): the data path is given twice ({data} and data.path={given})")
        path = data if data is not None else given
        top["data"] = {**section, **({"path": str(path)} if path is not None else {})}
    return top


def _reporter(quiet: bool, reporter):
    """What shows a run's progress from Python: the one given, else what the CLI shows, unless ``quiet``."""
    if reporter is not None or quiet:
        return reporter
    from ..console import ConsoleReporter

    return ConsoleReporter()


def run(cfg: Config | dict[str, Any] | str | Path, resume: bool = False, reporter=None,
        overrides: list[str] | None = None, overwrite: bool = False, *, quiet: bool = False) -> RunResult:
    """:func:`audioclf.workflows.run.run` (a whole config: a single run, every stage of a recipe, or every
    cross-validation fold), showing the CLI's header and progress on stderr unless ``quiet=True``."""
    return run_config(cfg, resume=resume, reporter=_reporter(quiet, reporter), overrides=overrides,
                      overwrite=overwrite)


def load(path: str | Path):
    """A :class:`Run` for a run folder, or an ONNX Runtime predictor for an exported ``.onnx`` file (fp32,
    with its front-end or INT8): both answer ``classes``, ``task``, ``predict(files)``,
    ``predict_files(files)``, ``top_k(probs, k)`` and ``timeline(path)`` alike."""
    if Path(path).suffix.lower() == ".onnx":
        from ..deploy.onnx_predictor import OnnxPredictor

        return OnnxPredictor(path)
    return Run(path)
