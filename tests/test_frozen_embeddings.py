"""train.frozen_embeddings: a pretrained backbone embeds each window once, only the head trains, and the run
keeps the whole model; the validation scores from the cache equal the whole model's on the audio."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audioclf import run
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.deploy.predictor import Predictor
from audioclf.errors import ConfigError
from audioclf.models.registry import create_model
from audioclf.runs import RunDir

FEATURES = ["features.n_mels=64", "features.n_fft=512", "features.hop_length=320"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("frozen") / "data", n_per_class=8, seconds=1.0, seed=3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A CNN6 backbone checkpoint the test writes itself (a stand-in for the PANNs file: same keys)."""
    torch.manual_seed(0)
    backbone = create_model("cnn6", n_classes=2, input_shape=(1, 64, 51)).backbone
    path = tmp_path_factory.mktemp("weights") / "cnn6.pth"
    torch.save({"model": backbone.state_dict()}, path)
    return path, {k: v.clone() for k, v in backbone.state_dict().items()}


def _train(demo, weights, out, *extra):
    return run({}, overrides=[f"data.path={demo}", f"out={out}", "model.name=cnn6", f"model.weights={weights[0]}",
                              "train.frozen_embeddings=true", "train.epochs=30", "train.lr=0.03", *FEATURES, *extra])


@pytest.fixture(scope="module")
def frozen_run(demo, weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    out = _train(demo, weights, root / "run", f"data.cache_dir={cache}").runs[0]
    return RunDir(out), cache


def test_only_the_head_changes_and_the_run_is_a_whole_model(frozen_run, weights, demo):
    run_dir, _ = frozen_run
    best = run_dir.load_checkpoint("best")
    state = best["model"]
    for name, tensor in weights[1].items():
        assert torch.equal(state[f"backbone.backbone.{name}"], tensor), name  # frozen: bit-identical
    config = run_dir.read_config()
    assert config["model"]["freeze"] == "all" and config["augment"]["mixup_alpha"] == 0.0
    # The run predicts from audio like any other.
    wav = sorted(demo.rglob("*.wav"))[0]
    [prediction] = Predictor.from_run(run_dir.root, device="cpu").predict_files([wav])
    assert prediction.error is None and prediction.probs.shape == (len(best["classes"]),)


def test_cached_validation_equals_the_whole_model_on_the_audio(frozen_run):
    run_dir, _ = frozen_run
    summary = run_dir.read_summary()
    logged = {row["epoch"]: row for row in map(json.loads, run_dir.metrics.read_text().splitlines())}
    at_best = logged[summary["best_epoch"]]
    # metrics.jsonl: the head on cached window embeddings; summary.json: the whole model on the files.
    assert at_best["val/accuracy"] == pytest.approx(summary["metrics"]["val"]["accuracy"], abs=1e-9)
    assert at_best["val/loss"] == pytest.approx(summary["metrics"]["val"]["loss"], rel=1e-4)


def test_the_head_learns(frozen_run):
    summary = frozen_run[0].read_summary()
    chance = 1 / len(summary["classes"])
    assert summary["metrics"]["val"]["accuracy"] >= 2 * chance


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_second_run_reads_the_cache(frozen_run, demo, weights, tmp_path, monkeypatch):
    _, cache = frozen_run
    files = sorted((cache / "embeddings").glob("*.npz"))
    assert [f.name.split("-")[0] for f in files] == ["train", "val"]
    from audioclf.training.inputs import frozen

    def fail(*args, **kwargs):
        raise AssertionError("extracted again although the cache holds these embeddings")

    monkeypatch.setattr(frozen, "_extract", fail)
    out = _train(demo, weights, tmp_path / "again", f"data.cache_dir={cache}", "model.head=dense",
                 "model.head_hidden=[32]").runs[0]
    assert RunDir(out).read_summary()["best_epoch"] >= 1


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_damaged_cache_file_is_extracted_again(frozen_run, demo, weights, tmp_path):
    _, cache = frozen_run
    copy = tmp_path / "cache"
    (copy / "embeddings").mkdir(parents=True)
    for f in (cache / "embeddings").glob("*.npz"):
        (copy / "embeddings" / f.name).write_bytes(b"not an npz file")
    out = _train(demo, weights, tmp_path / "run", f"data.cache_dir={copy}").runs[0]
    assert RunDir(out).read_summary()["metrics"]["val"]["accuracy"] >= 0
    for f in (copy / "embeddings").glob("*.npz"):
        assert np.load(f)["vectors"].ndim == 2  # rewritten


@pytest.mark.parametrize("extra, key", [
    (["augment.spec=LD"], "augment.spec"),
    (["augment.mixup_alpha=0.2"], "augment.mixup_alpha"),
    (["model.freeze=none"], "model.freeze"),
    (["data.eval_crop=center"], "data.eval_crop"),
])
def test_settings_it_cannot_honour_are_refused(demo, weights, tmp_path, extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _train(demo, weights, tmp_path / "run", *extra)
    assert not (tmp_path / "run").exists()


def test_random_weights_and_models_without_embeddings_are_refused(demo, weights, tmp_path):
    with pytest.raises(ConfigError, match="model.weights is not set"):
        run({}, overrides=[f"data.path={demo}", f"out={tmp_path / 'a'}", "model.name=cnn6",
                           "train.frozen_embeddings=true"])
    with pytest.raises(ConfigError, match="embedding head"):
        _train(demo, weights, tmp_path / "b", "model.head=simple_cnn")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
