"""``train.track``: a run also goes to MLflow (params, per-epoch metrics, final metrics, artifacts) and TensorBoard
(per-epoch scalars), with the same numbers as its own metrics.jsonl; a resumed run continues its MLflow run."""

from __future__ import annotations

import json

import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.runs import RunDir

TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.num_workers=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("tracking") / "data", n_per_class=3, seconds=1.0, seed=5)


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_run_goes_to_mlflow_and_tensorboard_with_its_own_numbers(data, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.chdir(tmp_path)  # the default MLflow store: ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "train.epochs=2",
                 "train.track=[mlflow, tensorboard]"]) == 0
    run = RunDir(out)
    records = run.read_metrics()

    state = json.loads((out / "tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(state["tracking_uri"])
    tracked = client.get_run(state["mlflow_run_id"])
    assert tracked.info.status == "FINISHED" and tracked.data.params["train.lr"] == str(run.read_config()["train"]["lr"])
    history = client.get_metric_history(tracked.info.run_id, "val/accuracy")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val/accuracy"]) for r in records]
    summary = run.read_summary()
    assert tracked.data.metrics["final/test/accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"report.md", "summary.json", "config.yaml", "plots"} <= artifacts

    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("train/loss")
    assert [(s.step, s.value) for s in scalars] == [(r["epoch"], pytest.approx(r["train/loss"])) for r in records]

    # --resume with more epochs continues the same MLflow run: epochs 1-3 in one history.
    assert main(["train", "--out", str(out), "--resume", "train.epochs=3"]) == 0
    history = client.get_metric_history(tracked.info.run_id, "val/accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.search_runs([tracked.info.experiment_id])) == 1


def test_tracking_is_checked_before_any_audio_is_read(data, tmp_path, monkeypatch, capsys):
    import builtins

    from audioclf.data import dataset

    monkeypatch.setattr(dataset, "_decode_one", lambda *a, **k: pytest.fail("decoded before the check"))
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "a"), *TINY, "train.track=wandb"])
    assert code == 2 and "train.track: unknown tracker 'wandb'; expected mlflow, tensorboard" in capsys.readouterr().err
    real_import = builtins.__import__

    def without_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_mlflow)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "b"), *TINY, "train.track=mlflow"])
    assert code == 2 and "pip install 'audioclf[tracking]'" in capsys.readouterr().err
