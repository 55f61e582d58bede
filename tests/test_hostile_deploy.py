"""Hostile input in the deploy paths (issue 20): stale exports after --resume, tampered quantization.json,
crafted ONNX metadata and checkpoints, and models whose outputs are not finite. Each is one line and a
non-zero exit, or the artifact left out with a warning, never a wrong answer or a traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.runs import RunDir

pytest.importorskip("onnxruntime")

# log_loss as the monitor: it improves on a resume where 8 validation clips' accuracy may not (a new best.pt)
TINY = ["train.epochs=1", "train.batch_size=16", "train.monitor=log_loss", "train.lr=0.01", "data.clip_seconds=0.5",
        "model.name=mlp", "features.n_mels=16", "features.n_fft=256", "features.hop_length=160"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny trained run (an MLP, one epoch) and its data; tests work on copies (:func:`run`)."""
    root = tmp_path_factory.mktemp("deploy")
    data = make_demo_dataset(root / "data", n_per_class=4, seconds=0.5, seed=3)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run", data


@pytest.fixture
def run(trained, tmp_path):
    source, _ = trained
    return shutil.copytree(source, tmp_path / "run")


@pytest.fixture
def wav(trained):
    return str(sorted(trained[1].rglob("*.wav"))[0])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err and len(err.strip().splitlines()) == 1, err
    return err


# --- 5: an export made before train --resume ------------------------------------------------------
def test_an_export_older_than_the_resumed_checkpoint_is_refused_until_exported_again(run, wav, capsys):
    assert main(["export", str(run), "--with-frontend"]) == 0
    onnx = run / "model.wave.onnx"
    before = RunDir(run).checkpoint_sha256()
    assert main(["train", "--out", str(run), "--resume", "train.epochs=4"]) == 0
    assert RunDir(run).checkpoint_sha256() != before  # the resumed epochs kept a better best.pt (same run id)
    capsys.readouterr()
    for command in (["predict", str(onnx), wav], ["predict", str(run), wav, "--ensemble", str(onnx)]):
        assert main(command) == 2
        err = one_line_error(capsys)
        assert str(onnx) in err and "checkpoints/best.pt" in err and "export" in err and "again" in err
    # Exported again, it answers as the resumed PyTorch run does.
    assert main(["export", str(run), "--with-frontend"]) == 0
    capsys.readouterr()
    assert main(["predict", str(onnx), wav, "--top-k", "3"]) == 0
    from_onnx = capsys.readouterr().out
    assert main(["predict", str(run), wav, "--top-k", "3"]) == 0
    assert _scores(from_onnx) == pytest.approx(_scores(capsys.readouterr().out), abs=2e-3)


def _scores(printed: str) -> dict[str, float]:
    ranked = printed.strip().split(": ", 1)[1].split(", ")
    return {label: float(p) for label, p in (item.rsplit(" ", 1) for item in ranked)}


def test_an_export_outside_any_run_folder_stays_usable(run, wav, tmp_path):
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    assert main(["export", str(run), "--out", str(alone)]) == 0
    assert main(["train", "--out", str(run), "--resume", "train.epochs=3"]) == 0
    assert main(["predict", str(alone), wav]) == 0  # nothing to compare it with
