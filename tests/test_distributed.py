"""Distributed data parallel training on torchrun (gloo on CPU, 2 processes on loopback started by the tests).

What must hold: every item once per epoch over the ranks, the same weights as one process with the same global
batch, one writer, a dead rank failing the job in one line and ``--resume`` continuing it exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audioclf.cli import main
from audioclf.data.prepare import EpochShuffle, RankBatches
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.training.distributed import World, loss_weight, use_sync_batchnorm
from audioclf.workflows.launch import DistributedRunFailed, launch

# No augmentation, no dropout, no BatchNorm (model mlp): the only difference between 1 and 2 processes is then
# the order of float additions.
PLAIN = ["model.name=mlp", "train.batch_size=8", "data.sample_rate=16000", "data.clip_seconds=1.0",
         "augment.mixup_alpha=0", "augment.spec=none", "augment.waveform=[]", "features.n_mels=32"]


def torchrun(args: list[str], processes: int = 2, env: dict[str, str] | None = None, timeout: int = 240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "audioclf", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("ddp") / "data", n_per_class=6, seconds=1.0, seed=1)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- the sampler -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, batch, world", [(37, 8, 2), (37, 8, 3), (16, 8, 2), (9, 4, 4), (33, 8, 2), (5, 5, 1)])
def test_rank_batches_use_every_item_once_with_the_same_number_of_steps(n, batch, world):
    for epoch in (1, 2):
        per_rank = []
        for rank in range(world):
            sampler = RankBatches(EpochShuffle(n, seed=3), batch, rank, world)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert len({len(batches) for batches in per_rank}) == 1  # DDP needs the same number of steps
        assert all(len(b) >= 1 for batches in per_rank for b in batches)  # no rank ever gets an empty piece
        used = [i for batches in per_rank for b in batches for i in b]
        assert sorted(used) == list(range(n))  # no item lost, none twice
        sampler = RankBatches(EpochShuffle(n, seed=3), batch, 0, world)
        for step in range(len(sampler)):  # the loop's global batch size is the sum of the pieces
            assert sampler.global_size(step) == sum(len(batches[step]) for batches in per_rank)


def test_a_last_batch_smaller_than_the_ranks_joins_the_one_before():
    sampler = RankBatches(EpochShuffle(17, seed=0), 8, 0, 2)  # 8 + 8 + 1: the 1 item joins the second batch
    assert len(sampler) == 2 and [sampler.global_size(s) for s in range(2)] == [8, 9]


def test_one_process_gets_the_batches_a_plain_loader_makes():
    order = EpochShuffle(21, seed=5)
    order.set_epoch(4)
    plain = list(torch.utils.data.BatchSampler(list(order), 8, drop_last=False))
    sampler = RankBatches(EpochShuffle(21, seed=5), 8)
    sampler.set_epoch(4)
    assert list(sampler) == plain


def test_global_batch_smaller_than_the_ranks_is_refused():
    with pytest.raises(ConfigError, match="train.batch_size=2 is the global batch"):
        RankBatches(EpochShuffle(10, 0), 2, 0, 4)


def test_loss_weights_make_the_averaged_gradient_the_global_batch_gradient():
    """DDP averages the ranks' gradients; weighted by size * n_r / N they add up to one process's gradient of
    the mean loss, also for uneven pieces (5 + 4 items)."""
    torch.manual_seed(0)
    x, y, w = torch.randn(9, 3), torch.randn(9), torch.randn(3, requires_grad=True)
    whole = torch.autograd.grad(((x @ w - y) ** 2).mean(), w)[0]
    world, pieces = World(0, 2), [slice(0, 5), slice(5, 9)]
    grads = [torch.autograd.grad(((x[p] @ w - y[p]) ** 2).mean() * loss_weight(len(y[p]), 9, world), w)[0]
             for p in pieces]
    torch.testing.assert_close(sum(grads) / 2, whole)


def test_sync_batchnorm_on_cpu_processes_is_a_one_line_error():
    with pytest.raises(ConfigError, match="GPUs only"):
        use_sync_batchnorm(torch.nn.BatchNorm1d(3), torch.device("cpu"), World(0, 2))
    converted = use_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)), torch.device("cpu"), World())
    assert isinstance(converted[0], torch.nn.SyncBatchNorm)  # one process: converted, acts as BatchNorm


def test_gpus_without_gpus_is_a_one_line_error(capsys, data, tmp_path):
    wanted = torch.cuda.device_count() + 1  # one more than this machine has, whatever it has
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--gpus", str(wanted)]) == 2
    err = capsys.readouterr().err
    assert f"--gpus {wanted}: this machine has" in err and "Traceback" not in err


@pytest.mark.parametrize("n, message", [(0, "--gpus 0: expected at least 1"), (-2, "--gpus -2: expected at least 1")])
def test_bad_gpu_counts_are_one_line_errors(capsys, data, tmp_path, n, message):
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--gpus", str(n)]) == 2
    assert message in capsys.readouterr().err


def test_a_stray_world_size_is_a_one_line_error(capsys, data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), *PLAIN]) == 2
    err = capsys.readouterr().err
    assert "WORLD_SIZE=2 is set but RANK is not: start the processes with torchrun" in err
    assert not (tmp_path / "r").exists()  # refused before anything is written


# --- two processes ------------------------------------------------------------------------------------------
@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_two_processes_train_like_one_with_the_same_global_batch(data, tmp_path):
    args = ["train", "--data", str(data), "train.epochs=2", *PLAIN]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    result = torchrun([*args, "--out", str(tmp_path / "two")])
    assert result.returncode == 0, result.stderr[-2000:]
    one = torch.load(tmp_path / "one/checkpoints/last.pt", weights_only=False)
    two = torch.load(tmp_path / "two/checkpoints/last.pt", weights_only=False)
    for key in ("train_model", "model"):  # raw weights and their moving average
        for name, tensor in one[key].items():
            torch.testing.assert_close(two[key][name], tensor, atol=1e-6, rtol=1e-5)  # float summation order
    # Validation split over the ranks and gathered: the same metrics as one process.
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        assert a["epoch"] == b["epoch"]
        for key in a:
            if key.startswith(("val/", "train/")):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    # One writer: one metrics line per epoch, one results table, no lock or temp file left behind.
    run = tmp_path / "two"
    assert [m["epoch"] for m in metrics(run)] == [1, 2]
    assert result.stdout.count("Results (") == 1
    assert not list(run.rglob("*.tmp*")) and not (run / ".lock").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["train"] == json.loads((tmp_path / "one/summary.json").read_text())["counts"]["train"]


@pytest.mark.slow
def test_a_killed_rank_fails_the_job_in_one_line_and_resume_continues_it_exactly(data, tmp_path):
    """Rank 0 (the writer) is killed right after epoch 2's last.pt; the survivor and the launcher say so in one
    line; --resume on 2 processes ends with the same metrics as an uninterrupted 2-process run."""
    args = ["train", "--data", str(data), "train.epochs=4", *PLAIN]
    whole = torchrun([*args, "--out", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = torchrun([*args, "--out", str(tmp_path / "run")], env={"AUDIOCLF_CRASH_AT": "write:last.pt@2"})
    assert killed.returncode != 0
    assert "rank 1: another training process stopped" in killed.stderr
    assert "start the job again with --resume" in killed.stderr

    # The --gpus launcher on CPUs (what --gpus runs once it has checked the GPUs): one line naming the epoch kept.
    os.environ["AUDIOCLF_CRASH_AT"] = "write:last.pt@1"
    try:
        with pytest.raises(DistributedRunFailed, match=r"a training process failed .*keeps epoch 3: continue with .*--gpus 2 --resume"):
            launch([*args, "--out", str(tmp_path / "run"), "--resume"], 2, out=str(tmp_path / "run"))
    finally:
        del os.environ["AUDIOCLF_CRASH_AT"]
    resumed = torchrun([*args, "--out", str(tmp_path / "run"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert drop(metrics(tmp_path / "run")) == drop(metrics(tmp_path / "whole"))
    a = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "whole/checkpoints/last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
def test_the_seed_gives_the_same_run_for_the_same_number_of_processes(data, tmp_path):
    """With augmentation and dropout on (each rank its own random draws, from the seed and its rank)."""
    args = ["train", "--data", str(data), "train.epochs=2", "train.batch_size=8", "data.sample_rate=16000",
            "data.clip_seconds=1.0", "features.n_mels=32"]
    for name in ("a", "b"):
        result = torchrun([*args, "--out", str(tmp_path / name)])
        assert result.returncode == 0, result.stderr[-2000:]
    drop = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert drop(metrics(tmp_path / "a")) == drop(metrics(tmp_path / "b"))


@pytest.mark.slow
def test_stages_and_embedding_runs_train_under_torchrun(data, tmp_path):
    """A two-stage recipe (the second starts from the first's weights) and an AudioSet-embedding run."""
    recipe = tmp_path / "stages.yaml"
    recipe.write_text("stages:\n  - {name: pre, train: {epochs: 1}}\n"
                      "  - {name: fine, init_from: '@pre', train: {epochs: 1, lr: 0.0003}}\n"
                      "  - {name: student, kind: distill, teachers: [fine], T: 2.0, alpha: 0.5, train: {epochs: 1}}\n")
    result = torchrun(["train", str(recipe), "--data", str(data), "--out", str(tmp_path / "st"), *PLAIN])
    assert result.returncode == 0, result.stderr[-2000:]
    fine = json.loads((tmp_path / "st/fine/summary.json").read_text())
    assert fine["init_from"]["loaded"] and (tmp_path / "st/report.md").exists()
    cv = torchrun(["train", "--data", str(data), "--out", str(tmp_path / "cv"), "cv=2", "train.epochs=1", *PLAIN])
    assert cv.returncode == 0, cv.stderr[-2000:]
    folds = json.loads((tmp_path / "cv/cv_summary.json").read_text())["folds"]
    assert len(folds) == 2 and all((tmp_path / f"cv/fold_{fold}/summary.json").exists() for fold in folds)
    student = json.loads((tmp_path / "st/student/summary.json").read_text())
    assert student["distillation"]["teachers"] == [str(tmp_path / "st/fine")]
    assert [m["epoch"] for m in metrics(tmp_path / "st/student")] == [1]
    assert "train/kd_loss" in metrics(tmp_path / "st/student")[0]

    from audioclf.data.embeddings import make_synthetic_embeddings
    from audioclf.data.importers.audioset import write_class_labels, write_h5

    root = tmp_path / "audioset"
    root.mkdir()
    write_h5(root / "bal_train.h5", make_synthetic_embeddings(96, seed=11))
    write_h5(root / "eval.h5", make_synthetic_embeddings(32, seed=12))
    write_class_labels(root / "class_labels_indices.csv", [f"c{i}" for i in range(527)])
    result = torchrun(["train", "--data", str(root), "--out", str(tmp_path / "emb"), "train.epochs=2",
                       "train.batch_size=16", "model.name=embedding_mlp_s5", "model.hidden=32"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [m["epoch"] for m in metrics(tmp_path / "emb")] == [1, 2]
    assert np.isfinite(json.loads((tmp_path / "emb/summary.json").read_text())["metrics"]["test"]["mAP"])
    # Streamed from the file: each rank reads the stream and keeps its piece of every batch.
    result = torchrun(["train", "--data", str(root), "--out", str(tmp_path / "stream"), "train.epochs=1",
                       "train.batch_size=16", "model.name=embedding_mlp_s5", "model.hidden=32",
                       "data.options.stream=true", "data.options.max_rows_in_memory=32"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.isfinite(metrics(tmp_path / "stream")[0]["train/loss"])


# --- training from shards -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "set"
    assert main(["shard", "--data", str(data), "--out", str(out), "--items-per-shard", "5",
                 "data.sample_rate=16000", "data.clip_seconds=1.0"]) == 0
    return out


def test_training_streams_a_shard_set_and_reports_a_damaged_shard(shards, tmp_path, caplog):
    """The train split streamed (a damaged shard reported and skipped, the run goes on), val/test read whole; the
    run is an ordinary audio run (predict works on it)."""
    from audioclf.deploy.predictor import Predictor
    from audioclf.workflows.run import run

    damaged = tmp_path / "set"
    damaged.mkdir()
    for path in shards.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    bad = damaged / "train-000001.tar"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    result = run({}, overrides=[f"data.path={damaged}", f"out={tmp_path / 'run'}", "train.epochs=2",
                                "train.batch_size=8", *PLAIN[:1], "features.n_mels=32"])
    root = result.runs[0]
    summary = json.loads((root / "summary.json").read_text())
    index = json.loads((shards / "shards.json").read_text())
    assert summary["counts"] == {split: sum(s["items"] for s in index["splits"][split])
                                 for split in ("train", "val", "test")}
    assert set(summary["metrics"]) == {"val", "test"}  # the streamed train split is not re-scored
    assert any("train-000001.tar" in entry["path"] for entry in summary["skipped"])
    assert "train-000001.tar" in caplog.text
    predictor = Predictor.from_run(root)
    clip = next(path for path in Path(index_path_of(shards)).rglob("*.wav"))
    assert predictor.predict_files([str(clip)])[0].probs.shape == (len(index["classes"]),)
    # The run records how the shards were made, so a recording is treated as the training audio was.
    config = (root / "config.yaml").read_text()
    assert "trim_silence: edges" in config and index["trim_silence"] == "edges"
    # evaluate reads the run's test split from the shards: the numbers of its summary.
    from audioclf.workflows.evaluation import run_outputs

    again = run_outputs(root).result.metrics
    for key, value in summary["metrics"]["test"].items():
        assert again[key] == pytest.approx(value, rel=1e-6), key
    files = run_outputs(root, data=str(index_path_of(shards)))  # or audio files, decoded
    assert len(files.result.probs) == sum(index_counts(index).values())


def index_counts(index: dict) -> dict[str, int]:
    return {split: sum(s["items"] for s in index["splits"][split]) for split in ("train", "val", "test")}


def test_settings_the_shards_fix_are_checked_against_them(shards, tmp_path, capsys):
    assert main(["train", "--data", str(shards), "--out", str(tmp_path / "r"), "data.sample_rate=22050"]) == 2
    assert "data.sample_rate=22050: the shards in" in capsys.readouterr().err
    assert main(["train", "--data", str(shards), "--out", str(tmp_path / "r"), "data.split=random"]) == 2
    assert "data.split='random': runs on audio shards cannot honour it" in capsys.readouterr().err


def index_path_of(shards: Path) -> Path:
    """The folder of the audio files the shard set was written from (the items' paths are recorded)."""
    from audioclf.data.shards import load_split, read_index

    items, _ = load_split(read_index(shards), "test")
    return Path(items[0].path).parent.parent


@pytest.mark.slow
def test_two_processes_train_from_shards_with_workers(shards, tmp_path):
    """Ranks get different numbers of items (7 shards of 5 and 2 items over 2 ranks): Join keeps them in step."""
    result = torchrun(["train", "--data", str(shards), "--out", str(tmp_path / "run"), "train.epochs=2",
                       "train.batch_size=8", "train.num_workers=2", "model.name=mlp", "features.n_mels=32"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert [m["epoch"] for m in metrics(tmp_path / "run")] == [1, 2]
    assert all(np.isfinite(m["train/loss"]) for m in metrics(tmp_path / "run"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL takes one GPU per process)")
def test_two_gpus_with_sync_batchnorm_train_like_one(data, tmp_path):
    """NCCL, one GPU per process, a BatchNorm model with SyncBatchNorm: the statistics of the global batch, so the
    same weights as one GPU (to the float rounding of reductions in another order)."""
    args = ["train", "--data", str(data), "train.epochs=2", "train.amp=false", "train.sync_batchnorm=true",
            "model.name=small_cnn", "model.dropout=0", *PLAIN[1:]]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--gpus", "2"]) == 0
    one = torch.load(tmp_path / "one/checkpoints/last.pt", weights_only=False)["train_model"]
    two = torch.load(tmp_path / "two/checkpoints/last.pt", weights_only=False)["train_model"]
    for name, tensor in one.items():
        torch.testing.assert_close(two[name].float(), tensor.float(), atol=1e-4, rtol=1e-3)
