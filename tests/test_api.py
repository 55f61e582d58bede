"""The Python API reads like the CLI: a round trip from a dict config, predictions with labels, and the
module's examples run as doctests."""

from __future__ import annotations

import doctest

import pytest

import audioclf
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.workflows import api


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
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


TINY = {"train": {"epochs": 1, "batch_size": 16}, "features": {"n_mels": 32, "n_fft": 512, "hop_length": 320}}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("api") / "clips", n_per_class=3, seconds=1.0, seed=5)


def test_every_config_section_is_a_keyword_and_training_shows_the_cli_header_unless_quiet(clips, tmp_path, capsys):
    run = audioclf.train(clips, out=tmp_path / "loud", data={"sample_rate": 8000, "clip_seconds": 1.0}, seed=3,
                         limits={"max_params": 10**7}, augment={"mixup_alpha": 0.0}, **TINY)
    config = run.root.joinpath("config.yaml").read_text()
    assert "sample_rate: 8000" in config and "seed: 3" in config and f"path: {clips}" in config
    err = " ".join(capsys.readouterr().err.split())
    # What `audioclf train` prints (tests/test_cli.py), from the same reporter: header, epochs, why it stopped.
    assert "every value below is recorded in config.yaml" in err and "sample rate 8000 Hz (set)" in err
    assert "epoch 1 train loss" in err and "trained all 1 epochs; best epoch 1" in err
    quiet = audioclf.train(out=tmp_path / "quiet", data={"path": clips, "clip_seconds": 1.0}, quiet=True, **TINY)
    assert quiet.best_epoch == 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"trian": {"epochs": 1}}, r"audioclf.train\(\): unknown keyword 'trian'; did you mean train\?"),
    ({"epochs": 1}, r"audioclf.train\(\): unknown keyword 'epochs'"),
    ({"data": {"path": "elsewhere/"}}, r"the data path is given twice \(.*clips and data.path=elsewhere/\)"),
    ({"data": 5}, "config key 'data': expected a mapping, got 5"),
])
def test_a_keyword_that_is_no_section_is_one_line_naming_it(clips, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        audioclf.train(clips, out=tmp_path / "run", quiet=True, **kwargs)
    assert not (tmp_path / "run").exists()


def test_a_run_and_its_exported_models_answer_the_same_calls_alike(clips, tmp_path):
    import numpy as np

    # The network alone: an exported file is the network (tests/test_members.py: a run that kept its classical
    # member says so when exported).
    network_alone = {**TINY, "train": {**TINY["train"], "ensemble": "none"}}
    run = audioclf.train(clips, out=tmp_path / "run", quiet=True, **network_alone)
    files = sorted(clips.rglob("*.wav"))[:3]
    features_onnx, wave_onnx = run.export(), run.export(with_frontend=True)
    with pytest.raises(ConfigError, match="max_drop=-1"):  # the CLI's gate options reach quantize_run
        run.quantize(calibration=8, max_drop=-1)
    int8_onnx = run.quantize(calibration=8, max_drop=None)["int8"]["path"]
    expected = run.predict(files, device="cpu")
    for model, atol in ((run, 1e-6), (audioclf.load(run.root), 1e-6), (audioclf.load(features_onnx), 1e-4),
                        (audioclf.load(wave_onnx), 1e-4), (audioclf.load(int8_onnx), 0.25)):
        assert model.classes == run.classes and model.task == run.task == "single_label"
        [single], many, listed = model.predict(files[0]), model.predict(files), model.predict_files(files)
        assert [p.path for p in many] == [p.path for p in listed] == [str(f) for f in files]
        assert np.allclose(single.probs, many[0].probs) and all(np.allclose(a.probs, b.probs) for a, b in zip(many, listed))
        assert all(np.allclose(p.probs, e.probs, atol=atol) for p, e in zip(many, expected)), model
        assert model.top_k(many[0].probs, 2)[0] == (many[0].label, pytest.approx(many[0].probs.max()))
        timeline = model.timeline(files[0])
        assert timeline.classes == run.classes and timeline.probs.shape[1] == len(run.classes)


def test_audioclf_run_shows_progress_as_the_cli_does_unless_quiet(monkeypatch):
    from audioclf.console import ConsoleReporter

    given = []
    monkeypatch.setattr(api, "run_config", lambda cfg, reporter=None, **kwargs: given.append(reporter))
    audioclf.run({})
    audioclf.run({}, quiet=True)
    assert isinstance(given[0], ConsoleReporter) and given[1] is None
