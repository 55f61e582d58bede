"""The Python API reads like the CLI: a round trip from a dict config, predictions with labels, and the
module's examples run as doctests."""

from __future__ import annotations

import doctest

import pytest

import audioclf
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.workflows import api


def test_the_module_examples_run():
    results = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 5 and results.failed == 0


def test_train_from_a_dict_predict_evaluate_and_load(tmp_path):
    clips = make_demo_dataset(tmp_path / "clips", n_per_class=4, seconds=1.0, seed=4)
    config = {"train": {"epochs": 2, "batch_size": 16}, "features": {"n_mels": 32, "n_fft": 512, "hop_length": 320}}
    run = audioclf.train(clips, config, out=tmp_path / "run", train={"epochs": 1})  # sections win over config
    assert isinstance(run, audioclf.Run) and run.best_epoch == 1 and len(run.classes) == 8
    assert run.summary["planned_epochs"] == 1 and run.summary["counts"]["train"] > 0
    files = sorted(clips.rglob("*.wav"))[:3]
    predictions = run.predict(files)
    assert [p.path for p in predictions] == [str(f) for f in files]
    assert all(p.label == run.classes[int(p.probs.argmax())] for p in predictions)
    evaluated = run.evaluate()
    assert evaluated["metrics"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert audioclf.load(run.root).classes == run.classes
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        audioclf.train(clips, out=tmp_path / "bad", train={"epoch": 3})
