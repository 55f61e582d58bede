"""Multi-stage recipes: several runs from one config, each with its own overrides.

A stage is a mapping of config overrides plus a few stage keys:

* ``name`` — its run directory is ``<out>/<name>``;
* ``kind`` — ``train`` (default) or ``distill`` (from ``teachers``: names of earlier stages, with ``T`` and
  ``alpha``);
* ``init_from: "@<stage>"`` — start from an earlier stage's weights (e.g. pre-train on FSD2019's noisy
  labels, fine-tune on the curated ones);
* ``quantize: N`` — INT8 post-training quantization with N calibration clips after training (a model that
  loses more than 1 point there is reported and left without its INT8 file);
  ``export: true`` — write the ONNX model.

After the last stage ``<out>/report.md`` compares every stage (for DCASE 2022 Task 1: log loss, accuracy,
parameters and MMACs of the baseline, teacher, student fp32 and student int8). With ``resume`` every stage
continues from its own ``last.pt`` (a stage not started yet starts), so an interrupted chain picks up
where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides, config_from_dict
from ..data.prepare import check_made_with
from ..console import format_number, markdown_table
from ..errors import ConfigError, DataError
from ..files import atomic_write_text
from ..training.distributed import barrier, world
from ..metrics import headline_metrics
from ..ownership import inside, mark_folder
from ..runs import RunDir

log = logging.getLogger(__name__)

STAGE_KEYS = ("name", "kind", "teachers", "T", "alpha", "quantize", "export")


@dataclass
class Stage:
    name: str
    config: Config
    kind: str = "train"
    teachers: list[str] = field(default_factory=list)
    T: float = 2.0
    alpha: float = 0.5
    quantize: int | None = None
    export: bool = False


def _flatten(prefix: str, value: Any) -> list[str]:
    """Nested overrides -> ``a.b=value`` strings (dict-valued keys such as data.options stay whole)."""
    if isinstance(value, dict) and prefix.split(".")[-1] not in ("options", "scheduler_args"):
        return [item for key, sub in value.items() for item in _flatten(f"{prefix}.{key}" if prefix else key, sub)]
    import yaml

    return [f"{prefix}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]


def stages_root(cfg: Config) -> Path:
    """Where a recipe's stages go: ``<out>/<stage name>``."""
    return Path(cfg.out or "runs/stages")


def _check_added_files(stages: list[Stage]) -> None:
    """A later stage's ``data.add`` file (e.g. dcase2022_task1's offline IR copies) must exist before the first
    stage trains: otherwise hours of earlier stages run before the one-line error."""
    for stage in stages:
        for k, entry in enumerate(stage.config.data.add or []):
            path = entry.get("path") if isinstance(entry, dict) else None
            if path and not Path(path).exists():
                raise DataError(f"stage {stage.name}: data.add[{k}].path={path}: not found (make it first, e.g. with "
                                "audioclf augment; the recipe's comments say how)")
            if path:
                check_made_with(entry, f"stage {stage.name}: data.add[{k}]")


def plan_stages(cfg: Config) -> list[Stage]:
    """The stages of ``cfg``, each with its full config; references to other stages checked."""
    root = stages_root(cfg)
    base = cfg.to_dict()
    base["stages"] = []
    stages: list[Stage] = []
    for index, raw in enumerate(cfg.stages):
        if not isinstance(raw, dict):
            raise ConfigError(f"stages[{index}]: expected a mapping of overrides, got {raw!r}")
        raw = dict(raw)
        extras = {key: raw.pop(key) for key in STAGE_KEYS if key in raw}
        name = str(extras.get("name", f"stage{index + 1}"))
        where = f"stages[{index}] ({name})"
        out = inside(root, name, f"stages[{index}].name")  # its run folder, checked before anything is written
        if "stages" in raw or "cv" in raw:
            raise ConfigError(f"{where}: a stage cannot set 'stages' or 'cv'")
        earlier = {stage.name: Path(stage.config.out) for stage in stages}
        init = raw.get("init_from")
        if isinstance(init, str) and init.startswith("@"):
            if init[1:] not in earlier:
                raise ConfigError(f"{where}: init_from={init} names no earlier stage ({', '.join(earlier) or 'none'})")
            raw["init_from"] = str(earlier[init[1:]])
        try:
            config = config_from_dict(apply_overrides(base, _flatten("", raw) + [f"out={out}"]))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        kind = extras.get("kind", "train")
        if kind not in ("train", "distill"):
            raise ConfigError(f"{where}: kind={kind!r}; expected train or distill")
        teachers = list(extras.get("teachers", []))
        if kind == "distill" and not teachers:
            raise ConfigError(f"{where}: a distill stage needs teachers: [<earlier stage>, ...]")
        for teacher in teachers:
            if teacher not in earlier:
                raise ConfigError(f"{where}: teacher '{teacher}' is not an earlier stage ({', '.join(earlier) or 'none'})")
        quantize = extras.get("quantize")
        stages.append(Stage(name, config, kind, teachers, float(extras.get("T", 2.0)), float(extras.get("alpha", 0.5)),
                            None if quantize in (None, False) else int(quantize), bool(extras.get("export", False))))
    return stages


def train_stages(cfg: Config, resume: bool = False, reporter=None) -> list[Path]:
    """Run every stage in order (then quantize/export where asked); returns the run directories.

    ``resume``: a stage whose run directory has a ``last.pt`` continues from it; the others start fresh.
    """
    from ..compress.distill import distill
    from ..deploy.export import export_onnx
    from ..deploy.quantize import QuantizationRefused, quantize_run
    from ..training.trainer import train

    root = stages_root(cfg)
    runs: dict[str, Path] = {}
    stages = plan_stages(cfg)
    _check_added_files(stages)
    if world().main:
        mark_folder(root, "stages")
    for stage in stages:
        resumed = resume and RunDir(stage.config.out).checkpoint("last").exists()
        if reporter:
            reporter.message(f"stage {stage.name} ({stage.kind}{', resumed' if resumed else ''}) -> {stage.config.out}")
        if stage.kind == "distill":
            run = distill([runs[t] for t in stage.teachers], stage.config, T=stage.T, alpha=stage.alpha,
                          resume=resumed, reporter=reporter)
        else:
            run = train(stage.config, resume=resumed, reporter=reporter)
        runs[stage.name] = Path(run)
        if not world().main:  # under torchrun rank 0 alone writes: quantized and exported models, the report
            continue
        if stage.quantize:
            try:
                quantize_run(run, calibration=stage.quantize)
            except QuantizationRefused as refused:  # the later stages still train; the report has no INT8 row
                log.warning("stage %s: %s", stage.name, refused)
        if stage.export:
            export_onnx(run)
    if world().main:
        write_stages_report(root, runs)
    barrier(world())  # the next step of a caller may read what rank 0 wrote
    return list(runs.values())


def write_stages_report(root: Path, runs: dict[str, Path]) -> Path:
    """``<root>/report.md``: one row per stage (and per INT8 model) with its test metrics and size."""
    rows, names = [], []
    for name, run in runs.items():
        summary = RunDir(run).read_summary()
        test = summary.get("metrics", {}).get("test") or summary.get("metrics", {}).get("val", {})
        params = summary.get("model", {}).get("parameters", {})
        macs = params.get("macs")
        names = names or headline_metrics(test)
        rows.append([name, summary.get("model", {}).get("name"), *[test.get(m) for m in names],
                     params.get("deployed_params", params.get("total")), None if macs is None else f"{macs / 1e6:.2f}"])
        q = RunDir(run).read_quantization()
        if q is not None:
            rows.append([f"{name} (int8)", rows[-1][1], *[q["int8"]["metrics"].get(m) for m in names], rows[-1][-2],
                         rows[-1][-1]])
    header = ["stage", "model", *[f"{m} (test)" for m in names], "parameters", "MMACs"]
    text = "\n".join([f"# Stages: `{root.name}`", "", markdown_table(header, rows), "",
                      *[f"- {name}: [{format_number(str(run))}]({Path(run).name}/report.md)" for name, run in runs.items()], ""])
    path = root / "report.md"
    atomic_write_text(path, text)
    return path
