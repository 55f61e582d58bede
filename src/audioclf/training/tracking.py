"""Experiment tracking where users already look: MLflow and TensorBoard, switched on by ``train.track``.

``train.track=mlflow`` (or ``tensorboard``, or ``[mlflow, tensorboard]``) sends what the run directory records to
those tools as well; the run directory stays complete without them.

* **MLflow** (Zaharia et al. 2018): the resolved config as params, every epoch's ``metrics.jsonl`` values as
  metrics (step = epoch), the final validation and test metrics, and ``config.yaml``, ``summary.json``,
  ``report.md`` and the plots as artifacts. The store is ``$MLFLOW_TRACKING_URI`` when set, else a local
  SQLite file ``./mlruns/mlflow.db`` with artifacts in ``./mlruns/artifacts`` (``mlflow ui --backend-store-uri
  sqlite:///mlruns/mlflow.db`` shows them); the experiment is ``$MLFLOW_EXPERIMENT_NAME`` or "audioclf". A
  resumed run continues its MLflow run (its id is kept in ``RUN/tracking.json``).
* **TensorBoard**: the same per-epoch scalars as event files in ``RUN/tensorboard/`` (``tensorboard --logdir
  runs/`` shows every run).

Both are optional dependencies: ``pip install 'audioclf[tracking]'``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..config import flat_config
from ..console import PassOn
from ..errors import ConfigError
from ..files import atomic_write_text

__all__ = ["TRACKERS", "Trackers", "check_tracking"]

TRACKERS = ("mlflow", "tensorboard")
_MODULES = {"mlflow": "mlflow", "tensorboard": "torch.utils.tensorboard"}
_STATE_FILE = "tracking.json"


def check_tracking(names: list[str]) -> None:
    """Known tracker names whose packages are installed: checked before any data is read."""
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"train.track: unknown tracker {name!r}; expected {', '.join(TRACKERS)}")
        try:
            __import__(_MODULES[name])
        except ImportError:
            raise ConfigError(f"train.track={name} needs the {name} package: pip install 'audioclf[tracking]'") from None


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


class _Mlflow:
    def __init__(self, run_root: Path, config: dict[str, Any], resumed: bool):
        from mlflow.tracking import MlflowClient

        local = Path.cwd() / "mlruns"
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            local.mkdir(exist_ok=True)
            uri = f"sqlite:///{local / 'mlflow.db'}"
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "audioclf")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=None if os.environ.get("MLFLOW_TRACKING_URI") else (local / "artifacts").as_uri())
        state_path = run_root / _STATE_FILE
        previous = json.loads(state_path.read_text()).get("mlflow_run_id") if resumed and state_path.exists() else None
        if previous:
            self.run_id = previous
            self.client.update_run(previous, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=run_root.name,
                                         tags={"audioclf.run_dir": str(run_root.resolve())})
            self.run_id = run.info.run_id
            params = {key: str(value) for key, value in flat_config(config).items()}
            from mlflow.entities import Param

            items = [Param(key[:250], value[:6000]) for key, value in params.items()]
            for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
                self.client.log_batch(self.run_id, params=items[start:start + 100])
            atomic_write_text(state_path, json.dumps({"mlflow_run_id": self.run_id, "tracking_uri": uri}) + "\n")

    def epoch(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(record["epoch"])
        metrics = [Metric(key, value, now, step) for key, value in _numbers(record).items() if key != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_root: Path, summary: dict[str, Any], status: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = [Metric(f"final/{split}/{name}", value, now, 0)
                 for split, values in summary.get("metrics", {}).items() for name, value in _numbers(values).items()
                 if "/" not in name]
        if final:
            self.client.log_batch(self.run_id, metrics=final)
        for name in ("config.yaml", "summary.json", "report.md"):
            if (run_root / name).exists():
                self.client.log_artifact(self.run_id, str(run_root / name))
        if (run_root / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(run_root / "plots"), "plots")
        self.client.set_terminated(self.run_id, status)


class _TensorBoard:
    def __init__(self, run_root: Path, config: dict[str, Any], resumed: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_root / "tensorboard"))
        if not resumed:
            self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flat_config(config).items()))

    def epoch(self, record: dict[str, Any]) -> None:
        step = int(record["epoch"])
        for key, value in _numbers(record).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, run_root: Path, summary: dict[str, Any], status: str) -> None:
        step = int(summary.get("best_epoch") or 0)
        for split, values in summary.get("metrics", {}).items():
            for name, value in _numbers(values).items():
                if "/" not in name:
                    self.writer.add_scalar(f"final/{split}/{name}", value, step)
        self.writer.close()


class Trackers(PassOn):
    """The trackers ``train.track`` names, for one run; also a reporter wrapper (``epoch`` logs, then passes on)."""

    def __init__(self, names: list[str], run_root: Path, config: dict[str, Any], resumed: bool, inner=None):
        super().__init__(inner)
        kinds = {"mlflow": _Mlflow, "tensorboard": _TensorBoard}
        self.run_root = run_root
        self.trackers = [kinds[name](run_root, config, resumed) for name in names]

    def epoch(self, record: dict[str, Any], monitor: str, improved: bool) -> None:
        for tracker in self.trackers:
            tracker.epoch(record)
        super().epoch(record, monitor, improved)

    def finish(self, summary: dict[str, Any], failed: bool = False) -> None:
        for tracker in self.trackers:
            tracker.finish(self.run_root, summary, "FAILED" if failed else "FINISHED")
