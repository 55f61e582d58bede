"""Regressions of bugs found at the seams between the audio and embedding runners, the CLI and the library.

Each test drives the tool the way a user did when the bug showed up (the CLI, a README command), so it
keeps guarding the behaviour whatever the modules behind it are called.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audioclf.cli import main
from audioclf.config import load_config
from audioclf.data.embeddings import make_synthetic_embeddings
from audioclf.data.importers.audioset import write_class_labels, write_h5
from audioclf.data.synth.demo import make_demo_dataset

REPO = Path(__file__).resolve().parents[1]
TINY_AUDIO = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
              "features.hop_length=320"]


@pytest.fixture(scope="module")
def embedding_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("embeddings")
    write_h5(root / "bal_train.h5", make_synthetic_embeddings(240, seed=11))
    write_h5(root / "eval.h5", make_synthetic_embeddings(80, seed=12))
    write_class_labels(root / "class_labels_indices.csv", [f"sound {i}" for i in range(527)])
    return root


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("audio") / "data", n_per_class=6, seconds=1.0, seed=5)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_bug1_train_on_an_embedding_folder_without_a_recipe(embedding_folder, tmp_path):
    """`audioclf train --data <AudioSet embeddings>` failed: the S5 defaults reached dict configs only."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(embedding_folder), "--out", str(out), "train.epochs=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multi_label" and summary["model"]["name"] == "embedding_lstm"
    config = (out / "config.yaml").read_text()
    assert "batch_size: 128" in config and "monitor: mAP" in config  # the embeddings' own defaults


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_bug2_embedding_runs_honour_or_refuse_every_key(embedding_folder, tmp_path):
    """Label smoothing, MixUp, SpecAugment and backbone_lr were silently ignored on embeddings."""
    common = ["train", "--data", str(embedding_folder), "train.epochs=1", "model.name=embedding_mlp_s5",
              "model.hidden=32"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "smooth"), "train.label_smoothing=0.2"]) == 0
    assert main([*common, "--out", str(tmp_path / "mixed"), "augment.mixup_alpha=0.4"]) == 0
    # Same seed, same data order: an ignored setting would give the identical loss, bit for bit.
    plain = _records(tmp_path / "plain")[0]["train/loss"]
    assert _records(tmp_path / "smooth")[0]["train/loss"] != plain
    assert _records(tmp_path / "mixed")[0]["train/loss"] != plain
    for key in ("augment.spec=LD", "train.backbone_lr=0.0001", "augment.mixup_on=waveform",
                "data.trim_silence=true"):
        out = tmp_path / key.split("=")[0]
        assert main([*common, "--out", str(out), key]) == 2
        assert not (out / "config.yaml").exists(), f"{key}: refused, but a run directory was written"


def test_bug2_refusals_name_the_key(embedding_folder, tmp_path, capsys):
    main(["train", "--data", str(embedding_folder), "--out", str(tmp_path / "r"), "augment.spec=LD"])
    assert "augment.spec" in capsys.readouterr().err


def _stage_recipe(tmp_path: Path, data: Path) -> Path:
    recipe = tmp_path / "two_stages.yaml"
    recipe.write_text(
        f"data: {{path: {data}}}\n"
        "train: {epochs: 1, batch_size: 16}\n"
        "stages:\n  - name: first\n  - name: second\n    init_from: '@first'\n")
    return recipe


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_bug3_resume_continues_every_stage(audio_folder, tmp_path):
    """`train <recipe with stages> --resume` retrained every stage from scratch."""
    recipe, out = _stage_recipe(tmp_path, audio_folder), tmp_path / "stages"
    assert main(["train", str(recipe), "--out", str(out), *TINY_AUDIO]) == 0
    first_before = _records(out / "first")
    assert [r["epoch"] for r in first_before] == [1]
    assert main(["train", str(recipe), "--out", str(out), "--resume", *TINY_AUDIO, "train.epochs=2"]) == 0
    first_after = _records(out / "first")
    assert [r["epoch"] for r in first_after] == [1, 2]
    assert first_after[0] == first_before[0], "epoch 1 was trained again instead of resumed"
    assert [r["epoch"] for r in _records(out / "second")] == [1, 2]


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_bug3_resume_continues_every_fold(audio_folder, tmp_path):
    """`--resume` was not passed to cross-validation either."""
    out = tmp_path / "cv"
    args = ["train", "--data", str(audio_folder), "--out", str(out), "cv=2", "train.epochs=1", *TINY_AUDIO]
    assert main(args) == 0
    before = {fold: _records(out / f"fold_{fold}") for fold in (1, 2)}
    assert main([*args, "--resume", "train.epochs=2"]) == 0
    for fold in (1, 2):
        after = _records(out / f"fold_{fold}")
        assert [r["epoch"] for r in after] == [1, 2] and after[0] == before[fold][0]


def test_bug4_the_readme_config_path_resolves():
    """`audioclf train configs/demo.yaml` failed: configs/configs was a dangling symlink."""
    path = REPO / "configs" / "demo.yaml"
    assert path.is_file(), "configs/demo.yaml (the README's path) does not resolve"
    assert load_config(path).model["name"] == "small_cnn"


@pytest.mark.parametrize("name", ["error", "error_rate", "eer", "mse", "mae", "loss", "log_loss", "kd_loss",
                                  "accuracy", "balanced_accuracy", "macro_f1", "lwlrap", "mAP", "pSR"])
def test_bug5_metric_direction_has_one_answer(name):
    """metrics.higher_is_better and early stopping's metric_mode disagreed for error, eer, mse, mae."""
    from audioclf.metrics import higher_is_better
    from audioclf.training.callbacks import metric_mode

    lower = name in ("error", "error_rate", "eer", "mse", "mae", "loss", "log_loss", "kd_loss")
    assert higher_is_better(name) is (not lower)
    assert metric_mode(name) == ("min" if lower else "max")
