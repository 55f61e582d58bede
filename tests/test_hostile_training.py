"""Hostile settings and runs: values out of range refused before any audio is read, a diverging run stopped
with the last good epoch kept, a second writer refused, torn logs and stale temp files tolerated."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import AudioclfError, ConfigError, TrainingDiverged
from audioclf.ownership import mark_folder
from audioclf.runs import RunDir
from audioclf.training import trainer

TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("hostile") / "data", n_per_class=4, seconds=1.0, seed=2)


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size=0: expected"),
    ("train.batch_size=-5", "train.batch_size=-5: expected"),
    ("train.num_workers=-1", "train.num_workers=-1: expected"),
    ("seed=-1", "seed=-1: expected"),
    ("seed=1e23", "seed"),
    ("train.epochs=0", "train.epochs=0: expected"),
    ("data.clip_seconds=0", "data.clip_seconds=0.0: expected"),
    ("data.sample_rate=0", "data.sample_rate=0: expected"),
    ("train.lr=nan", "train.lr=nan: expected"),
    ("train.label_smoothing=1.5", "train.label_smoothing=1.5: expected"),
    ("model.hidden=abc", "hidden='abc'; expected"),
    ("train.device=tpu", "device='tpu'"),
    ("train.scheduler=nope", "unknown scheduler 'nope'"),
    ("train.optimizer=nope", "unknown optimizer 'nope'"),
    ("train.monitor=nope", "train.monitor=nope: not a validation metric"),
    ("data.train_subset={per: [device]}", "data.train_subset={'per': ['device']}: expected"),
    ("data.train_subset={n: 0}", "data.train_subset={'n': 0}: expected"),
    ("train.track=wandb", "train.track: unknown tracker 'wandb'"),
    ("data.add=[{train: 1.0}]", "data.add[0]={'train': 1.0}: expected"),
    ("data.add=[{path: nowhere.csv, train: -1}]", "data.add[0]: the shares train/val/test must be numbers >= 0"),
    ("data.add=[{path: nowhere.csv}]", "data.add[0]:"),
    ("data.add=[{path: nowhere.csv, train: 1, made_with: 3}]", "data.add[0].made_with=3: expected the transform's"),
    ("data.add=[{path: nowhere/manifest.csv, train: 1, made_with: {name: impulse_response, each: true}}]",
     "data.add[0]: nowhere/augment_settings.json: cannot read how the copies were made"),
])
def test_bad_values_are_one_line_before_any_audio_is_decoded(data, tmp_path, monkeypatch, capsys, override, message):
    from audioclf.data import dataset

    monkeypatch.setattr(dataset, "_decode_one", lambda *a, **k: pytest.fail("decoded before the check"))
    extra = ["model.name=mlp"] if override.startswith("model.") else []
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY, *extra, override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("out", ["a-file", "/proc/audioclf-cannot-be-here"])
def test_an_out_that_cannot_be_a_folder_is_one_line(data, tmp_path, capsys, out):
    target = tmp_path / out if out == "a-file" else out
    if out == "a-file":
        target.write_text("not a folder")
    code = main(["train", "--data", str(data), "--out", str(target), *TINY, "train.epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and f"out={target}" in err and "Traceback" not in err, err


def test_a_diverging_run_stops_and_keeps_the_last_good_epoch(data, tmp_path, monkeypatch):
    real = trainer.train_one_epoch
    calls = []

    def second_epoch_diverges(*args, **kwargs):
        values = real(*args, **kwargs)
        calls.append(1)
        return {**values, "loss": math.nan} if len(calls) == 2 else values

    monkeypatch.setattr(trainer, "train_one_epoch", second_epoch_diverges)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"loss became NaN at epoch 2; lower train.lr \(now 0.001\); .* keeps "
                                               r"epoch 1"):
        trainer.train(_cfg(data, out, "train.epochs=4", "train.ema=0"))
    run = RunDir(out)
    assert run.load_checkpoint("last")["epoch"] == 1  # nothing of the NaN epoch was saved
    summary = run.read_summary()
    assert summary["best_epoch"] == 1 and "epoch 2" in summary["stopped"] and summary["metrics"]["test"]
    assert [r["epoch"] for r in run.read_metrics()] == [1]


def test_a_huge_learning_rate_is_one_line_not_a_metrics_error(data, tmp_path, capsys):
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY, "train.epochs=2", "train.lr=1e10"])
    err = capsys.readouterr().err
    assert code == 2 and "loss became NaN at epoch 1; lower train.lr (now 1e+10)" in err, err


def test_a_second_writer_is_refused_naming_the_holder(data, tmp_path):
    out = mark_folder(tmp_path / "run", "run")  # a run folder, as the first writer made it
    # A live holder: this very process (as a concurrent training in another process would be).
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "earlier"}))
    with pytest.raises(AudioclfError, match=rf"in use by another run \(pid {os.getpid()}"):
        trainer.train(_cfg(data, out, "train.epochs=1"))
    assert sorted(p.name for p in out.iterdir()) == [".audioclf-owner", ".lock"]  # nothing of the second run was written


def test_a_stale_lock_and_temp_files_from_a_killed_run_are_cleaned(data, tmp_path):
    out = tmp_path / "run"
    (mark_folder(out, "run") / "checkpoints").mkdir()  # the folder of a run killed while it trained
    (out / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "since": "before"}))
    (out / "checkpoints" / ".best.tmp-1a2b3c4d.pt").write_bytes(b"half a checkpoint")
    trainer.train(_cfg(data, out, "train.epochs=1"))
    assert not list(out.rglob(".*.tmp-*")) and not (out / ".lock").exists()


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_resume_tolerates_a_torn_metrics_line_and_keeps_the_skipped_list(data, tmp_path):
    bad = data / sorted(p.name for p in data.iterdir() if p.is_dir())[0] / "zz-broken.wav"
    bad.write_text("not audio")
    try:
        out = tmp_path / "run"
        trainer.train(_cfg(data, out, "train.epochs=1"))
        run = RunDir(out)
        with open(run.metrics, "a") as handle:
            handle.write('{"epoch": 2, "train/lo')  # killed mid-line
        trainer.train(_cfg(data, out, "train.epochs=2"), resume=True)
    finally:
        bad.unlink()
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert [os.path.basename(s["path"]) for s in run.read_summary()["skipped"]] == ["zz-broken.wav"]


def _cfg(data, out, *extra):
    from audioclf.config import load_config

    return load_config(None, [f"data.path={data}", f"out={out}", *TINY, *extra])


def test_an_unforeseen_failure_is_still_one_line_with_a_hint(data, tmp_path, monkeypatch, capsys):
    from audioclf.workflows import run as run_module

    def boom(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(run_module, "train", boom)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 1 and "unexpected OSError" in err and "run with -v" in err and "Traceback" not in err, err
    with pytest.raises(OSError):
        main(["-v", "train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY])


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_retrained_folder_keeps_nothing_of_the_earlier_run(data, tmp_path):
    pytest.importorskip("onnxruntime")
    from audioclf.deploy.export import export_onnx, read_metadata
    from audioclf.deploy.onnx_predictor import OnnxPredictor

    out = tmp_path / "run"
    trainer.train(_cfg(data, out, "train.epochs=1"))
    run = RunDir(out)
    first = run.run_id()
    onnx = export_onnx(out)
    assert read_metadata(onnx)["run_id"] == first and run.load_checkpoint("best")["run_id"] == first
    kept = tmp_path / "old.onnx"
    kept.write_bytes(onnx.read_bytes())
    (out / "quantization.json").write_text(json.dumps({"run_id": first, "method": "static"}))
    # A fresh run into the same folder removes the earlier run's artifacts as it starts ...
    trainer.train(_cfg(data, out, "train.epochs=1", "seed=1"))
    assert run.run_id() != first and not onnx.exists() and not (out / "quantization.json").exists()
    # ... and an earlier export put back next to it is refused, not used.
    onnx.write_bytes(kept.read_bytes())
    with pytest.raises(AudioclfError, match="exported from an earlier run"):
        OnnxPredictor(onnx)
    OnnxPredictor(kept)  # outside a run folder: nothing to compare with


def test_export_into_a_run_folder_in_use_is_refused(data, tmp_path):
    pytest.importorskip("onnxruntime")
    from audioclf.deploy.export import export_onnx

    out = tmp_path / "run"
    trainer.train(_cfg(data, out, "train.epochs=1"))
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    with pytest.raises(AudioclfError, match="in use by another run"):
        export_onnx(out)
    assert not list(out.glob("model*.onnx"))
    (out / ".lock").unlink()
    assert export_onnx(out).exists() and not (out / ".lock").exists()


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_non_empty_out_needs_resume_or_overwrite(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), *TINY, "train.epochs=1"]
    assert main(args) == 0
    first = RunDir(out).run_id()
    assert main(args) == 2
    assert "already holds an earlier run; add --resume" in capsys.readouterr().err
    assert RunDir(out).run_id() == first  # untouched
    assert main([*args, "--overwrite"]) == 0 and RunDir(out).run_id() != first
    assert main([*args[:-1], "train.epochs=2", "--resume"]) == 0


def test_overwrite_never_deletes_a_folder_audioclf_did_not_write(data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "train.epochs=1", "--overwrite"]) == 2
    assert "it is not deleted" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_resuming_with_more_epochs_continues_the_learning_rate_instead_of_jumping(data, tmp_path):
    out = tmp_path / "run"
    cosine = ["train.scheduler=cosine", "train.ema=0", "train.patience=null"]
    trainer.train(_cfg(data, out, "train.epochs=3", *cosine))
    trainer.train(_cfg(data, out, "train.epochs=6", *cosine), resume=True)
    lrs = [r["lr"] for r in RunDir(out).read_metrics()]
    # A 3-epoch cosine ends at 2.5e-4; a 6-epoch one is at 5e-4 at epoch 4: recomputing it would jump back up.
    assert len(lrs) == 6 and all(b <= a * (1 + 1e-9) for a, b in zip(lrs, lrs[1:])), lrs  # never back up
    assert 0 < lrs[3] < lrs[2]  # and not down to 0 either (a finished cosine's next rate)
