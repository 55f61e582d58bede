"""``kill -9`` at fixed points (the ``AUDIOCLF_CRASH_AT`` hook in :mod:`audioclf.files`): whatever moment a crash
hits, what is left is consistent, the next command cleans up after it, and ``--resume`` gives the run an
uninterrupted one would have given."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.files import CRASH_ENV
from audioclf.runs import RunDir

pytestmark = pytest.mark.slow  # each case starts and kills a training process

TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.epochs=3", "train.num_workers=0"]


def killed(args: list[str], at: str) -> subprocess.CompletedProcess:
    """``audioclf ARGS`` in a fresh process, SIGKILLed at the crash point ``at`` (asserted to have happened)."""
    env = {**os.environ, CRASH_ENV: at, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-m", "audioclf", *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, f"not killed at {at}: rc {done.returncode}\n{done.stderr[-2000:]}"
    return done


def temp_files(root) -> list[str]:
    return sorted(p.name for p in root.rglob(".*.tmp-*"))


def weights(run_dir) -> dict[str, torch.Tensor]:
    return RunDir(run_dir).load_checkpoint("last")["model"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("kills") / "data", n_per_class=4, seconds=1.0, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("kills") / "reference"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("at", ["temp:last.pt@2", "write:last.pt@2", "write:best.pt"])
def test_a_run_killed_while_saving_resumes_to_the_uninterrupted_result(data, uninterrupted, tmp_path, at):
    out = tmp_path / "run"
    killed(["train", "--data", str(data), "--out", str(out), *TINY], at)
    if at.startswith("temp:"):
        assert temp_files(out) == [n for n in temp_files(out) if n.startswith(".last.tmp-")] != []
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *TINY]) == 0
    assert temp_files(out) == [] and not (out / ".lock").exists()
    ours, reference = RunDir(out), RunDir(uninterrupted)
    assert [r["epoch"] for r in ours.read_metrics()] == [1, 2, 3]
    for mine, theirs in zip(ours.read_metrics(), reference.read_metrics()):
        mine.pop("seconds"), theirs.pop("seconds")
        assert mine == theirs
    for name, tensor in weights(uninterrupted).items():
        assert torch.equal(weights(out)[name], tensor), name
    assert ours.read_summary()["metrics"] == reference.read_summary()["metrics"]


def test_a_fresh_run_killed_after_writing_its_config_leaves_no_earlier_model(data, uninterrupted, tmp_path, capsys,
                                                                            caplog):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    killed(["train", "--data", str(data), "--out", str(out), "--overwrite", *TINY, "seed=7"], "write:config.yaml")
    assert RunDir(out).read_config()["seed"] == 7
    assert not list((out / "checkpoints").glob("*.pt")) and not (out / "summary.json").exists()
    capsys.readouterr()
    # Nothing of the earlier run passes for this one: reading it is a one-line error, not the old model.
    for command in (["evaluate", str(out)], ["predict", str(out), str(next(data.rglob("*.wav")))]):
        assert main(command) != 0
        err = capsys.readouterr().err
        assert "not a run directory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    # --resume has no epoch to continue from: it runs the killed run (seed 7) again from the beginning.
    assert main(["train", "--data", str(data), "--out", str(out), "--resume", *TINY]) == 0
    assert "starting it again from the beginning" in caplog.text
    run = RunDir(out)
    assert run.read_config()["seed"] == 7 and [r["epoch"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.read_summary()["metrics"] != RunDir(uninterrupted).read_summary()["metrics"]


def test_a_killed_quantization_leaves_nothing_half_done_and_reruns(uninterrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    args = ["quantize", str(out), "--calibration", "8"]
    killed(args, "temp:quantization.json")
    # The INT8 file may be in place, but without its report the run has no INT8 results, and the lock and the
    # temp file of the dead process are still there...
    assert not (out / "quantization.json").exists() and (out / ".lock").exists() and temp_files(out)
    assert main(args) == 0  # ...until the next writer takes the lock over and cleans up
    report = json.loads((out / "quantization.json").read_text())
    assert report["run_id"] == RunDir(out).run_id() and temp_files(out) == [] and not (out / ".lock").exists()
    assert "INT8" in (out / "report.md").read_text()
