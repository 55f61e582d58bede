"""Metrics against scikit-learn, the official lwlrap code (DCASE 2019 Task 2), the evaluation code of Darna Sequeiros
(2018, bachelor's thesis, Universidad Autónoma de Madrid) on AudioSet embeddings, and hand cases."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from audioclf import metrics as M
from audioclf.errors import ConfigError, DataError


# --- fixtures ---------------------------------------------------------------------------------------
def single_label_case(seed: int = 0, n: int = 120, c: int = 6, absent: int = 4):
    """Random labels (class ``absent`` never occurs) and Dirichlet probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c - 1, size=n)
    y[y >= absent] += 1  # shift so that class `absent` is skipped
    probs = rng.dirichlet(np.ones(c), size=n)
    return y, probs


def multi_label_case(seed: int = 0, n: int = 60, c: int = 9, ties: bool = False):
    """Random 0/1 targets with an all-zero class (column 3) and two all-zero clips (rows 0, 1)."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.int64)
    targets[:, 3] = 0
    targets[:2] = 0
    scores = rng.random((n, c))
    if ties:
        scores = np.round(scores, 1)  # many exact ties, within rows and within columns
    return targets, scores


# The official lwlrap code (DCASE 2019 Task 2 / FSD2019 Kaggle colab by D. Ellis), with the
# long-removed np.int / np.bool / np.float aliases replaced. Used only on tie-free scores:
# its argsort breaks ties arbitrarily.
def _one_sample_positive_class_precisions(scores, truth):
    num_classes = scores.shape[0]
    pos_class_indices = np.flatnonzero(truth > 0)
    if not len(pos_class_indices):
        return pos_class_indices, np.zeros(0)
    retrieved_classes = np.argsort(scores)[::-1]
    class_rankings = np.zeros(num_classes, dtype=int)
    class_rankings[retrieved_classes] = range(num_classes)
    retrieved_class_true = np.zeros(num_classes, dtype=bool)
    retrieved_class_true[class_rankings[pos_class_indices]] = True
    retrieved_cumulative_hits = np.cumsum(retrieved_class_true)
    precision_at_hits = retrieved_cumulative_hits[class_rankings[pos_class_indices]] / (
        1 + class_rankings[pos_class_indices].astype(float)
    )
    return pos_class_indices, precision_at_hits


def official_per_class_lwlrap(truth, scores):
    num_samples, num_classes = scores.shape
    precisions = np.zeros((num_samples, num_classes))
    for sample_num in range(num_samples):
        pos, prec = _one_sample_positive_class_precisions(scores[sample_num], truth[sample_num])
        precisions[sample_num, pos] = prec
    labels_per_class = np.sum(truth > 0, axis=0)
    weight_per_class = labels_per_class / float(np.sum(labels_per_class))
    per_class = np.sum(precisions, axis=0) / np.maximum(1, labels_per_class)
    return per_class, weight_per_class


# Darna Sequeiros (2018)'s evaluation code (the thesis's Annex A, cargarModelo.py), verbatim in numpy.
def report_mavprN(y_true, y_pred):
    ap = np.sum(y_pred * y_true, axis=1) / np.sum(np.clip(y_pred + y_true, 0, 1), axis=1)
    return np.mean(ap)


def report_sonrec(y_true, y_pred):
    return float(np.sum(y_pred * y_true)) / np.sum(y_true)


# --- single-label --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", [0, 1])
def test_single_label_matches_sklearn(seed):
    y, probs = single_label_case(seed)
    pred = probs.argmax(1)
    labels = list(range(probs.shape[1]))
    assert M.accuracy(y, probs) == pytest.approx(skm.accuracy_score(y, pred))
    assert M.balanced_accuracy(y, probs) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert M.macro_f1(y, probs) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert M.log_loss(y, probs) == pytest.approx(skm.log_loss(y, y_proba=probs, labels=labels), rel=1e-12)
    for normalize in (None, "true", "pred", "all"):
        expected = skm.confusion_matrix(y, pred, labels=labels, normalize=normalize)
        np.testing.assert_allclose(M.confusion_matrix(y, pred, len(labels), normalize=normalize), expected)
    # Label-only metrics take (N,) predictions as well as (N, C) probabilities.
    assert M.accuracy(y, pred) == M.accuracy(y, probs)


def test_macro_f1_counts_a_predicted_but_absent_class_as_zero():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])  # class 2 predicted once, never true: F1 0; class 3 neither: left out
    probs = np.eye(4)[pred]
    assert M.macro_f1(y, probs) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert M.macro_f1(y, probs) == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_log_loss_clips_and_renormalises():
    eps = 1e-15
    y = np.array([0, 2])
    probs = np.array([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]])
    # Row 0 after clipping: [eps, 0.5, 0.5] / (1 + eps); row 1 unchanged.
    expected = -(math.log(eps / (1 + eps)) + math.log(0.5)) / 2
    assert M.log_loss(y, probs, eps=eps) == pytest.approx(expected, rel=1e-12)
    # Rows that do not sum to 1 are renormalised (where clipping does not bite, scaling changes nothing).
    assert M.log_loss(y[1:], probs[1:] * 0.5, eps=eps) == pytest.approx(-math.log(0.5), rel=1e-12)
    # Class 1 never occurs in y_true: still a valid column (labels=range(C)).
    assert M.log_loss(np.array([0]), np.array([[0.25, 0.5, 0.25]])) == pytest.approx(-math.log(0.25))


def test_per_class_accuracy_and_confusion_hand_case():
    y = np.array([0, 0, 0, 1, 1, 3])
    pred = np.array([0, 1, 0, 1, 0, 1])
    probs = np.eye(4)[pred]
    np.testing.assert_allclose(M.per_class_accuracy(y, probs), [2 / 3, 1 / 2, np.nan, 0.0])
    assert M.balanced_accuracy(y, probs) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    counts = np.array([[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(M.confusion_matrix(y, pred, 4), counts)
    np.testing.assert_allclose(
        M.confusion_matrix(y, pred, 4, "true"),
        [[2 / 3, 1 / 3, 0, 0], [1 / 2, 1 / 2, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]],
    )
    np.testing.assert_allclose(
        M.confusion_matrix(y, pred, 4, "pred"),
        [[2 / 3, 1 / 3, 0, 0], [1 / 3, 1 / 3, 0, 0], [0, 0, 0, 0], [0, 1 / 3, 0, 0]],
    )
    np.testing.assert_allclose(M.confusion_matrix(y, pred, 4, "all"), counts / 6)
    # Probabilities are accepted in place of predictions (argmax taken).
    np.testing.assert_array_equal(M.confusion_matrix(y, probs), counts)


def test_torch_tensors_and_one_hot_targets_are_accepted():
    y, probs = single_label_case(2)
    expected = M.log_loss(y, probs)
    assert M.log_loss(torch.from_numpy(y), torch.from_numpy(probs).float()) == pytest.approx(expected, rel=1e-6)
    assert M.accuracy(np.eye(probs.shape[1])[y], probs) == M.accuracy(y, probs)
    t, s = multi_label_case(2)
    assert M.lwlrap(torch.from_numpy(t).bool(), torch.from_numpy(s)) == pytest.approx(M.lwlrap(t, s))


def test_single_label_input_errors():
    probs = np.full((2, 3), 1 / 3)
    with pytest.raises(DataError, match=r"y_true: class indices must be in \[0, 3\)"):
        M.accuracy(np.array([0, 3]), probs)
    with pytest.raises(DataError, match="probs: expected shape"):
        M.log_loss(np.array([0, 1, 2]), probs)
    with pytest.raises(DataError, match="integer"):
        M.accuracy(np.array([0.5, 1.0]), probs)
    with pytest.raises(ConfigError, match="normalize"):
        M.confusion_matrix([0, 1], [0, 1], 2, normalize="rows")


# --- multi-label ranking -------------------------------------------------------------------------
def test_lwlrap_matches_official_formula():
    t, s = multi_label_case(3)  # continuous scores: no ties, so the official code is well defined
    ref_per_class, ref_weights = official_per_class_lwlrap(t, s)
    per_class, weights = M.lwlrap_per_class(t, s)
    has_labels = t.sum(0) > 0
    np.testing.assert_allclose(per_class[has_labels], ref_per_class[has_labels], rtol=1e-12)
    assert np.isnan(per_class[~has_labels]).all() and (~has_labels).any()
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-12)
    assert M.lwlrap(t, s) == pytest.approx(np.sum(ref_per_class * ref_weights), rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_lwlrap_is_lrap_weighted_by_labels_per_clip(ties):
    t, s = multi_label_case(4, ties=ties)
    assert (t.sum(1) == 0).any()  # clips without labels: weight 0 here, ignored by the official formula
    expected = skm.label_ranking_average_precision_score(t, s, sample_weight=t.sum(1))
    assert M.lwlrap(t, s) == pytest.approx(expected, rel=1e-12)
    per_class, weights = M.lwlrap_per_class(t, s)
    assert np.nansum(per_class * weights) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_label_ranking_ap_matches_sklearn(ties):
    t, s = multi_label_case(5, ties=ties)
    assert M.label_ranking_ap(t, s) == pytest.approx(skm.label_ranking_average_precision_score(t, s), rel=1e-12)


def test_lwlrap_and_lrap_hand_case():
    t = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.4]])
    # Clip 0: class 0 ranked 1st (1/1), class 2 ranked 3rd with 2 hits (2/3); clip 1: class 1 1st (1/1).
    per_class, weights = M.lwlrap_per_class(t, s)
    np.testing.assert_allclose(per_class, [1.0, 1.0, 2 / 3])
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3])
    assert M.lwlrap(t, s) == pytest.approx(8 / 9)
    assert M.label_ranking_ap(t, s) == pytest.approx((5 / 6 + 1) / 2)
    # Ties take the worst rank: positive class 0 tied with negative class 1 -> rank 2, precision 1/2.
    assert M.lwlrap(np.array([[1, 0, 0]]), np.array([[0.5, 0.5, 0.1]])) == pytest.approx(0.5)
    assert math.isnan(M.lwlrap(np.zeros((2, 3)), s))


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_per_class_matches_sklearn(ties):
    t, s = multi_label_case(6, ties=ties)
    ap = M.average_precision_per_class(t, s)
    has_pos = t.sum(0) > 0
    expected = [skm.average_precision_score(t[:, c], s[:, c]) for c in np.flatnonzero(has_pos)]
    np.testing.assert_allclose(ap[has_pos], expected, rtol=1e-12)
    assert np.isnan(ap[~has_pos]).all()
    # mAP leaves the class without positives out instead of counting it as 0.
    assert M.mean_average_precision(t, s) == pytest.approx(np.mean(expected), rel=1e-12)
    assert M.mean_average_precision(t, s) > np.sum(expected) / t.shape[1]


def test_average_precision_hand_case():
    t = np.array([[1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.6]])
    np.testing.assert_allclose(M.average_precision_per_class(t, s), [(1 / 1 + 2 / 3) / 2])


def test_blocked_computation_equals_one_block(monkeypatch):
    t, s = multi_label_case(7, n=50, ties=True)
    expected = (M.lwlrap(t, s), M.label_ranking_ap(t, s), M.mean_average_precision(t, s))
    monkeypatch.setattr(M, "_BLOCK_ELEMENTS", 20)  # 2 rows (or 1 column) per block
    got = (M.lwlrap(t, s), M.label_ranking_ap(t, s), M.mean_average_precision(t, s))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


# --- multi-label decisions: Darna Sequeiros (2018)'s per-example mAP / pSR, F1 ---------------------
def test_per_example_map_and_psr_hand_case():
    t = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    s = np.array([[0.9, 0.6, 0.4, 0.1], [0.2, 0.7, 0.6, 0.5], [0.1, 0.2, 0.1, 0.0]])
    # Row 0: predicted {0,1}, true {0,2} -> 1/3. Row 1: predicted {1,2} (0.5 is not > 0.5), true {1}
    # -> 1/2. Row 2: nothing true or predicted -> left out.
    assert M.map_per_example(t, s) == pytest.approx((1 / 3 + 1 / 2) / 2)
    # pSR: 2 of the 3 present labels are predicted.
    assert M.psr(t, s) == pytest.approx(2 / 3)
    # Bipolar (±1) outputs: threshold 0 is the thesis's round((score + 1) / 2).
    assert M.map_per_example(t, 2 * s - 1, threshold=0.0) == pytest.approx(5 / 12)
    assert M.psr(t, 2 * s - 1, threshold=0.0) == pytest.approx(2 / 3)


def test_per_example_map_and_psr_match_the_thesis_code_and_jaccard():
    t, s = multi_label_case(8)
    t, s = t[2:], s[2:]  # the thesis's code divides by zero on clips with no labels and no predictions
    t[:, 0] = 1  # and AudioSet clips always have a label
    rounded = np.round(s)
    assert M.map_per_example(t, s) == pytest.approx(report_mavprN(t, rounded), rel=1e-12)
    assert M.map_per_example(t, s) == pytest.approx(skm.jaccard_score(t, rounded, average="samples"), rel=1e-12)
    assert M.psr(t, s) == pytest.approx(report_sonrec(t, rounded), rel=1e-12)
    assert M.psr(t, s) == pytest.approx(skm.recall_score(t, rounded, average="micro"), rel=1e-12)


def test_multilabel_f1_matches_sklearn():
    t, s = multi_label_case(9)
    pred = (s > 0.5).astype(int)
    pred[:, 3] = 0  # class 3: no positives and no predictions -> no F1, excluded from the mean
    s = np.where(pred == 1, s, np.minimum(s, 0.5))
    assert M.multilabel_micro_f1(t, s) == pytest.approx(skm.f1_score(t, pred, average="micro"), rel=1e-12)
    expected_macro = skm.f1_score(t, pred, average="macro", zero_division=np.nan)
    assert M.multilabel_macro_f1(t, s) == pytest.approx(expected_macro, rel=1e-12)


def test_multilabel_input_errors():
    with pytest.raises(DataError, match="0/1"):
        M.lwlrap(np.array([[0.2, 1.0]]), np.array([[0.1, 0.9]]))
    with pytest.raises(DataError, match="same shape"):
        M.mean_average_precision(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(DataError, match="nan"):
        M.lwlrap(np.ones((1, 2)), np.array([[np.nan, 0.1]]))


# --- groups, the logged summary, helpers ---------------------------------------------------------
def test_per_group_hand_case_and_subsets():
    y = np.array([0, 1, 1, 0, 1])
    probs = np.eye(2)[[0, 0, 1, 0, 0]]
    devices = ["a", "b", "a", "b", "b"]
    assert M.per_group(M.accuracy, devices, y, probs) == {"a": 1.0, "b": pytest.approx(1 / 3)}
    t, s = multi_label_case(10)
    groups = np.array(["x", "y", "z"])[np.arange(len(t)) % 3]
    result = M.per_group(M.lwlrap, groups, t, s)
    assert list(result) == ["x", "y", "z"]
    for value in result:
        assert result[value] == pytest.approx(M.lwlrap(t[groups == value], s[groups == value]))
    with pytest.raises(DataError, match="per_group"):
        M.per_group(M.accuracy, ["a"], y, probs)


def test_compute_metrics_single_label():
    y, probs = single_label_case(11, n=40)
    groups = {"device": ["A" if i % 2 else "S1" for i in range(40)], "city": ["x/y"] * 40}
    values = M.compute_metrics("single_label", y, probs, groups=groups, class_names=list("abcdef"))
    assert values["accuracy"] == pytest.approx(M.accuracy(y, probs))
    assert values["log_loss"] == pytest.approx(skm.log_loss(y, y_proba=probs, labels=range(6)))
    assert set(k for k in values if "/" not in k) == {"accuracy", "balanced_accuracy", "macro_f1", "log_loss", "ece"}
    odd = np.arange(40) % 2 == 1
    assert values["per_group/device/A/accuracy"] == pytest.approx(M.accuracy(y[odd], probs[odd]))
    assert values["per_group/device/S1/log_loss"] == pytest.approx(M.log_loss(y[~odd], probs[~odd]))
    assert values["per_group/city/x_y/accuracy"] == values["accuracy"]  # "/" in a value stays one key part
    assert all(isinstance(v, float) for v in values.values())
    with pytest.raises(DataError, match="7 columns"):
        M.compute_metrics("single_label", y, probs, class_names=list("abcdefg"))
    with pytest.raises(ConfigError, match="task 'regression'"):
        M.compute_metrics("regression", y, probs)


def test_compute_metrics_multi_label():
    t, s = multi_label_case(12)
    values = M.compute_metrics("multi_label", t.astype(np.float32), s, groups={"split": ["a"] * len(t)})
    assert set(k for k in values if "/" not in k) == {"lwlrap", "mAP", "mAP_per_example", "pSR", "lrap", "micro_f1", "macro_f1", "ece"}
    assert values["lwlrap"] == pytest.approx(skm.label_ranking_average_precision_score(t, s, sample_weight=t.sum(1)))
    assert values["lrap"] == pytest.approx(skm.label_ranking_average_precision_score(t, s))
    assert values["per_group/split/a/mAP"] == values["mAP"]
    assert values["per_group/split/a/lwlrap"] == values["lwlrap"]


def test_per_class_metrics():
    y = np.array([0, 0, 1])
    probs = np.eye(3)[[0, 1, 1]]
    values = M.per_class_metrics("single_label", y, probs, ["dog", "cat", "bird"])
    assert values["per_class/dog/accuracy"] == 0.5 and values["per_class/cat/accuracy"] == 1.0
    assert math.isnan(values["per_class/bird/accuracy"])
    t, s = multi_label_case(13, c=5)
    values = M.per_class_metrics("multi_label", t, s, list("abcde"))
    assert values["per_class/a/AP"] == pytest.approx(skm.average_precision_score(t[:, 0], s[:, 0]))


def test_higher_is_better_and_primary_metric():
    assert M.higher_is_better("accuracy") and M.higher_is_better("val/lwlrap") and M.higher_is_better("mAP")
    assert not M.higher_is_better("log_loss")
    assert not M.higher_is_better("loss") and not M.higher_is_better("val/loss")
    assert not M.higher_is_better("train/kd_loss")
    assert M.primary_metric("single_label") == "accuracy"
    assert M.primary_metric("multi_label") == "lwlrap"
    with pytest.raises(ConfigError):
        M.primary_metric("counting")


def test_tables_drop_loss_only_where_it_repeats_log_loss():
    from audioclf.metrics import shown_metric_names

    same = {"val": {"accuracy": 0.9, "log_loss": 0.3, "loss": 0.3}, "test": {"accuracy": 0.8, "log_loss": 0.5, "loss": 0.5}}
    assert shown_metric_names(same) == ["accuracy", "log_loss"]
    other = {"test": {"accuracy": 0.8, "log_loss": 0.5, "loss": 0.12}}  # e.g. a bipolar-MSE model's own loss
    assert shown_metric_names(other) == ["accuracy", "log_loss", "loss"]


def test_curves_mark_the_best_epoch_and_early_stop_and_keep_losses_off_the_score_axis(tmp_path, monkeypatch):
    from audioclf.runs import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    records = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1.1 / e, "val/accuracy": 0.5 + e / 20,
                "val/log_loss": 1.1 / e} for e in range(1, 8)]
    plots.plot_curves(records, tmp_path, "accuracy", best_epoch=5, planned_epochs=20)
    loss_fig, metrics_fig = figures
    labels = [h.get_label() for h in loss_fig.axes[0].get_legend().legend_handles]
    assert "best epoch 5" in labels and "early stop (7 of 20)" in labels
    score_axis, right_axis = metrics_fig.axes
    assert [line.get_label() for line in right_axis.get_lines()] == ["log_loss (right axis)"]
    assert "log_loss" not in [line.get_label() for line in score_axis.get_lines()]


def test_curves_draw_the_training_split_scores_that_score_train_logged(tmp_path, monkeypatch):
    """train.score_train's train_eval/* beside validation's: the train-vs-val curves a speaker-counting report draws."""
    from audioclf.runs import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    records = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1.1 / e, "val/accuracy": 0.5 + e / 20,
                "train_eval/loss": 0.9 / e, "train_eval/accuracy": 0.6 + e / 20} for e in range(1, 4)]
    plots.plot_curves(records, tmp_path, "accuracy")
    loss_fig, metrics_fig = figures
    assert [line.get_label() for line in loss_fig.axes[0].get_lines()] == ["train", "train (eval mode)", "val"]
    val, train = metrics_fig.axes[0].get_lines()[:2]
    assert (val.get_label(), train.get_label()) == ("accuracy", "train accuracy")
    assert list(train.get_ydata()) == [r["train_eval/accuracy"] for r in records]
    assert train.get_color() == val.get_color()


def test_the_loss_legend_says_what_inflates_the_training_loss(tmp_path, monkeypatch):
    """MixUp and label smoothing raise the logged training loss (validation's is clean): the legend says so."""
    from audioclf.config import load_config
    from audioclf.runs import plots
    from audioclf.training.loop import train_loss_inflation

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    records = [{"epoch": e, "train/loss": 1.5 / e, "val/loss": 1.0 / e, "val/accuracy": 0.5} for e in range(1, 5)]
    cfg = load_config(None, ["augment.mixup_alpha=0.4", "train.label_smoothing=0.1"])
    assert train_loss_inflation(cfg) == ["MixUp α=0.4", "label smoothing 0.1"]
    plots.plot_curves(records, tmp_path, "accuracy", train_inflated_by=train_loss_inflation(cfg))
    plots.plot_curves(records, tmp_path, "accuracy", train_inflated_by=train_loss_inflation(load_config(None, [])))
    (inflated, clean) = [[h.get_label() for h in figures[i].axes[0].get_legend().legend_handles] for i in (0, 2)]
    assert inflated[0] == "train (with MixUp α=0.4, label smoothing 0.1:\nhigher than a clean loss)"
    assert clean[0] == "train"  # a plain run: nothing to explain


def test_table_numbers_never_show_a_small_change_as_zero():
    from audioclf.console import format_number

    assert format_number(0.0734 - 0.07336) == "4e-05" and format_number(0.0) == "0.0000"
    assert format_number(0.0733) == "0.0733" and format_number(128000) == "128,000" and format_number(None) == "–"
