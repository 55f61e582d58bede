"""report.md's diagnostics: each finding appears when the numbers call for it, and only then."""

from __future__ import annotations

from audioclf.runs.diagnostics import diagnose


def _summary(train=0.80, val=0.78, test=0.77, best=5, planned=10, confusion=None, monitor="accuracy"):
    return {"monitor": monitor, "best_epoch": best, "planned_epochs": planned, "classes": ["a", "b", "c"],
            "metrics": {"train": {monitor: train}, "val": {monitor: val}, "test": {monitor: test}},
            "confusion": {"test": confusion} if confusion else {}}


RECORDS = [{"epoch": e} for e in range(1, 11)]


def test_a_healthy_run_has_nothing_to_say():
    assert diagnose(_summary(), RECORDS) == []


def test_overfitting_names_the_gap_and_what_to_change():
    (finding,) = diagnose(_summary(train=0.99, val=0.70, test=0.69), RECORDS)
    assert finding.startswith("**Overfitting**") and "0.990" in finding and "0.700" in finding
    assert "augment" in finding and "weight_decay" in finding


def test_underfitting_when_even_training_clips_are_missed():
    (finding,) = diagnose(_summary(train=0.40, val=0.38, test=0.37), RECORDS)
    assert finding.startswith("**Underfitting**")


def test_a_validation_test_gap_points_at_groups():
    (finding,) = diagnose(_summary(train=0.85, val=0.80, test=0.55), RECORDS)
    assert finding.startswith("**Validation and test disagree**") and "data.group" in finding


def test_losses_are_compared_the_other_way_round():
    # log loss: lower is better, so a training loss far *below* validation is the overfitting case.
    findings = diagnose(_summary(train=0.05, val=0.90, test=0.92, monitor="log_loss"), RECORDS)
    assert [f.split("**")[1] for f in findings] == ["Overfitting"]
    assert diagnose(_summary(train=0.90, val=0.88, test=0.89, monitor="log_loss"), RECORDS) == []


def test_epoch_findings():
    assert diagnose(_summary(best=10, planned=10), RECORDS)[0].startswith("**Still improving**")
    assert diagnose(_summary(best=1, planned=10), RECORDS)[0].startswith("**Best epoch came early**")
    # Early stopping ended the run before the planned epochs: the last epoch is not "still improving".
    assert diagnose(_summary(best=10, planned=30), RECORDS) == []


def test_most_confused_pairs_from_the_test_confusion_matrix():
    confusion = [[5, 3, 0], [0, 6, 1], [4, 0, 2]]
    (finding,) = diagnose(_summary(confusion=confusion), RECORDS)
    assert finding == "**Most confused (test)**: c taken for a (4x); a taken for b (3x); b taken for c (1x)."


def test_a_validation_test_gap_is_judged_by_the_split_sizes():
    def gap(val, test, n_val, n_test):
        summary = {**_summary(train=val + 0.02, val=val, test=test), "counts": {"val": n_val, "test": n_test}}
        return [f for f in diagnose(summary, RECORDS) if "disagree" in f]

    # 0.80 vs 0.60 on 10 items each: about one standard error, chance can do that.
    assert gap(0.80, 0.60, 10, 10) == []
    # 0.80 vs 0.74 on 2,000 items each: small, but about 4.5 standard errors.
    (finding,) = gap(0.80, 0.74, 2000, 2000)
    assert "more than their sizes explain" in finding and "standard errors for 2000 and 2000 items" in finding


def _held_out_speakers(n_val=1, n_test=1):
    """A run whose split kept speakers apart (summary.json's ``split_groups``): 8 for training, a few held out."""
    names = [f"s{i:02d}" for i in range(8 + n_val + n_test)]
    return {"column": "speaker", "train": {"count": 8, "names": names[:8]},
            "val": {"count": n_val, "names": names[8:8 + n_val]}, "test": {"count": n_test, "names": names[8 + n_val:]}}


def test_with_speakers_kept_apart_a_validation_test_gap_is_speaker_variation_not_a_leak():
    summary = {**_summary(train=0.95, val=0.90, test=0.60), "counts": {"val": 200, "test": 200},
               "split_groups": _held_out_speakers()}
    (finding,) = [f for f in diagnose(summary, RECORDS) if "disagree" in f]
    # No advice to add the group column the split already used; the speakers of each split are named instead.
    assert "data.group" not in finding and "so validation predicts test" not in finding
    assert "validation: 1 (s08); test: 1 (s09)" in finding
    assert "neither a leak nor overfitting to validation" in finding and "speaker variation" in finding
    assert "1 in validation, 1 in test" in finding and "spread is large" in finding and "`cv=5`" in finding


def test_with_many_speakers_held_out_the_gap_names_them_without_the_few_groups_warning():
    summary = {**_summary(train=0.95, val=0.90, test=0.60), "counts": {"val": 200, "test": 200},
               "split_groups": _held_out_speakers(n_val=12, n_test=12)}
    (finding,) = [f for f in diagnose(summary, RECORDS) if "disagree" in f]
    assert "speaker variation" in finding and "test: 12 (s20, s21, s22, s23, s24, s25, s26, s27, +4 more)" in finding
    assert "spread is large" not in finding
