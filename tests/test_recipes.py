"""Each bundled recipe end to end on a fixture in its dataset's real layout (tiny settings)."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from audioclf.cli import main
from audioclf.runs import RunDir
from audioclf.workflows.evaluation import run_outputs

import layouts

FAST = ["train.epochs=1", "train.batch_size=8", "train.patience=null"]


def _summary(run):
    return RunDir(run).read_summary()


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_fsd2019_two_stage_recipe(tmp_path):
    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    # The recipe's noisy stage, but 1 epoch: silence cut with fixed parameters, no augmentation (curated only).
    stages = ("stages=[{name: noisy, data: {options: {subset: noisy, val_fraction: 0.0, noisy_val_fraction: 0.5},"
              " trim_silence: fixed}, train: {epochs: 1, lr: 0.001}, augment: {duplicate: false, spec: none}},"
              " {name: curated, train: {epochs: 1}, init_from: '@noisy'}]")
    assert main(["train", "fsd2019", f"data.root={root}", f"out={tmp_path / 'run'}", *FAST, stages]) == 0
    noisy, curated = _summary(tmp_path / "run" / "noisy"), _summary(tmp_path / "run" / "curated")
    assert noisy["task"] == curated["task"] == "multi_label"
    assert curated["classes"] == layouts.FSD_CLASSES  # the sample submission's columns, in order
    # The curated stage's val lwlrap is scikit-learn's LRAP weighted by labels per clip on its best checkpoint.
    val = run_outputs(tmp_path / "run" / "curated", split="val").result
    targets = val.targets.astype(bool)
    assert len(targets) == curated["counts"]["val"]
    expected = skm.label_ranking_average_precision_score(targets, val.probs, sample_weight=targets.sum(axis=1))
    assert curated["metrics"]["val"]["lwlrap"] == pytest.approx(expected)
    assert curated["init_from"]["run"].endswith("noisy")
    config = RunDir(tmp_path / "run" / "curated").read_config()
    assert config["features"]["n_mels"] == 80 and config["augment"]["duplicate"] is True
    assert config["data"]["trim_silence"] is True and config["augment"]["spec"]["freq_masks"] == 2
    first = RunDir(tmp_path / "run" / "noisy").read_config()
    assert first["data"]["trim_silence"] == "fixed" and first["augment"]["duplicate"] is False
    assert first["augment"]["spec"] == "none" and first["train"]["lr"] == 0.001


def test_fsd2019_simple_cnn_trains_on_curated_clips_alone_without_augmentation(tmp_path):
    """The solution's §6.1 model as it reported it (the README's "near 0.45"): one stage, curated only."""
    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    assert main(["train", "fsd2019_simple_cnn", f"data.root={root}", f"out={tmp_path / 'run'}", *FAST]) == 0
    config = RunDir(tmp_path / "run").read_config()
    assert config["stages"] == [] and config["data"]["options"]["subset"] == "curated"
    assert config["augment"]["duplicate"] is False and config["augment"]["spec"] == "none"
    assert config["model"]["name"] == "fsd_simple_cnn" and config["train"]["lr"] == 0.0003
    counts = _summary(tmp_path / "run")["counts"]
    assert counts["train"] + counts["val"] == len(layouts.FSD_CURATED)  # no noisy clip


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_fsd2019_model1_augments_a_copy_of_the_curated_training_clips_only(tmp_path, capsys):
    """The solution's model 1 trains on curated and noisy clips together and duplicates + augments only the
    curated ones (augment.duplicate: source=curated)."""
    from audioclf.data.importers.fsd2019 import import_fsd2019
    from audioclf.errors import ConfigError
    from audioclf.training.inputs.audio import duplicated_items

    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    train = [item for item in import_fsd2019(root, subset="both").items if item.split == "train"]
    copied = duplicated_items(train, "source=curated")
    assert {train[i].groups["source"] for i in copied} == {"curated"}
    assert len(copied) == sum(item.groups["source"] == "curated" for item in train) < len(train)
    assert duplicated_items(train, True) is None  # true: every item
    with pytest.raises(ConfigError, match="no training item has source=clean .source values there: curated, noisy"):
        duplicated_items(train, "source=clean")
    run = tmp_path / "m1"
    assert main(["train", "fsd2019_model1", f"data.root={root}", f"out={run}", *FAST, "model.weights=null"]) == 0
    config = RunDir(run).read_config()
    assert config["augment"]["duplicate"] == "source=curated" and config["model"]["name"] == "mobilenet_v2"
    assert _summary(run)["counts"]["train"] == len(train)
    capsys.readouterr()
    assert main(["train", "fsd2019_model1", f"data.root={root}", f"out={tmp_path / 'bad'}", *FAST,
                 "model.weights=null", "augment.duplicate=curated"]) == 2
    err = capsys.readouterr().err
    assert "augment.duplicate='curated': expected true, false or GROUP=VALUE" in err and "Traceback" not in err


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_fsd2019_submission_has_the_sample_columns(tmp_path):
    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    run = tmp_path / "run"
    assert main(["train", "fsd2019", f"data.root={root}", f"out={run}", *FAST, "stages=[]"]) == 0
    out = tmp_path / "submission.csv"
    assert main(["predict", str(run), str(root / "test"), "--submission", str(root / "sample_submission.csv"),
                 "--csv", str(out)]) == 0
    header = out.read_text().splitlines()[0].split(",")
    assert header == (root / "sample_submission.csv").read_text().splitlines()[0].split(",")
    assert len(out.read_text().splitlines()) == 1 + len(layouts.FSD_TEST)

    # An average ensemble of two runs: each member's probabilities, averaged per file, in the same layout.
    other = tmp_path / "other"
    assert main(["train", "fsd2019", f"data.root={root}", f"out={other}", *FAST, "stages=[]", "seed=1"]) == 0
    single = tmp_path / "other.csv"
    assert main(["predict", str(other), str(root / "test"), "--submission", str(root / "sample_submission.csv"),
                 "--csv", str(single)]) == 0
    both = tmp_path / "ensemble.csv"
    assert main(["predict", str(run), str(root / "test"), "--ensemble", str(other), "--submission",
                 str(root / "sample_submission.csv"), "--csv", str(both)]) == 0
    table = lambda path: np.array([[float(v) for v in line.split(",")[1:]]  # noqa: E731
                                   for line in path.read_text().splitlines()[1:]])
    np.testing.assert_allclose(table(both), (table(out) + table(single)) / 2, atol=1e-12)


def test_predict_applies_the_runs_silence_removal_and_windows_as_its_evaluation_does(tmp_path):
    """FSD2019 trims every silent stretch before windowing: a clip with a 2-s gap is scored by predict exactly as
    the run's own evaluation scores it (the preprocessing belongs to the saved model)."""
    from audioclf.data.audio import write_audio
    from audioclf.deploy.predictor import Predictor

    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    run = tmp_path / "run"
    assert main(["train", "fsd2019", f"data.root={root}", f"out={run}", *FAST, "stages=[]"]) == 0
    rng = np.random.default_rng(0)
    sound = lambda s: (0.3 * rng.standard_normal(int(s * 44100))).astype(np.float32)  # noqa: E731
    gap = np.concatenate([sound(1.5), np.zeros(2 * 44100, np.float32), sound(2.5)])
    write_audio(tmp_path / "eval" / "gap.wav", gap, 44100)
    layouts.write_table(tmp_path / "eval" / "meta.csv", ["fname", "labels"], [("gap.wav", "Bark")])
    predicted = Predictor.from_run(run).predict_files([tmp_path / "eval" / "gap.wav"])[0].probs
    evaluated = run_outputs(run, data=str(tmp_path / "eval" / "meta.csv")).result.probs[0]
    np.testing.assert_allclose(predicted, evaluated, atol=1e-6)
    untrimmed = Predictor.from_run(run)
    untrimmed.trim_silence = False
    assert np.abs(untrimmed.predict_files([tmp_path / "eval" / "gap.wav"])[0].probs - predicted).max() > 1e-4


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_gtzan_recipe_reports_accuracy_and_confusion(tmp_path):
    root = layouts.gtzan(tmp_path / "g", per_genre=10)
    run = tmp_path / "run"
    assert main(["train", "gtzan", f"data.root={root}", f"out={run}", *FAST, "data.clip_seconds=1.0"]) == 0
    summary = _summary(run)
    assert summary["counts"] == {"train": 24, "val": 3, "test": 3}  # 80/10/10 within each genre
    confusion = np.array(summary["confusion"]["test"])
    assert confusion.shape == (len(layouts.GTZAN_GENRES),) * 2 and confusion.sum() == 3
    assert summary["metrics"]["test"]["accuracy"] == pytest.approx(np.trace(confusion) / 3)


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_dcase2022_recipe_runs_the_whole_chain(tmp_path):
    root = layouts.tau2022(tmp_path / "tau")
    out = tmp_path / "chain"
    small = ("stages=[{name: baseline}, {name: teacher, features: {n_mels: 80}, model: {name: small_cnn}},"
             " {name: student, kind: distill, teachers: [teacher], T: 2.0, features: {n_mels: 80},"
             " model: {name: asc_student}, limits: {max_params: 128000, max_macs: 30.0e6}, quantize: 4, export: true}]")
    assert main(["train", "dcase2022_task1", f"data.root={root}", f"out={out}", *FAST, small]) == 0
    test = _summary(out / "baseline")["metrics"]["test"]
    assert "log_loss" in test and "accuracy" in test
    devices = {k.split("/")[2] for k in test if k.startswith("per_group/device/")}
    assert {"a", "s4", "s5", "s6"} <= devices
    student = _summary(out / "student")
    assert student["distillation"]["teachers"] == [str(out / "teacher")]
    assert (out / "student" / "model.features.int8.onnx").exists()
    assert (out / "student" / "model.features.onnx").exists()
    table = (out / "report.md").read_text()
    for row in ("| baseline | dcase2022_baseline |", "| teacher |", "| student | asc_student |",
                "| student (int8) | asc_student |"):
        assert row in table
    assert "log_loss (test)" in table and "MMACs" in table
    assert "## INT8 quantization" in (out / "student" / "report.md").read_text()


def test_recipe_with_a_missing_file_names_it(tmp_path):
    root = layouts.gtzan(tmp_path / "g", per_genre=10)
    (root / "genres" / "jazz" / "jazz.00003.wav").write_text("not audio")
    run = tmp_path / "run"
    assert main(["train", "gtzan", f"data.root={root}", f"out={run}", *FAST, "data.clip_seconds=1.0"]) == 0
    skipped = _summary(run)["skipped"]
    assert [s["path"].rsplit("/", 1)[-1] for s in skipped] == ["jazz.00003.wav"]
    assert main(["train", "gtzan", f"data.root={root}", f"out={tmp_path / 'strict'}", *FAST, "--strict"]) == 2


def test_speaker_count_synth_then_recipe(tmp_path):
    root = layouts.librispeech_tones(tmp_path)
    mix = tmp_path / "mix"
    assert main(["synth", "speaker-count", "--source", str(root), "--n", "24", "--out", str(mix)]) == 0
    run = tmp_path / "run"
    assert main(["train", "speaker_count", f"data.path={mix / 'metadata.csv'}", f"out={run}", *FAST,
                 "model.width=8"]) == 0
    summary = _summary(run)
    assert summary["classes"] == ["1", "2", "3"] and summary["task"] == "single_label"
    confusion = np.array(summary["confusion"]["test"])
    assert confusion.shape == (3, 3) and confusion.sum() == summary["counts"]["test"] > 0
    assert summary["metrics"]["test"]["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())


def test_audioset_embeddings_recipe_then_evaluate(tmp_path, capsys):
    from audioclf.data.embeddings import make_synthetic_embeddings
    from audioclf.data.importers.audioset import write_class_labels, write_h5

    root = tmp_path / "audioset"
    write_h5(root / "bal_train.h5", make_synthetic_embeddings(160, seed=1))
    write_class_labels(root / "class_labels_indices.csv", [f"sound {i}" for i in range(527)])
    write_h5(root / "eval.h5", make_synthetic_embeddings(40, seed=2))
    run = tmp_path / "run"
    assert main(["train", "audioset_embeddings", f"data.root={root}", f"out={run}", "train.epochs=1",
                 "model.hidden=16", "model.dense=16"]) == 0
    summary = _summary(run)
    assert summary["task"] == "multi_label" and summary["classes"][:2] == ["sound 0", "sound 1"]
    # Recomputed from the model's scores on the 40 eval clips: scikit-learn's AP per class, and Darna Sequeiros
    # (2018)'s per-clip Jaccard index of the rounded outputs and pSR (recall of the labels).
    out = run_outputs(run).result
    t, p, test = out.targets.astype(bool), out.probs, summary["metrics"]["test"]
    assert t.shape == (40, 527)
    ap = [skm.average_precision_score(t[:, c], p[:, c]) for c in np.flatnonzero(t.any(axis=0))]
    assert test["mAP"] == pytest.approx(np.mean(ap))
    rounded = p > 0.5
    union = (rounded | t).sum(axis=1)
    assert test["mAP_per_example"] == pytest.approx(np.mean((rounded & t).sum(axis=1)[union > 0] / union[union > 0]))
    assert test["pSR"] == pytest.approx((rounded & t).sum() / t.sum())
    # The thesis validated on the eval set itself (val_set: eval): val and test are the same 40 clips, and
    # training keeps all 160 rows; compare leads with its Tables 1-2's metrics, per-example mAP then pSR.
    assert summary["counts"]["val"] == summary["counts"]["test"] == 40 and summary["counts"]["train"] == 160
    assert summary["metrics"]["val"]["mAP_per_example"] == pytest.approx(test["mAP_per_example"])
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp")]) == 0
    header = next(line for line in (tmp_path / "cmp" / "comparison.md").read_text().splitlines() if "val " in line)
    assert header.index("val mAP_per_example") < header.index("val pSR")
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    assert "mAP" in capsys.readouterr().out
    with open(root / "eval.h5", "r+b") as handle:  # a truncated HDF5 file: a clear error naming it
        handle.truncate(2000)
    assert main(["train", "audioset_embeddings", f"data.root={root}", f"out={tmp_path / 'bad'}",
                 "train.epochs=1"]) == 2
    assert "eval.h5" in capsys.readouterr().err


# --- the recipes follow the reports (no training) -------------------------------------------------
def test_speaker_count_follows_the_report_stride_16_and_a_db_spectrogram_for_the_2d_cnns():
    import torch

    from audioclf.config import load_config
    from audioclf.training.inputs.audio import build_classifier, feature_config

    for name in ("m5", "m3", "m11"):  # §III-A: every M-net's first layer at stride 16, 32 channels
        cfg = load_config("speaker_count", [f"model.name={name}"])
        model = build_classifier(cfg, 3, 16000, 16000)
        first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv1d))
        assert first.stride == (16,) and first.out_channels == 32, name
    cfg = load_config("speaker_count", ["model={name: speaker_cnn2d, blocks: 2}"])
    features = feature_config(cfg, 16000)
    assert (features.kind, features.log, features.n_fft, features.hop_length) == ("spectrogram", "db", 400, 200)
    assert feature_config(load_config("speaker_count", ["model={name: speaker_cnn2d}", "features.kind=logmel"]),
                          16000).kind == "logmel"  # the user's features.* still win
    assert sum(p.numel() for p in build_classifier(cfg, 3, 16000, 16000).backbone.parameters()) == 9795


def test_a_model_section_naming_another_model_does_not_inherit_its_arguments():
    from audioclf.config import merge_dicts

    base = {"model": {"name": "m5", "width": 32, "stride": 16}}
    assert merge_dicts(base, {"model": {"name": "speaker_cnn2d"}})["model"] == {"name": "speaker_cnn2d"}
    assert merge_dicts(base, {"model": {"width": 8}})["model"] == {"name": "m5", "width": 8, "stride": 16}


def test_speaker_count_sex_mix_is_order_insensitive(tmp_path):
    from audioclf.data.synth.speaker_count import MixturePlan

    rows = [MixturePlan("train", i, f"m{i}.wav", ("1", "2"), sexes, ()).row() for i, sexes in enumerate(("MF", "FM"))]
    assert rows[0][3] == rows[1][3] == "FM" and rows[0][4:6] == (1, 1)


def test_audioset_recipe_monitors_per_example_map_without_early_stopping():
    from audioclf.config import load_config

    cfg = load_config("audioset_embeddings")
    assert cfg.train.monitor == "mAP_per_example" and cfg.train.patience is None and cfg.model["name"] == "embedding_lstm"


def test_dcase_teacher_stage_uses_the_falling_sigmoid_schedule():
    from audioclf.config import load_config
    from audioclf.workflows.stages import plan_stages

    stages = {stage.name: stage for stage in plan_stages(load_config("dcase2022_task1", ["data.path=x"]))}
    assert stages["teacher"].config.train.scheduler == "falling_sigmoid"
    assert stages["baseline"].config.train.scheduler == "none"


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_dcase_balanced_subset_is_a_config_key(tmp_path):
    from collections import Counter

    from audioclf.data.manifest import Manifest

    root = layouts.tau2022(tmp_path / "tau")
    counts = {}
    for n in (1, 2):
        run = tmp_path / f"run{n}"
        assert main(["train", "dcase2022_task1", f"data.root={root}", f"out={run}", *FAST, "stages=[]",
                     "data.group=null", "data.fractions=[0.7,0.3,0.0]",
                     f"data.train_subset={{per: [], n: {n}}}"]) == 0
        train = [item for item in Manifest.from_csv(run / "manifest.csv") if item.split == "train"]
        counts[n] = Counter(item.labels[0] for item in train)
        assert RunDir(run).read_config()["data"]["train_subset"] == {"per": [], "n": n}
    assert max(counts[1].values()) == 1 and max(counts[2].values()) == 2  # at most n clips per scene
    assert set(counts[1]) == set(counts[2])  # every scene keeps its clips


@pytest.mark.parametrize("variant, faithful, changed", [
    ("gtzan_tuned", "gtzan", {"train.lr": 0.001, "train.scheduler": "exponential",
                              "train.scheduler_args": {"gamma": 0.95}, "train.epochs": 10}),
    ("fsd2019_tuned", "fsd2019", {"train.patience": 10, "stages": [
        {"name": "noisy", "data": {"options": {"subset": "noisy", "val_fraction": 0.0, "noisy_val_fraction": 0.2}},
         "train": {"epochs": 15}},
        {"name": "curated", "data": {"options": {"subset": "curated", "val_fraction": 0.2}}, "init_from": "@noisy"}]}),
    ("fsd2019_noisy_robust", "fsd2019", {"stages": [
        {"name": "noisy", "data": {"options": {"subset": "noisy", "val_fraction": 0.0, "noisy_val_fraction": 0.2},
                                   "trim_silence": "fixed"},
         "train": {"epochs": 15, "lr": 0.001, "loss": "gce"}, "augment": {"duplicate": False, "spec": "none"}},
        {"name": "curated", "data": {"options": {"subset": "curated", "val_fraction": 0.2}}, "init_from": "@noisy"}]}),
    ("audioset_embeddings_heldout", "audioset_embeddings", {"data.options": {"train_set": "balanced", "stream": "auto",
                                                                             "val_set": "split"}}),
])
def test_a_named_variant_changes_only_what_its_comment_says(variant, faithful, changed):
    """Our own choices live in a variant over the faithful recipe (``base:``), which keeps the report's values."""
    from audioclf.config import flat_config, load_config

    ours, theirs = (flat_config(load_config(name).to_dict()) for name in (variant, faithful))
    differing = {key for key in ours if ours[key] != theirs.get(key)}
    assert differing == set(changed)
    for key, value in changed.items():  # flat_config writes a mapping as its JSON text
        assert ours[key] == (json.dumps(value) if isinstance(value, (dict, list)) else value), key


def test_a_recipe_whose_base_leads_back_to_itself_is_one_line(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    assert main(["train", str(tmp_path / "a.yaml"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "leads back to itself" in err and len(err.strip().splitlines()) == 1


def test_audioset_val_set_eval_needs_an_eval_set(tmp_path, capsys):
    from audioclf.data.embeddings import make_synthetic_embeddings
    from audioclf.data.importers.audioset import write_h5

    write_h5(tmp_path / "bal_train.h5", make_synthetic_embeddings(16, seed=1))
    assert main(["train", "audioset_embeddings", f"data.root={tmp_path}", f"out={tmp_path / 'run'}",
                 "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "data.options.val_set=eval, but no eval set there" in err and "Traceback" not in err
    assert main(["train", "audioset_embeddings", f"data.root={tmp_path}", "data.options.val_set=held"]) == 2
    assert "data.options.val_set='held'; expected 'split' or 'eval'" in capsys.readouterr().err


def test_dcase2022_by_location_is_todays_recipe_over_the_faithful_one():
    """dcase2022_task1 follows the thesis (random 70/30, all 200 baseline epochs, the teacher on distribution (3)
    of its Table 10); dcase2022_task1_by_location keeps our location hold-out, patience 20 and IR-free teacher."""
    from audioclf.config import flat_config, load_config
    from audioclf.workflows.stages import plan_stages

    ours, theirs = (load_config(name, ["data.path=x"]) for name in ("dcase2022_task1_by_location", "dcase2022_task1"))
    flat_ours, flat_theirs = flat_config(ours.to_dict()), flat_config(theirs.to_dict())
    assert {key for key in flat_ours if flat_ours[key] != flat_theirs.get(key)} == {
        "data.group", "data.fractions", "train.patience", "stages"}
    assert (ours.data.group, theirs.data.group) == ("location", None)
    assert list(theirs.data.fractions) == [0.7, 0.3, 0.0] and (ours.train.patience, theirs.train.patience) == (20, None)
    mine, faithful = ({s.name: s.config for s in plan_stages(cfg)} for cfg in (ours, theirs))
    assert faithful["teacher"].data.add == [{"path": "mic_ir_copies/manifest.csv", "train": 0.3, "val": 0.7,
                                             "made_with": {"name": "impulse_response", "each": True}}]
    assert list(faithful["teacher"].data.fractions) == [1.0, 0.0, 0.0] and mine["teacher"].data.add == []
    for name in ("teacher", "student"):  # the stages differ in their data alone
        a, b = mine[name].to_dict(), faithful[name].to_dict()
        for cfg in (a, b):
            cfg.pop("data"), cfg.pop("out"), cfg["train"].pop("patience")
        assert a == b, name


def test_dcase2022_without_its_ir_copies_stops_before_the_baseline_trains(tmp_path, monkeypatch, capsys):
    root = layouts.tau2022(tmp_path / "tau")
    monkeypatch.chdir(tmp_path)  # mic_ir_copies/ is looked for where the recipe runs: not here
    assert main(["train", "dcase2022_task1", f"data.root={root}", f"out={tmp_path / 'chain'}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "stage teacher: data.add[0].path=mic_ir_copies/manifest.csv: not found" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "chain" / "baseline" / "summary.json").exists()


def test_dcase2022_refuses_ir_copies_made_with_a_random_ir_per_copy(tmp_path, monkeypatch, capsys):
    """§4.2.2: every clip convolved with each IR once; copies that drew an IR at random are not the thesis's
    (the teacher's data.add says made_with each: true) and stop the chain before the baseline trains."""
    from audioclf.data.audio import write_audio

    root = layouts.tau2022(tmp_path / "tau")
    monkeypatch.chdir(tmp_path)
    for k in range(2):
        write_audio(tmp_path / "irs" / f"ir{k}.wav", np.exp(-np.arange(200) / (20.0 + k)).astype(np.float32), 44100)
    make = ["augment", "--data", str(root), "--format", "tau2022", "--split", "train", "--variants", "2",
            "--no-original", "--out", "mic_ir_copies"]
    drawn = "{name: impulse_response, ir_dir: irs, drc: {}, p: 1.0}"
    assert main([*make, "--transform", drawn]) == 0
    train = ["train", "dcase2022_task1", f"data.root={root}", f"out={tmp_path / 'chain'}", *FAST]
    assert main(train) == 2
    err = capsys.readouterr().err
    assert "stage teacher: data.add[0]: the copies in" in err and "'each': True" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "chain" / "baseline" / "summary.json").exists()
    # made with each: true, the same folder passes the check (remade: other settings are refused in one folder)
    each = "{name: impulse_response, ir_dir: irs, drc: {}, each: true, p: 1.0}"
    assert main([*make, "--transform", each, "--overwrite"]) == 0
    from audioclf.config import load_config
    from audioclf.data.prepare import check_made_with
    from audioclf.workflows.stages import plan_stages

    cfg = load_config("dcase2022_task1", [f"data.root={root}"])
    teacher = {s.name: s.config for s in plan_stages(cfg)}["teacher"]
    check_made_with(teacher.data.add[0], "teacher")


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_fsd2019_noisy_robust_pretrains_with_the_generalised_cross_entropy_and_fine_tunes_with_bce(tmp_path, capsys):
    import audioclf
    from audioclf.config import load_config

    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    recipe = load_config("fsd2019_noisy_robust").to_dict()
    for stage in recipe["stages"]:  # the recipe's stages, 1 epoch each
        stage.setdefault("train", {}).update(epochs=1, batch_size=8, patience=None)
    recipe["stages"][0]["data"]["options"]["noisy_val_fraction"] = 0.5
    audioclf.train(root, recipe, out=tmp_path / "run")
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("generalised cross-entropy, q=0.7") == 1  # the noisy stage's header only
    noisy = RunDir(tmp_path / "run" / "noisy").read_config()
    curated = RunDir(tmp_path / "run" / "curated").read_config()
    assert (noisy["train"]["loss"], curated["train"]["loss"]) == ("gce", "task")
    assert _summary(tmp_path / "run" / "noisy")["task"] == "multi_label"
