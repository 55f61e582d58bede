"""A shared checkpoint is a program: every place that loads one refuses a file naming Python objects, before
any of it runs, with one line (hostile-input cases for checkpoints and weight files)."""

from __future__ import annotations

import shutil

import pytest
import torch

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import UnsafeFileError
from audioclf.files import load_torch_file
from audioclf.runs import RunDir

TINY = ["train.epochs=1", "train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32",
        "features.n_fft=512", "features.hop_length=320"]


class Payload:
    """What a crafted checkpoint carries: unpickling it calls ``exec``, which writes the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A good run, and a copy whose best.pt and last.pt each carry one extra key holding the payload."""
    root = tmp_path_factory.mktemp("hostile")
    data = make_demo_dataset(root / "data", n_per_class=6, seconds=1.0, seed=5)
    good = root / "good"
    assert main(["train", "--data", str(data), "--out", str(good), *TINY]) == 0
    crafted = root / "crafted"
    shutil.copytree(good, crafted)
    marker = root / "code-ran"
    for which in ("best", "last"):
        path = RunDir(crafted).checkpoint(which)
        state = load_torch_file(path)
        state["notes"] = Payload(marker)
        torch.save(state, path)
    return good, crafted, data, marker


def _commands(good, crafted, data, tmp):
    wav = str(sorted(data.rglob("*.wav"))[0])
    best = str(RunDir(crafted).checkpoint("best"))
    return {
        "predict": ["predict", str(crafted), wav],
        "evaluate": ["evaluate", str(crafted)],
        "export": ["export", str(crafted), "--out", str(tmp / "m.onnx")],
        "quantize": ["quantize", str(crafted), "--calibration", "4"],
        "complexity": ["complexity", str(crafted)],
        "ensemble": ["ensemble", str(good), str(crafted)],
        "init_from": ["train", "--data", str(data), "--out", str(tmp / "init"), f"init_from={crafted}", *TINY],
        "distill": ["distill", "--teacher", str(crafted), "--out", str(tmp / "student"), f"data.path={data}", *TINY],
        "resume": ["train", "--out", str(crafted), "--resume", "train.epochs=2"],
        "model.weights": ["train", "--data", str(data), "--out", str(tmp / "weights"), "model.name=cnn6",
                          f"model.weights={best}", *TINY],
    }


@pytest.mark.parametrize("place", ["predict", "evaluate", "export", "quantize", "complexity", "ensemble",
                                   "init_from", "distill", "resume", "model.weights"])
def test_a_crafted_checkpoint_never_runs(runs, place, tmp_path, capsys):
    good, crafted, data, marker = runs
    pytest.importorskip("onnx") if place in ("export", "quantize") else None
    code = main(_commands(good, crafted, data, tmp_path)[place])
    err = capsys.readouterr().err
    assert not marker.exists(), f"{place}: the payload ran"
    assert code == 2, err
    assert "refused" in err and "builtins.exec" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_the_loader_refuses_legacy_pickles_and_plain_pickles_too(tmp_path):
    marker = tmp_path / "code-ran"
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": torch.ones(1), "p": Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError, match=r"\bexec\b"):
        load_torch_file(legacy)
    assert not marker.exists()


def test_numpy_state_in_old_checkpoints_still_loads(tmp_path):
    import numpy as np

    path = tmp_path / "last.pt"
    torch.save({"rng": {"numpy": np.random.get_state()}, "m": np.float64(0.25), "w": torch.ones(2)}, path)
    state = load_torch_file(path)
    np.random.set_state(state["rng"]["numpy"])  # a usable generator state, as written
    assert state["m"] == 0.25 and torch.equal(state["w"], torch.ones(2))
