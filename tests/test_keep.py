"""``train.keep``: which epoch's weights a run keeps and scores, the best by ``train.monitor`` or the last
(protocols that quote values "al final" of N epochs, e.g. the GTZAN report's batch size x epochs table)."""

from __future__ import annotations

import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.runs import RunDir

# min_delta 0.99: after epoch 1 no epoch counts as better (accuracy cannot rise by 0.99), so "best" is epoch 1
# and "last" is epoch 3 whatever the weights do, and the two settings must keep different checkpoints.
TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.ema=0", "train.epochs=3", "train.patience=null",
        "train.monitor=accuracy", "train.min_delta=0.99", "train.ensemble=none"]  # the network's own scores


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("keep") / "data", n_per_class=4, seconds=1.0, seed=5)


def _trained(data, out, keep: str, *extra: str):
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, f"train.keep={keep}", *extra]) == 0
    run = RunDir(out)
    return run, run.read_summary(), {r["epoch"]: r for r in run.read_metrics()}


@pytest.mark.parametrize("keep, epoch", [("last", 3), ("best", 1)])
def test_keep_scores_the_last_or_the_best_epochs_weights(data, tmp_path, keep, epoch):
    run, summary, records = _trained(data, tmp_path / keep, keep)
    assert sorted(records) == [1, 2, 3]
    assert summary["best_epoch"] == epoch and summary["kept"] == keep
    assert run.load_checkpoint("best")["epoch"] == epoch  # what predict, export and init_from load
    # The final scoring of the kept checkpoint repeats that epoch's validation, metric by metric.
    logged = {k[len("val/"):]: v for k, v in records[epoch].items() if k.startswith("val/") and "/" not in k[4:]}
    assert logged and set(logged) <= set(summary["metrics"]["val"])
    for name, value in logged.items():
        assert summary["metrics"]["val"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert summary["metrics"]["test"]


def test_keep_is_a_documented_choice(capsys):
    assert main(["config", "--list", "train"]) == 0
    assert "train.keep" in capsys.readouterr().out
    assert main(["train", "--data", "nowhere", "train.keep=final"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "train.keep='final': expected one of best, last" in err


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_score_train_logs_the_training_split_scored_as_validation_is(data, tmp_path):
    """train.score_train: every epoch's metrics.jsonl line scores the training split in eval mode (the training
    curves the speaker-counting report quotes); the kept last epoch's values are the run's final train scores."""
    _, summary, records = _trained(data, tmp_path / "scored", "last", "train.score_train=true")
    for record in records.values():
        assert {"train_eval/accuracy", "train_eval/loss"} <= set(record)
    logged = {k[len("train_eval/"):]: v for k, v in records[3].items() if k.startswith("train_eval/")}
    for name, value in logged.items():
        assert summary["metrics"]["train"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    _, _, plain = _trained(data, tmp_path / "plain", "last")
    assert not any(k.startswith("train_eval/") for record in plain.values() for k in record)  # off by default
