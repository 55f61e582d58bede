"""Decisions chosen, not assumed (audioclf.calibration): per-class thresholds chosen on validation, the ECE,
temperature scaling, abstention; and a run's decisions used by predict, serve's predictor, evaluate, the
ONNX export's metadata and report.md."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from audioclf import metrics as M
from audioclf.calibration import (Decisions, choose_threshold, choose_thresholds, fit_temperature,
                                  parse_threshold_rule, read_decisions, tempered, write_decisions)
from audioclf.cli import main
from audioclf.config import load_config
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.training.losses import evaluation_loss

TINY = ["train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.epochs=2", "train.num_workers=0"]


# --- thresholds ---------------------------------------------------------------------------------------------
def rare_class_set(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes: two common (40 %) whose scores split around 0.5, and one rare (3 %) whose positives score
    0.2-0.45 and negatives 0-0.2: ranked perfectly, yet below 0.5, so the fixed rule never predicts it."""
    rng = np.random.default_rng(seed)
    targets = np.stack([rng.random(n) < 0.4, rng.random(n) < 0.4, rng.random(n) < 0.03], axis=1)
    scores = np.empty((n, 3))
    for c in (0, 1):
        scores[:, c] = np.where(targets[:, c], rng.uniform(0.35, 1.0, n), rng.uniform(0.0, 0.65, n))
    scores[:, 2] = np.where(targets[:, 2], rng.uniform(0.2, 0.45, n), rng.uniform(0.0, 0.22, n))
    return targets.astype(np.float64), scores


def test_thresholds_chosen_on_validation_beat_half_on_test_macro_f1_with_a_rare_class():
    val, test = rare_class_set(3000, seed=1), rare_class_set(3000, seed=2)
    thresholds, fallbacks = choose_thresholds(*val, ["a", "b", "rare"])
    assert not fallbacks
    assert 0.15 < thresholds[2] < 0.3  # between the rare class's negatives and positives, far below 0.5
    at_half = M.multilabel_macro_f1(*test, 0.5)
    chosen = M.multilabel_macro_f1(*test, thresholds)
    per_class = M.multilabel_per_class_f1(*test, thresholds)["F1"]
    assert M.multilabel_per_class_f1(*test, 0.5)["F1"][2] == 0.0 and per_class[2] > 0.8
    assert chosen > at_half + 0.25, (chosen, at_half)


def test_each_threshold_is_the_best_f1_cut_and_a_class_without_positives_keeps_half():
    targets = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.7, 0.6, 0.4, 0.3, 0.1])
    threshold, why = choose_threshold(targets, scores, parse_threshold_rule("f1"))
    # cuts: top 1 F1 2/4, top 2 F1 4/5, top 3 F1 4/6, top 4 F1 6/7 (best), top 5 F1 6/8, all 6/9
    assert threshold == pytest.approx(0.35) and why is None
    assert M.binarize(scores, threshold).tolist() == [True, True, True, True, False, False]
    assert choose_threshold(np.zeros(6, bool), scores, parse_threshold_rule("f1")) == (0.5, "no positive in validation")


def test_a_precision_or_recall_target_is_met_on_validation():
    targets = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.7, 0.6, 0.4, 0.3, 0.1])
    high, _ = choose_threshold(targets, scores, parse_threshold_rule("precision=1.0"))
    assert high == pytest.approx(0.65)  # the most recall (2 of 3) at precision 1
    low, _ = choose_threshold(targets, scores, parse_threshold_rule("recall=1"))
    assert low == pytest.approx(0.35)  # the most precision (3 of 4) at recall 1
    fixed, _ = choose_threshold(targets, scores, parse_threshold_rule("0.8"))
    assert fixed == 0.8
    unreachable = parse_threshold_rule("precision=0.9")
    _, why = choose_threshold(np.array([0, 0, 1], bool), np.array([0.9, 0.8, 0.1]), unreachable)
    assert why == "precision 0.9 not reached in validation; best F1"


@pytest.mark.parametrize("value", ["precision=2", "recall=0", "f2", "1.5", "0", "precision=", "recall=abc"])
def test_a_bad_threshold_rule_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError, match=r"train\.threshold=.*expected f1, precision=P or recall=P") as info:
        load_config(overrides=[f"train.threshold={value}"])
    assert "\n" not in str(info.value)


def test_the_rule_is_read_from_an_override():
    assert load_config(overrides=["train.threshold=precision=0.9"]).train.threshold == "precision=0.9"
    assert load_config(overrides=["train.calibrate=true"]).train.calibrate is True


# --- calibration ----------------------------------------------------------------------------------------
def test_top_label_ece_of_a_hand_computed_case():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.42, 0.58], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    # bins of width 1/15: 0.9 -> bin 13 (acc 1/2, conf 0.9: gap 0.4); 0.58 and 0.55 -> bin 8 (acc 1, conf 0.565:
    # gap 0.435); ECE = 2/4 * 0.4 + 2/4 * 0.435
    assert M.expected_calibration_error(y, probs) == pytest.approx(0.4175)
    multi = M.multilabel_calibration_error(np.array([[1, 0]]), np.array([[0.9, 0.25]]))
    assert multi == pytest.approx((0.1 + 0.25) / 2)  # two binary forecasts, each alone in its bin
    assert M.compute_metrics("single_label", y, probs)["ece"] == pytest.approx(0.4175)
    assert not M.higher_is_better("ece")


def test_temperature_scaling_reduces_the_nll_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (4000, 5))
    true_probs = tempered("single_label", np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1.0)
    y = np.array([rng.choice(5, p=p) for p in true_probs])
    overconfident = np.exp(4 * logits) / np.exp(4 * logits).sum(1, keepdims=True)  # logits x 4
    t = fit_temperature("single_label", y, overconfident)
    assert 3.5 < t < 4.5
    after = tempered("single_label", overconfident, t)
    assert evaluation_loss("single_label", after, y) < evaluation_loss("single_label", overconfident, y) - 0.2
    assert M.expected_calibration_error(y, after) < M.expected_calibration_error(y, overconfident) / 2
    assert (after.argmax(1) == overconfident.argmax(1)).all()  # a temperature never changes the argmax
    # multi-label: sigmoid(logit(p) / T), the same fit
    z = rng.normal(0, 2, (3000, 3))
    targets = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    t_ml = fit_temperature("multi_label", targets, 1 / (1 + np.exp(-3 * z)))
    assert 2.5 < t_ml < 3.5


def test_min_confidence_abstains_below_it():
    decisions = Decisions(min_confidence=0.6)
    assert decisions.decide("single_label", ["a", "b"], np.array([0.55, 0.45])) == ((), True)
    assert decisions.decide("single_label", ["a", "b"], np.array([0.3, 0.7])) == (("b",), False)
    thresholds = Decisions(thresholds=np.array([0.2, 0.9]))
    assert thresholds.decide("multi_label", ["a", "b"], np.array([0.3, 0.8])) == (("a",), False)


def test_unusable_decisions_files_are_one_line_errors(tmp_path):
    assert read_decisions(tmp_path, ["a"]).temperature == 1.0  # a run from before: T = 1, 0.5
    (tmp_path / "decisions.json").write_text('{"temperature": -1, "thresholds": null}')
    with pytest.raises(ConfigError, match="decisions.json: unusable decisions: temperature -1"):
        read_decisions(tmp_path, ["a"])
    (tmp_path / "decisions.json").write_text('{"temperature": 1, "thresholds": {"b": 0.3}}')
    with pytest.raises(ConfigError, match="decisions.json: unusable decisions .*KeyError"):
        read_decisions(tmp_path, ["a"])


# --- a run's decisions, end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("decisions")
    data = make_demo_dataset(root / "data", n_per_class=4, seconds=1.0, multi_label=True, seed=3)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY, "train.calibrate=true"]) == 0
    return root / "run", data


def test_a_multilabel_run_stores_its_decisions_and_reports_them(multilabel_run):
    run, _ = multilabel_run
    saved = json.loads((run / "decisions.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    classes = summary["classes"]
    assert set(saved["thresholds"]) == set(classes) and saved["calibrated"] and saved["temperature"] != 1.0
    assert summary["decisions"]["thresholds"] == saved["thresholds"]
    assert "ece" in summary["metrics"]["test"] and "macro_f1" in summary["metrics"]["test"]
    report = (run / "report.md").read_text()
    assert "## Decisions" in report and "Temperature scaling: T =" in report
    for name, why in saved["fallbacks"].items():  # the classes validation could not choose for, said so
        assert f"| {name} | 0.5000 | {why} |" in report
    assert (run / "plots" / "reliability.png").stat().st_size > 0 and "plots/reliability.png" in report


def test_a_multilabel_ensemble_decides_at_thresholds_chosen_on_validation(multilabel_run):
    # (before the tests below rewrite this run's decisions.json)
    from audioclf.workflows.evaluation import ensemble_runs, evaluate_run

    run, _ = multilabel_run
    saved = json.loads((run / "decisions.json").read_text())
    alone = evaluate_run(run, device="cpu")["metrics"]
    # A run averaged with itself is the run: its average's validation pass chooses the run's own thresholds, and
    # the average and each member are scored at them, not at 0.5.
    result = ensemble_runs([run, run], device="cpu")
    chosen = result["decisions"]
    assert chosen["chosen_on"] == "val" and chosen["rule"] == saved["rule"]
    assert chosen["thresholds"] == pytest.approx(saved["thresholds"], abs=1e-4)
    for metrics in (result["ensemble"], result["members"][str(run)]):
        for name in ("macro_f1", "micro_f1", "pSR", "lwlrap"):
            assert metrics[name] == pytest.approx(alone[name], abs=1e-6), name


def test_predict_and_evaluate_use_the_stored_thresholds(multilabel_run, tmp_path, capsys):
    from audioclf.deploy.predictor import Predictor
    from audioclf.workflows.evaluation import evaluate_run

    run, data = multilabel_run
    classes = json.loads((run / "summary.json").read_text())["classes"]
    files = sorted((data.parent / "audio").glob("*.wav"))[:6]
    chosen = evaluate_run(run, device="cpu")["metrics"]
    # every class always on (threshold 0): every file gets every label; evaluate's decisions follow
    write_decisions(run, Decisions(1.0, np.zeros(len(classes))), classes)
    predictor = Predictor.from_run(run, device="cpu")
    predictions = predictor.predict_files(files)
    assert all(set(p.labels) == set(classes) for p in predictions)
    # events start at the same stored thresholds: every class is an event over the whole file
    assert predictor.decision_thresholds().tolist() == [0.0] * len(classes)
    assert {e.label for e in predictor.events(files[0])} == set(classes)
    all_on = evaluate_run(run, device="cpu")["metrics"]
    assert all_on["pSR"] == 1.0 and all_on["micro_f1"] != chosen["micro_f1"]
    assert all_on["lwlrap"] == pytest.approx(chosen["lwlrap"], rel=0.05)  # a ranking metric: T only, no thresholds
    # every class off: no labels, '-' in the CSV, and the command line's line says so
    write_decisions(run, Decisions(1.0, np.ones(len(classes))), classes)
    assert main(["predict", str(run), *map(str, files[:2]), "--csv", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [row["prediction"] for row in rows] == ["-", "-"]
    assert capsys.readouterr().out.count("  -> -") == 2
    assert evaluate_run(run, device="cpu")["metrics"]["pSR"] == 0.0


def test_the_export_carries_the_decisions_and_onnx_predicts_with_them(multilabel_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from audioclf.deploy.export import export_onnx, read_metadata
    from audioclf.deploy.onnx_predictor import OnnxPredictor
    from audioclf.deploy.predictor import Predictor

    run, data = multilabel_run
    classes = json.loads((run / "summary.json").read_text())["classes"]
    thresholds = np.linspace(0.3, 0.7, len(classes))
    write_decisions(run, Decisions(2.5, thresholds), classes)
    path = export_onnx(run, tmp_path / "m.onnx")
    meta = read_metadata(path)["decisions"]
    assert meta["temperature"] == 2.5 and meta["thresholds"] == dict(zip(classes, thresholds.round(6).tolist()))
    files = sorted((data.parent / "audio").glob("*.wav"))[:4]
    onnx, torch_ = OnnxPredictor(path).predict_files(files), Predictor.from_run(run, device="cpu").predict_files(files)
    for a, b in zip(onnx, torch_):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
        assert a.labels == b.labels


@pytest.fixture(scope="module")
def single_label_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("abstain")
    data = make_demo_dataset(root / "data", n_per_class=3, seconds=1.0, seed=5)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY, "train.ensemble=none"]) == 0
    return root / "run", data


def test_predict_min_confidence_abstains_and_counts(single_label_run, tmp_path, capsys):
    run, data = single_label_run
    files = [str(p) for p in sorted(data.rglob("*.wav"))[:4]]
    assert main(["predict", run.as_posix(), *files, "--min-confidence", "1.0", "--csv", str(tmp_path / "a.csv")]) == 0
    captured = capsys.readouterr()
    assert "4 of 4 file(s) abstained" in captured.err and captured.out.count("abstained") == 4
    assert {row["prediction"] for row in csv.DictReader((tmp_path / "a.csv").open())} == {"-"}
    assert main(["predict", run.as_posix(), *files, "--min-confidence", "0"]) == 0
    assert "0 of 4 file(s) abstained" in capsys.readouterr().err
    assert main(["predict", run.as_posix(), files[0], "--min-confidence", "1.5"]) == 2
    assert "min_confidence=1.5: expected a probability in [0, 1]" in capsys.readouterr().err


def test_the_python_api_and_the_server_abstain_too(single_label_run):
    pytest.importorskip("fastapi")
    from audioclf.deploy.predictor import Predictor
    from audioclf.deploy.serve import ServeLimits, create_app, model_info
    from audioclf.workflows.api import Run
    from servers import serving
    from test_serve import request

    run, data = single_label_run
    path = sorted(data.rglob("*.wav"))[0]
    assert Run(run).predict(path, device="cpu", min_confidence=1.0)[0].abstained
    assert not Run(run).predict(path, device="cpu")[0].abstained
    predictor = Predictor.from_run(run, device="cpu")
    with serving(create_app(predictor, model_info(run, predictor), ServeLimits())) as port:
        status, result = request(f"http://127.0.0.1:{port}/predict?min_confidence=1", path.read_bytes(), "audio/wav")
        assert status == 200 and result["abstained"] and result["labels"] == []
        status, result = request(f"http://127.0.0.1:{port}/predict", path.read_bytes(), "audio/wav")
        assert status == 200 and not result["abstained"] and len(result["labels"]) == 1
        status, result = request(f"http://127.0.0.1:{port}/predict?min_confidence=2", path.read_bytes(), "audio/wav")
        assert status == 400 and "min_confidence=2.0: expected a probability" in result["error"]


def test_a_multilabel_f1_monitor_is_at_the_thresholds_chosen_on_each_validation_pass(tmp_path):
    from audioclf.calibration import choose_thresholds
    from audioclf.workflows.evaluation import run_outputs

    data = make_demo_dataset(tmp_path / "data", n_per_class=4, seconds=1.0, multi_label=True, seed=4)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY, "train.monitor=macro_f1",
                 "train.ensemble=none", "train.keep=last"]) == 0
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    val = run_outputs(run, data=str(run / "manifest.csv"), split="val", device="cpu").result  # the kept epoch's
    classes = json.loads((run / "summary.json").read_text())["classes"]
    chosen, _ = choose_thresholds(val.targets, val.probs, classes)
    # the monitored value is the F1 of the decisions chosen on that pass, which 0.5 does not reach here
    assert last["val/macro_f1"] == pytest.approx(M.multilabel_macro_f1(val.targets, val.probs, chosen), abs=1e-9)
    assert last["val/macro_f1"] > M.multilabel_macro_f1(val.targets, val.probs, 0.5) + 1e-6
    assert last["val/lwlrap"] == pytest.approx(M.lwlrap(val.targets, val.probs), abs=1e-9)  # no threshold: as before


def test_min_confidence_on_a_multilabel_model_is_refused_not_ignored(multilabel_run, capsys):
    pytest.importorskip("fastapi")
    from audioclf.deploy.predictor import Predictor
    from audioclf.deploy.serve import ServeLimits, create_app, model_info
    from servers import serving
    from test_serve import request

    run, data = multilabel_run
    path = sorted((data.parent / "audio").glob("*.wav"))[0]
    assert main(["predict", str(run), str(path), "--min-confidence", "0.5"]) == 2
    assert "min_confidence=0.5: a single-label setting" in capsys.readouterr().err
    predictor = Predictor.from_run(run, device="cpu")
    with serving(create_app(predictor, model_info(run, predictor), ServeLimits())) as port:
        status, result = request(f"http://127.0.0.1:{port}/predict?min_confidence=0.5", path.read_bytes(), "audio/wav")
        assert status == 400 and "a single-label setting" in result["error"] and "\n" not in result["error"]
        status, result = request(f"http://127.0.0.1:{port}/predict", path.read_bytes(), "audio/wav")
        assert status == 200  # the server keeps serving


def test_a_fresh_run_in_an_old_folder_drops_the_old_decisions(tmp_path):
    from audioclf.runs import RunDir

    write_decisions(tmp_path, Decisions(3.0, np.array([0.9])), ["a"])
    RunDir(tmp_path).reset()  # what training does before writing a new run there
    assert read_decisions(tmp_path, ["a"]).temperature == 1.0


def test_rescoring_with_decisions_keeps_the_group_columns_first_scored():
    from audioclf.training.decisions import apply_decisions
    from audioclf.training.evaluate import SplitResult, score

    targets, probs = rare_class_set(40, seed=3)
    groups = {"device": ["a", "b"] * 20, "source": [f"s{i}" for i in range(40)]}  # one scored, one too many values
    first = SplitResult(score("multi_label", targets, probs, "xyz", {"device": groups["device"]}), probs, targets,
                        groups=groups)
    again = apply_decisions(first, Decisions(1.0, np.array([0.5, 0.5, 0.2])), "multi_label", "xyz")
    assert {k.split("/")[1] for k in again.metrics if k.startswith("per_group/")} == {"device"}
    assert again.metrics["macro_f1"] > first.metrics["macro_f1"]  # the rare class now decided at 0.2
