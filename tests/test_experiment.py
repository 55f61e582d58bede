"""End-to-end runs on tiny generated data: run directory contents, skips, seeds, resume, evaluate."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from audioclf.calibration import read_decisions
from audioclf.config import load_config
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import AudioDecodeError, ConfigError, DataError
from audioclf.workflows.evaluation import evaluate_run, run_outputs
from audioclf.training.trainer import train
from audioclf.runs import RunDir

TINY = ["train.epochs=2", "train.batch_size=16", "data.clip_seconds=1.0", "data.sample_rate=16000",
        "features.n_mels=32", "features.n_fft=512", "features.hop_length=320", "model.name=small_cnn"]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_per_class=10, seconds=1.0, seed=1)


@pytest.fixture(scope="module")
def trained_run(folder_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    return train(load_config(None, [f"data.path={folder_data}", f"out={out}", *TINY]))


def test_run_directory_holds_everything(trained_run):
    run = RunDir(trained_run)
    for path in (run.config, run.manifest, run.metrics, run.summary, run.checkpoint("best"), run.checkpoint("last"),
                 run.plots / "loss.png", run.plots / "metrics.png", run.plots / "confusion_test.png"):
        assert path.exists() and path.stat().st_size > 0, path
    summary = run.read_summary()
    assert summary["task"] == "single_label"
    assert len(summary["classes"]) >= 8
    # Test metrics: scikit-learn on the best checkpoint's probabilities for the test items.
    out = run_outputs(trained_run).result
    y, test = out.targets, summary["metrics"]["test"]
    probs = out.probs / out.probs.sum(axis=1, keepdims=True, dtype=np.float64)  # float32 rows: sum to 1 +- 1e-7
    assert len(y) == summary["counts"]["test"] == 8  # stratified 80/10/10 of 8 classes x 10 clips
    assert test["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert test["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
    assert test["macro_f1"] == pytest.approx(skm.f1_score(y, probs.argmax(1), average="macro", zero_division=0))
    assert test["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=range(len(summary["classes"]))), abs=1e-6)
    # Val metrics: by hand from the val confusion matrix; the log loss is the criterion's loss (cross-entropy).
    conf, val = np.array(summary["confusion"]["val"], dtype=float), summary["metrics"]["val"]
    assert conf.sum() == summary["counts"]["val"]
    tp, present = np.diag(conf), conf.sum(axis=1) > 0
    assert val["accuracy"] == pytest.approx(tp.sum() / conf.sum())
    assert val["balanced_accuracy"] == pytest.approx(np.mean(tp[present] / conf.sum(axis=1)[present]))
    f1_denominator = conf.sum(axis=0) + conf.sum(axis=1)
    assert val["macro_f1"] == pytest.approx(np.mean(2 * tp[f1_denominator > 0] / f1_denominator[f1_denominator > 0]))
    assert val["log_loss"] == pytest.approx(val["loss"], rel=1e-5)
    assert summary["skipped"] == []
    assert [r["epoch"] for r in run.read_metrics()] == [1, 2]
    # The resolved config records what was inferred, so the run can be re-created from it.
    assert run.read_config()["data"]["sample_rate"] == 16000
    assert not list(run.root.rglob("*.tmp*")), "temporary files left behind"


def test_same_seed_gives_identical_metrics(folder_data, trained_run, tmp_path):
    again = train(load_config(None, [f"data.path={folder_data}", f"out={tmp_path / 'again'}", *TINY]))
    first, second = RunDir(trained_run).read_metrics(), RunDir(again).read_metrics()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(first) == strip(second)
    assert RunDir(trained_run).read_summary()["metrics"] == RunDir(again).read_summary()["metrics"]


def test_evaluate_reproduces_the_summary_test_metrics(trained_run):
    result = evaluate_run(trained_run)
    expected = RunDir(trained_run).read_summary()["metrics"]["test"]
    assert result["n_items"] == RunDir(trained_run).read_summary()["counts"]["test"]
    for name in ("accuracy", "log_loss"):
        assert result["metrics"][name] == pytest.approx(expected[name], abs=1e-6)


def test_bad_files_are_reported_and_skipped(folder_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder_data, data)
    cls = sorted(p.name for p in data.iterdir())[0]
    (data / cls / "empty.wav").write_bytes(b"")
    (data / cls / "notes.wav").write_text("this is not audio\n" * 20)
    good = sorted((data / cls).glob("*.wav"))[0].read_bytes()
    (data / cls / "corrupt.wav").write_bytes(good[:44] + bytes(range(256)) * 3)  # header ok, wrong size/data
    (data / cls / "truncated.wav").write_bytes(good[:30])
    run = train(load_config(None, [f"data.path={data}", f"out={tmp_path / 'run'}", *TINY, "train.epochs=1"]))
    skipped = {e["path"].rsplit("/", 1)[-1]: e["reason"] for e in RunDir(run).read_summary()["skipped"]}
    assert {"empty.wav", "notes.wav", "truncated.wav"} <= set(skipped)
    assert all(reason for reason in skipped.values())
    manifest_text = RunDir(run).manifest.read_text()
    for name in skipped:
        assert name not in manifest_text
    with pytest.raises(AudioDecodeError, match=r"(empty|notes|truncated|corrupt)\.wav"):
        train(load_config(None, [f"data.path={data}", f"out={tmp_path / 'strict'}", *TINY, "data.strict=true"]))


def test_csv_with_split_column_is_respected(folder_data, tmp_path):
    rows = []
    for i, path in enumerate(sorted(folder_data.rglob("*.wav"))):
        rows.append({"fname": str(path.relative_to(folder_data)), "labels": path.parent.name,
                     "split": ("train", "train", "validation", "test")[i % 4], "speaker": f"s{i % 3}"})
    csv_path = folder_data / "labels.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    try:
        run = train(load_config(None, [f"data.path={csv_path}", f"out={tmp_path / 'run'}", *TINY, "train.epochs=1"]))
    finally:
        csv_path.unlink()
    with open(RunDir(run).manifest) as handle:
        used = {r["id"] if "id" in r else r["path"]: r for r in csv.DictReader(handle)}
    splits = [r["split"] for r in used.values()]
    assert splits.count("test") == sum(1 for r in rows if r["split"] == "test")
    assert splits.count("val") == sum(1 for r in rows if r["split"] == "validation")
    summary = RunDir(run).read_summary()
    # The extra column is a group column: per-group test metrics are reported.
    assert any(k.startswith("per_group/speaker/") for k in summary["metrics"]["test"])


def test_multi_label_csv_trains_with_multilabel_metrics(tmp_path):
    csv_path = make_demo_dataset(tmp_path / "ml", n_per_class=6, seconds=1.0, multi_label=True, seed=2)
    run = train(load_config(None, [f"data.path={csv_path}", f"out={tmp_path / 'run'}", *TINY, "train.epochs=1"]))
    summary = RunDir(run).read_summary()
    assert summary["task"] == "multi_label"
    # Recomputed from the best checkpoint's scores on the test clips: scikit-learn and the metrics' definitions.
    out = run_outputs(run).result
    targets, scores, test = out.targets.astype(bool), out.probs, summary["metrics"]["test"]
    assert targets.shape == (summary["counts"]["test"], len(summary["classes"]))
    # lwlrap (DCASE 2019 Task 2) = LRAP with every clip weighted by its number of labels
    lwlrap = skm.label_ranking_average_precision_score(targets, scores, sample_weight=targets.sum(axis=1))
    assert test["lwlrap"] == pytest.approx(lwlrap)
    present = [c for c in range(targets.shape[1]) if targets[:, c].any()]
    assert test["mAP"] == pytest.approx(np.mean([skm.average_precision_score(targets[:, c], scores[:, c])
                                                 for c in present]))
    # recall of the labels, decided at the per-class thresholds the run chose on validation (train.threshold=f1)
    decided = scores > read_decisions(run, summary["classes"]).threshold_array(targets.shape[1])
    assert test["pSR"] == pytest.approx((targets & decided).sum() / targets.sum())


def test_resume_continues_exactly_like_an_uninterrupted_run(folder_data, trained_run, tmp_path, monkeypatch):
    import audioclf.training.trainer as trainer

    original, calls = trainer.train_one_epoch, {"n": 0}

    def crash_on_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", crash_on_second_epoch)
    out = tmp_path / "run"
    cfg = load_config(None, [f"data.path={folder_data}", f"out={out}", *TINY])
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1]
    monkeypatch.setattr(trainer, "train_one_epoch", original)
    train(load_config(None, [f"out={out}"]), resume=True)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(RunDir(out).read_metrics()) == strip(RunDir(trained_run).read_metrics())


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoints/last.pt"):
        train(load_config(None, [f"out={tmp_path}"]), resume=True)


def test_missing_data_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="data.path is required"):
        train(load_config(None, [f"out={tmp_path}"]))
    with pytest.raises(DataError):
        train(load_config(None, [f"data.path={tmp_path / 'nowhere'}", f"out={tmp_path}"]))


def test_summary_is_valid_json_without_nan(trained_run):
    text = (trained_run / "summary.json").read_text()
    assert "NaN" not in text
    json.loads(text)


def test_zero_config_infers_rate_and_clip_length_from_the_files(tmp_path):
    """44.1 kHz stereo files of similar length: rate capped at 22.05 kHz, clip = 90th percentile of durations."""
    from audioclf.data.audio import write_audio
    from audioclf.data.synth.demo import DEMO_CLASSES, synthesize_event

    rng = np.random.default_rng(0)
    for cls in DEMO_CLASSES[:3]:
        for i, seconds in enumerate([0.6, 1.2, 1.5, 1.5, 1.8, 2.4]):
            mono = synthesize_event(cls, 44100, int(seconds * 44100), rng) * 0.3
            write_audio(tmp_path / "data" / cls / f"{i}.wav", np.stack([mono, 0.5 * mono], axis=1), 44100)
    run = train(load_config(None, [f"data.path={tmp_path / 'data'}", f"out={tmp_path / 'run'}", "train.epochs=1"]))
    config = RunDir(run).read_config()
    assert config["data"]["sample_rate"] == 22050
    assert config["data"]["clip_seconds"] == 2.4  # durations 0.6-2.4 s (median 1.5): clips fit whole
    assert config["features"]["n_fft"] == 1024 and config["features"]["hop_length"] == 220
    assert RunDir(run).read_summary()["counts"]["train"] >= 12


def test_init_from_copies_matching_weights_and_keeps_a_new_head(folder_data, trained_run, tmp_path):
    import torch

    first = RunDir(trained_run).load_checkpoint("best")["model"]
    # Stage 2 on a subset of the classes: the head differs in shape and is trained from scratch.
    subset = tmp_path / "subset"
    for cls in sorted(p.name for p in folder_data.iterdir())[:4]:
        shutil.copytree(folder_data / cls, subset / cls)
    run = train(load_config(None, [f"data.path={subset}", f"out={tmp_path / 'stage2'}", *TINY,
                                   "train.epochs=1", "train.lr=1e-12", f"init_from={trained_run}"]))
    second = RunDir(run).load_checkpoint("best")["model"]
    report = RunDir(run).read_summary()["init_from"]
    assert "standardize.mean" in report["loaded"]
    head = [name for name in report["skipped"] if name.endswith("weight")]
    assert head and all(second[name].shape != first[name].shape for name in head)
    conv = next(name for name in report["loaded"] if name.endswith("weight") and second[name].ndim == 4)
    torch.testing.assert_close(first[conv], second[conv], atol=1e-8, rtol=0)  # lr ~ 0: the copied weights


def test_augmentation_from_the_command_line_is_used_and_recorded(folder_data, trained_run, tmp_path):
    overrides = [*TINY, "augment.spec=LD", "augment.mixup_alpha=0.4", "augment.duplicate=true",
                 "augment.waveform=[{name: gain, p: 1.0, min_gain_db: -6, max_gain_db: 6}]"]
    run = train(load_config(None, [f"data.path={folder_data}", f"out={tmp_path / 'aug'}", *overrides]))
    config = RunDir(run).read_config()["augment"]
    assert config["spec"] == "LD" and config["mixup_alpha"] == 0.4 and config["duplicate"] is True
    assert config["waveform"][0]["name"] == "gain"
    # Augmented training differs from the plain run with the same seed (same data, same model).
    plain = RunDir(trained_run).read_metrics()[0]["train/loss"]
    assert RunDir(run).read_metrics()[0]["train/loss"] != pytest.approx(plain)
    summary = RunDir(run).read_summary()
    confusion = np.array(summary["confusion"]["test"])
    assert confusion.sum() == summary["counts"]["test"]
    assert summary["metrics"]["test"]["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())


def test_bad_augmentation_settings_are_config_errors(folder_data, tmp_path):
    for bad in ("augment.spec=LX", "augment.waveform=[{name: gian}]", "augment.mixup_on=labels"):
        with pytest.raises(ConfigError):
            train(load_config(None, [f"data.path={folder_data}", f"out={tmp_path / 'x'}", *TINY, bad]))


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_transfer_backbone_with_freezing_and_its_own_learning_rate(folder_data, tmp_path):
    """A pretrained-style backbone from a local weights file, frozen but the last stages, two LRs."""
    import torch

    from audioclf.models import create_model

    weights = tmp_path / "mobilenet.pt"
    donor = create_model("mobilenet_v2", n_classes=3, input_shape=(1, 32, 51), width_mult=0.25)
    torch.save(donor.backbone.state_dict() if hasattr(donor, "backbone") else donor.state_dict(), weights)
    run = train(load_config(None, [f"data.path={folder_data}", f"out={tmp_path / 'run'}", *TINY, "train.epochs=1",
                                   "model.name=mobilenet_v2", "model.width_mult=0.25", f"model.weights={weights}",
                                   "model.freeze=last:2", "train.backbone_lr=0.0001"]))
    summary = RunDir(run).read_summary()
    params = summary["model"]["parameters"]
    assert 0 < params["trainable"] < params["total"]
    # The run loads anywhere: the weights file is only needed to start training.
    weights.unlink()
    assert evaluate_run(run)["metrics"]["accuracy"] == pytest.approx(summary["metrics"]["test"]["accuracy"])


def test_complexity_limits_gate_refuses_an_over_limit_model(folder_data, tmp_path):
    from audioclf.errors import AudioclfError

    out = tmp_path / "gate"
    with pytest.raises(AudioclfError, match=r"params|parameters"):
        train(load_config(None, [f"data.path={folder_data}", f"out={out}", *TINY, "limits.max_params=1000"]))
    assert not (out / "checkpoints" / "best.pt").exists()
    with pytest.raises(AudioclfError, match="MAC"):
        train(load_config(None, [f"data.path={folder_data}", f"out={out}", *TINY, "limits.max_macs=1e5"]))


def test_summary_records_complexity(trained_run):
    from audioclf.runs.directory import run_complexity

    params = RunDir(trained_run).read_summary()["model"]["parameters"]
    report = run_complexity(str(trained_run))
    assert params["macs"] == report.macs_total > 0
    assert params["deployed_params"] == report.params_total


def test_report_md_has_the_tables_and_plots(trained_run):
    text = (trained_run / "report.md").read_text()
    assert "## Metrics" in text and "| accuracy |" in text
    assert "| metric | train | val | test |" in text  # the training clips, scored like the others
    assert "## Per class (test)" in text
    for plot in ("loss.png", "metrics.png", "confusion_test.png"):
        assert f"(plots/{plot})" in text
    summary = RunDir(trained_run).read_summary()
    assert f"{summary['metrics']['test']['accuracy']:.4f}" in text


def test_long_files_are_evaluated_on_all_their_windows(tmp_path):
    """A class that only shows up at the end of long test files: windows find it, a centre crop cannot."""
    import numpy as np

    from audioclf.data.dataset import WaveformDataset
    from audioclf.training.evaluate import model_probabilities, predict_whole_files

    class LastQuarterDetector(torch.nn.Module):  # "class 1" iff the window's last quarter is loud
        def forward(self, wave):
            loud = wave[:, -wave.shape[1] // 4:].abs().mean(dim=1) > 0.1
            return torch.stack([(~loud).float(), loud.float()], dim=1) * 20

    quiet, loud = np.zeros(8000, np.float32), np.full(2000, 0.5, np.float32)
    waves = [np.concatenate([quiet, quiet, loud])]  # 18,000 samples, clip = 4,000
    ds = WaveformDataset(waves, np.array([1]), n_samples=4000, crop="windows")
    assert ds.windows(0).shape == (8, 4000)  # 50 % overlap, last window ends at the end
    probs_fn = model_probabilities(LastQuarterDetector(), "single_label", torch.device("cpu"))
    probs, _ = predict_whole_files(probs_fn, ds)
    assert 0 < probs[0, 1] < 1  # averaged over windows: only the last ones see the sound
    # A long file goes through the model in batches of at most max_windows (memory bounded by the batch,
    # not by the recording's length), with the same result.
    sizes = []
    chunked, _ = predict_whole_files(lambda x: sizes.append(len(x)) or probs_fn(x), ds, max_windows=3)
    assert sizes == [3, 3, 2] and np.allclose(chunked, probs)
    centre = WaveformDataset(waves, np.array([1]), n_samples=4000, crop="center")
    assert LastQuarterDetector()(centre[0][0][None]).argmax().item() == 0


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_data_larger_than_the_memory_budget_is_memory_mapped_from_disk(folder_data, trained_run, tmp_path,
                                                                       monkeypatch):
    from audioclf.data import dataset as dataset_module

    monkeypatch.setenv("AUDIOCLF_CACHE", str(tmp_path / "cache"))
    seen = {}
    original = dataset_module.WaveformDataset.__init__

    def spy(self, waves, *args, **kwargs):
        seen.setdefault("types", set()).update(type(w).__name__ for w in waves)
        original(self, waves, *args, **kwargs)

    monkeypatch.setattr(dataset_module.WaveformDataset, "__init__", spy)
    run = train(load_config(None, [f"data.path={folder_data}", f"out={tmp_path / 'run'}", *TINY,
                                   "data.memory_gb=0.0001"]))
    assert seen["types"] == {"memmap"}
    assert any((tmp_path / "cache" / "waveforms").rglob("*.npy"))
    # The same waveforms from disk: the same training as the in-memory run with these settings.
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(RunDir(run).read_metrics()) == strip(RunDir(trained_run).read_metrics())


@pytest.mark.parametrize("durations, clip", [
    ([1.0] * 50, 1.0),                              # one length (speech commands)
    ([0.4, 0.5, 0.5, 0.5, 0.6, 0.7, 0.8, 0.9], 0.8),   # spoken words: a 0.5-s median crop would cut them
    ([1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 20.0, 26.0], 4.5),  # varied recordings: the median, windows cover the rest
    ([0.1, 0.2], 0.5), ([30.0, 40.0, 60.0], 10.0),  # kept within 0.5-10 s
])
def test_clip_length_from_the_durations(durations, clip):
    from audioclf.data.prepare import infer_clip_seconds

    assert infer_clip_seconds(durations) == clip


def test_data_add_mixes_augmented_copies_into_train_and_val_by_their_own_shares(tmp_path):
    """A DCASE thesis's mix: the originals, plus 30 % of their IR copies to train on and 70 % to validate on."""
    from collections import Counter

    from audioclf.augment.offline import augment_dataset
    from audioclf.cli import main
    from audioclf.data.importers import load_manifest
    from audioclf.data.manifest import Manifest

    data = make_demo_dataset(tmp_path / "data", n_per_class=5, seconds=1.0, seed=8)
    augment_dataset(load_manifest(data), tmp_path / "aug", [{"name": "gain", "p": 1.0}], n_variants=2)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "data.fractions=[0.8,0.0,0.2]",
                 "data.add=[{path: " + str(tmp_path / "aug" / "manifest.csv") + ", train: 0.3, val: 0.7}]"]) == 0
    manifest = Manifest.from_csv(out / "manifest.csv")
    added = [item for item in manifest if item.id.startswith("add0:")]
    counts = Counter((item.id.startswith("add0:"), item.split) for item in manifest)
    assert len(added) == 2 * 40 and counts[(False, "val")] == 0  # copies only: the originals are the data itself
    assert 0.2 < counts[(True, "train")] / len(added) < 0.4 and counts[(True, "test")] == 0
    by_source = {}
    for item in added:  # the copies of one source stay on one side
        by_source.setdefault(item.groups["source_id"], set()).add(item.split)
    assert all(len(splits) == 1 for splits in by_source.values())
