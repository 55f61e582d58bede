"""Controlling a training run (issue 21): ``--resume`` refuses what would make config.yaml lie, the wall-time
estimate, ``train.max_minutes`` and ``train --dry-run``."""

from __future__ import annotations

import io
import sys

import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.runs import RunDir

# 5 clips of each of the 8 classes; their index is the group ("speaker"), so the split keeps groups apart.
TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "data.group_pattern=_(\\d+)\\.wav$", "train.ema=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("control") / "data", n_per_class=5, seconds=1.0, seed=4)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished 2-epoch run, and what the CLI printed while it trained."""
    out = tmp_path_factory.mktemp("control") / "run"
    capture = pytest.MonkeyPatch()  # capsys is per test; the console writes to whatever sys.stderr is now
    err = io.StringIO()
    capture.setattr(sys, "stderr", err)
    try:
        code = main(["train", "--data", str(data), "--out", str(out), *TINY, "train.epochs=2"])
    finally:
        capture.undo()
    assert code == 0, err.getvalue()
    return out, err.getvalue()


def _files(out) -> dict[str, bytes]:
    """Every file of a run folder, by relative path (to show that a refused command changed nothing)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# --- --resume refuses a change of what the run trained on ------------------------------------------------------
@pytest.mark.parametrize("change, named", [
    (["--data", "elsewhere/clips"], "data.path=elsewhere/clips"),
    (["features.n_mels=40"], "features.n_mels=40"),
    (["model.name=mlp"], "model.name=mlp"),
    (["data.clip_seconds=0.5"], "data.clip_seconds=0.5"),
])
def test_resume_with_other_data_features_or_model_is_refused_and_nothing_is_rewritten(trained, capsys, change, named):
    out, _ = trained
    before = _files(out)
    code = main(["train", "--out", str(out), "--resume", *change, "train.epochs=3"])
    err = _one_line_error(capsys)
    assert code == 2 and named in err and "--resume" in err and "--out" in err, err
    assert "was " in err  # the value the run trained on, next to the new one
    assert _files(out) == before  # config.yaml still says what ran


def test_resume_names_the_old_data_path(trained, data, capsys):
    out, _ = trained
    assert main(["train", "--out", str(out), "--resume", "--data", str(data) + "-v2", "train.epochs=3"]) == 2
    err = _one_line_error(capsys)
    assert f"data.path={data}-v2" in err and f"was {data}" in err


# --- --resume with fewer epochs than trained ---------------------------------------------------------------------
def test_resume_with_fewer_epochs_than_trained_says_so_and_writes_nothing(trained, capsys):
    out, _ = trained
    before = _files(out)
    assert main(["train", "--out", str(out), "--resume", "train.epochs=1"]) == 2
    err = _one_line_error(capsys)
    assert "already trained 2 epochs" in err and "train.epochs=1" in err, err
    assert _files(out) == before


# --- the wall-time estimate ----------------------------------------------------------------------------------------
def test_a_run_prints_a_wall_time_estimate_from_its_first_steps(trained):
    _, err = trained
    line = next((line for line in err.splitlines() if "on this machine" in line), None)
    assert line is not None, err
    assert "≈" in line and "2 epochs ×" in line, line


# --- train.max_minutes ---------------------------------------------------------------------------------------------
def test_max_minutes_is_a_documented_key_with_a_range(capsys):
    assert main(["config", "--list", "train"]) == 0
    assert "train.max_minutes" in capsys.readouterr().out
    assert main(["train", "--data", "nowhere", "train.max_minutes=0"]) == 2
    assert "train.max_minutes=0" in _one_line_error(capsys)


def test_max_minutes_ends_the_run_with_a_scored_best_checkpoint(data, tmp_path, monkeypatch, capsys):
    from audioclf.training import wall_time

    # A clock that jumps an hour ahead once training has started: the cap is hit after the first batch.
    ticks = iter([0.0])
    monkeypatch.setattr(wall_time, "_clock", lambda: next(ticks, 3600.0))
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "train.epochs=5",
                 "train.max_minutes=30"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    run = RunDir(out)
    summary = run.read_summary()
    assert [r["epoch"] for r in run.read_metrics()] == [1]  # epoch 1 cut short, validated and kept
    assert run.checkpoint("best").exists() and summary["best_epoch"] == 1
    assert summary["metrics"]["test"]  # scored on test like any finished run
    assert summary["time_cap"]["max_minutes"] == 30 and summary["time_cap"]["epoch"] == 1
    assert 0 < summary["time_cap"]["epoch_items"] < summary["counts"]["train"]
    assert "train.max_minutes=30" in summary["stopped"]
    assert "train.max_minutes=30" in err and "best epoch 1" in err
    assert "train.max_minutes=30" in (out / "report.md").read_text()


# --- train --dry-run -----------------------------------------------------------------------------------------------
def test_dry_run_prints_the_header_groups_per_split_and_estimate_and_writes_nothing(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "train.epochs=4", "--dry-run"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert not out.exists()
    assert "every value below is recorded in config.yaml" in err and "epochs 4 (set)" in err
    assert "≈" in err and "4 epochs ×" in err
    assert "group: train 3 / val 1 / test 1" in err, err
    assert "dry run: nothing trained, nothing written" in err


def test_dry_run_never_deletes_with_overwrite(trained, data, capsys):
    out, _ = trained
    before = _files(out)
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "--overwrite", "--dry-run"]) == 0
    assert _files(out) == before


def test_the_estimate_leaves_out_the_warm_up_step_and_counts_validation_as_a_third(monkeypatch):
    from audioclf.training import wall_time

    now = iter([0.0, 10.0, *[10.0 + i for i in range(1, 6)]])  # a slow first step, then 1 s per batch of 10
    monkeypatch.setattr(wall_time, "_timer", lambda: next(now))
    clock = wall_time.FirstSteps(items=100, val_items=30, epochs=48, max_minutes=5)
    lines = [clock.batch_done(10) for _ in range(6)]
    assert lines[:5] == [None] * 5
    # 0.1 s per item: 100 training items + 30 validated at a third of the cost = 11 s an epoch, 48 epochs ≈ 9 min
    assert lines[5] == "≈ 9 min on this machine (48 epochs × ~11 s); train.max_minutes=5 ends it sooner"
    assert clock.epoch_done(12.0) is None  # said once
