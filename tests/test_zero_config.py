"""Zero-config choices: sized to the data, written to config.yaml, never applied to the bundled recipes."""

from __future__ import annotations

import pytest

from audioclf.config import load_config
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.runs import RunDir
from audioclf.training.averaging import ema_decay_for
from audioclf.training.inputs.zero_config import (
    COMPUTE_BUDGET_MACS,
    MAX_EPOCHS,
    MIN_EPOCHS,
    audio_defaults,
    patience_for,
    plan_epochs,
    warmup_epochs,
)
from audioclf.training.trainer import train

AUTO_KEYS = ("train.optimizer", "train.weight_decay", "train.label_smoothing", "train.scheduler", "train.epochs",
             "train.ema", "augment.mixup_alpha", "augment.spec", "augment.waveform", "data.trim_silence")


def test_epochs_follow_the_steps_within_the_compute_budget():
    # 240 clips, batch 32: 8 steps an epoch -> 375 epochs for 3,000 steps, capped at MAX_EPOCHS...
    assert plan_epochs(240, 32, macs_per_item=1, val_windows=80) == MAX_EPOCHS
    # ... and by the budget: 115 MMACs a 5-s clip (ESC-10 on small_cnn) affords about 78 epochs.
    epochs = plan_epochs(240, 32, macs_per_item=115_000_000, val_windows=80)
    assert epochs == int(COMPUTE_BUDGET_MACS // (115_000_000 * (3 * 240 + 80))) == 78
    # Large data: few epochs give the steps; never fewer than MIN_EPOCHS unless the budget says so.
    assert plan_epochs(200_000, 32, macs_per_item=1, val_windows=0) == MIN_EPOCHS
    assert plan_epochs(200_000, 32, macs_per_item=10_000_000, val_windows=0) == 1


def test_schedule_patience_and_average_scale_with_the_run():
    assert (warmup_epochs(1), warmup_epochs(20), warmup_epochs(200)) == (0, 1, 10)
    assert (patience_for(15), patience_for(200)) == (10, 50)
    assert ema_decay_for(80) == 0.9 and ema_decay_for(3000) == pytest.approx(1 - 1 / 300)
    assert ema_decay_for(10_000_000) == 0.9999


def test_spec_augment_is_sized_to_the_input():
    small = audio_defaults("single_label", (40, 51))["augment.spec"]  # the DCASE baseline's input
    assert small["freq_width"] == 5 and small["time_width"] == 5  # Park et al.'s LD would mask up to 27 x 100
    large = audio_defaults("single_label", (64, 501))["augment.spec"]
    assert large["freq_width"] == 8 and large["time_width"] == 50
    assert audio_defaults("single_label", None)["augment.spec"] == "none"  # raw-waveform models
    assert audio_defaults("multi_label", (64, 101))["train.label_smoothing"] == 0.0


def test_the_waveform_chain_builds_and_holds_the_held_out_measured_members():
    """speed_perturb and random_eq are zero-config because they raised 8 of 10 speaker-, source- and
    device-held-out splits (benchmarks/realdata.py --held-out); the chain must build as written to config.yaml."""
    import numpy as np

    from audioclf.augment.waveform import build_waveform_augment

    specs = audio_defaults("single_label", (40, 51))["augment.waveform"]
    assert [s["name"] for s in specs] == ["gain", "time_shift", "gaussian_noise", "speed_perturb", "random_eq"]
    chain = build_waveform_augment(specs)
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    out = chain(wave, 16000, np.random.default_rng(1))
    assert out.shape == wave.shape and np.isfinite(out).all()


def test_a_zero_config_run_writes_every_choice_to_its_config(tmp_path, monkeypatch):
    from audioclf.training.inputs import zero_config

    monkeypatch.setattr(zero_config, "TARGET_STEPS", 1)  # a two-epoch plan: the choices, not the training,
    monkeypatch.setattr(zero_config, "MIN_EPOCHS", 2)    # are under test
    data = make_demo_dataset(tmp_path / "data", n_per_class=4, seconds=1.0, seed=4)
    run = train(load_config(None, [f"data.path={data}", f"out={tmp_path / 'run'}", "data.sample_rate=16000",
                                   "features.n_mels=32", "features.n_fft=512", "features.hop_length=320"]))
    config = RunDir(run).read_config()
    assert config["train"]["epochs"] == 2
    assert config["train"]["balance"] == "none"  # the demo's classes are balanced: auto resolves to none
    for key in AUTO_KEYS:
        section, name = key.split(".")
        assert config[section][name] is not None, key
    assert config["train"]["patience"] == patience_for(config["train"]["epochs"])
    assert config["train"]["scheduler_args"] == {"warmup_epochs": warmup_epochs(config["train"]["epochs"])}
    # Re-running the written config reproduces the choices (nothing left to choose).
    again = load_config(RunDir(run).config)
    assert again.train.epochs == config["train"]["epochs"] and again.augment.spec == config["augment"]["spec"]


@pytest.mark.parametrize("recipe", ["demo", "fsd2019", "gtzan", "speaker_count", "dcase2022_task1"])
def test_the_recipes_keep_their_own_settings(recipe):
    """A recipe states what its reference solution did; zero-config choices must not creep in."""
    from audioclf.config import config_value

    cfg = load_config(recipe)
    assert [key for key in AUTO_KEYS if config_value(cfg, key) is None] == []
    assert cfg.train.balance == "none"  # not zero-config's auto: the references trained without balancing


def test_predict_prepares_audio_as_training_did(tmp_path):
    """Silence trimming (on by default) happens in predict too: predict and evaluate agree on every file."""
    import numpy as np

    from audioclf.data.audio import load_audio, write_audio
    from audioclf.data.manifest import Manifest
    from audioclf.deploy.predictor import Predictor
    from audioclf.workflows.evaluation import run_outputs

    data = make_demo_dataset(tmp_path / "data", n_per_class=4, seconds=1.0, seed=6)
    for path in sorted(data.rglob("*.wav"))[::3]:  # silence around some clips: trimming changes them
        wave, sr = load_audio(path)
        write_audio(path, np.concatenate([np.zeros(sr // 2), wave, np.zeros(sr)]).astype(np.float32), sr)
    run = train(load_config(None, [f"data.path={data}", f"out={tmp_path / 'run'}", "train.epochs=1",
                                   "data.sample_rate=16000", "features.n_mels=32", "features.n_fft=512",
                                   "features.hop_length=320"]))
    assert RunDir(run).read_config()["data"]["trim_silence"] == "edges"
    outputs = run_outputs(run)
    manifest = {item.id: item.path for item in Manifest.from_csv(RunDir(run).manifest)}
    predictions = Predictor.from_run(run).predict_files([manifest[i] for i in outputs.result.ids])
    np.testing.assert_allclose(np.stack([p.probs for p in predictions]), outputs.result.probs, atol=1e-5)
