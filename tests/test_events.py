"""Window probabilities -> sound events (deploy.events) on hand-made sequences, their CSV, the events config keys,
strong-label files and their scoring through psds_eval on a case computed by hand, and the strong labels that
``synth mixtures`` writes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audioclf.cli import main
from audioclf.config import EventsConfig, load_config
from audioclf.data.strong_labels import StrongLabel, read_strong_labels
from audioclf.deploy.events import (Event, decision_thresholds, detect_events, events_config, events_csv_text,
                                    median_filter_windows, write_events_csv)
from audioclf.deploy.predictor import WindowedPredictor
from audioclf.errors import ConfigError, DataError

# Windows 1 s long, 0.5 s apart: window k covers [0.5 k, 0.5 k + 1]; its stretch (nearest its centre) is
# [0.5 k + 0.25, 0.5 k + 0.75], the first from 0 and the last to the end.
STARTS = np.arange(12) * 0.5
ENDS = STARTS + 1.0


def events_of(probs, classes=("dog",), **settings):
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    n = len(probs)
    return detect_events("a.wav", STARTS[:n], ENDS[:n], probs, list(classes), EventsConfig(**settings))


def spans(events):
    return [(e.label, e.onset, e.offset) for e in events]


def test_hysteresis_starts_at_high_and_continues_down_to_low():
    probs = [0.1, 0.35, 0.6, 0.4, 0.35, 0.1, 0.45, 0.1, 0.1, 0.1, 0.1, 0.1]
    found = events_of(probs, high=0.5, low=0.3)
    # windows 1..4 are >= 0.3 and reach 0.6; window 6 (0.45) never reaches 0.5: no event
    assert spans(found) == [("dog", 0.75, 2.75)] and found[0].peak == pytest.approx(0.6)
    # a single threshold (low = high) keeps only window 2
    assert spans(events_of(probs, high=0.5, low=0.5)) == [("dog", 1.25, 1.75)]


def test_low_defaults_to_a_fraction_of_the_class_threshold():
    probs = [0.1, 0.31, 0.6, 0.29, 0.1, 0.1]
    assert spans(events_of(probs)) == [("dog", 0.75, 1.75)]  # high 0.5 (decision threshold), low 0.3
    per_class = decision_thresholds(["dog"], {"dog": 0.7})
    assert detect_events("a.wav", STARTS[:6], ENDS[:6], np.array(probs)[:, None], ["dog"], EventsConfig(),
                         per_class) == []  # 0.6 no longer reaches the class's own threshold


def test_median_filter_removes_a_one_window_spike_and_fills_a_one_window_dip():
    spike = [0.1, 0.1, 0.9, 0.1, 0.1, 0.1]
    assert len(events_of(spike, high=0.5)) == 1 and events_of(spike, high=0.5, median_windows=3) == []
    dip = [0.1, 0.9, 0.9, 0.0, 0.9, 0.9, 0.1, 0.1]
    assert len(events_of(dip, high=0.5)) == 2
    assert spans(events_of(dip, high=0.5, median_windows=3)) == [("dog", 0.75, 3.25)]
    np.testing.assert_allclose(median_filter_windows(np.array(dip)[:, None], 3)[:, 0],
                               [0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1])


def test_max_gap_merges_and_min_duration_drops():
    probs = [0.9, 0.0, 0.9, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9, 0.0, 0.0, 0.0]
    # alone: [0, 0.75], [1.25, 1.75], [3.25, 4.75]; gaps 0.5 and 1.5
    assert spans(events_of(probs, high=0.5)) == [("dog", 0.0, 0.75), ("dog", 1.25, 1.75), ("dog", 3.25, 4.75)]
    merged = events_of(probs, high=0.5, max_gap=1.0)
    assert spans(merged) == [("dog", 0.0, 1.75), ("dog", 3.25, 4.75)] and merged[0].peak == pytest.approx(0.9)
    assert spans(events_of(probs, high=0.5, min_duration=1.0)) == [("dog", 3.25, 4.75)]
    # merged first, then measured: 1.75 s survives a minimum of 1.5 s
    assert spans(events_of(probs, high=0.5, max_gap=1.0, min_duration=1.5)) == [("dog", 0.0, 1.75),
                                                                                   ("dog", 3.25, 4.75)]


def test_the_energy_gate_keeps_events_out_of_quiet_windows():
    probs = np.full((12, 1), 0.9)  # a single-label model names its class everywhere, silence included
    levels = np.full(12, -200.0)
    levels[4:7] = -10.0
    levels[8] = -45.0  # 35 dB below the loudest window: quiet, but not silence at -40
    gate = detect_events("a.wav", STARTS, ENDS, probs, ["dog"], EventsConfig(), levels=levels)
    assert spans(gate) == [("dog", 2.25, 3.75), ("dog", 4.25, 4.75)]  # windows 4-6 and 8
    strict = detect_events("a.wav", STARTS, ENDS, probs, ["dog"], EventsConfig(min_level_db=-20), levels=levels)
    assert spans(strict) == [("dog", 2.25, 3.75)]
    assert spans(events_of(probs, min_level_db=None)) == [("dog", 0.0, 6.5)]  # no gate: the whole recording
    assert spans(detect_events("a.wav", STARTS, ENDS, probs, ["dog"], EventsConfig(min_level_db=None),
                               levels=levels)) == [("dog", 0.0, 6.5)]


class Namer(WindowedPredictor):
    """A single-label stand-in that names the tone in every window, silence included."""

    classes, task, sample_rate, clip_samples = ["tone", "other"], "single_label", 8000, 8000

    def window_probabilities(self, windows):
        return np.tile(np.array([[0.9, 0.1]], np.float32), (len(windows), 1))


def test_a_tone_in_silence_is_one_event_where_the_tone_is_not_the_whole_recording(tmp_path):
    sr = 8000
    wave = np.zeros(10 * sr, np.float32)
    t = np.arange(2 * sr) / sr
    wave[4 * sr : 6 * sr] = 0.5 * np.sin(2 * np.pi * 440 * t)  # a tone from 4 to 6 s, digital silence around it
    path = tmp_path / "tone.wav"
    sf.write(path, wave, sr)
    predictor = Namer()
    timeline = predictor.timeline(path)
    assert len(timeline.levels) == len(timeline.starts) == 19
    loudest = int(np.argmax(timeline.levels))
    assert timeline.levels[loudest] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)  # a 0.5 sine's RMS
    assert timeline.levels[0] == pytest.approx(-200.0)  # digital silence, floored
    assert timeline.to_dict()["levels_db"][loudest] == pytest.approx(timeline.levels[loudest], abs=0.01)
    gated = predictor.events(path)  # the default gate: -40 dB below the loudest window
    assert spans(gated) == [("tone", 3.75, 6.25)]  # windows 7-11 overlap the tone; each stands for its centre ± 0.25 s
    assert spans(predictor.events(path, settings=EventsConfig(min_level_db=None))) == [("tone", 0.0, 10.0)]


def test_classes_are_detected_apart_and_sorted_by_onset():
    probs = np.zeros((6, 2))
    probs[3:5, 0] = 0.8
    probs[0:2, 1] = 0.7
    assert spans(events_of(probs, classes=("dog", "cat"))) == [("cat", 0.0, 1.25), ("dog", 1.75, 2.75)]


def test_events_csv_is_the_dcase_columns_plus_the_peak(tmp_path):
    events = [Event("a.wav", 0.25, 1.75, "dog", 0.91234567), Event("b.wav", 2.0, 3.5, "-cat", 0.5)]
    expected = ("filename,onset,offset,event_label,peak_probability\n"
                "a.wav,0.250,1.750,dog,0.912346\nb.wav,2.000,3.500,-cat,0.500000\n")
    assert events_csv_text(events) == expected
    path = write_events_csv(events, tmp_path / "events.csv")
    assert path.read_text() == expected and [p.name for p in tmp_path.iterdir()] == ["events.csv"]  # no temp left
    back = read_strong_labels(path)  # what predict writes, evaluation reads
    assert back == [StrongLabel("a.wav", 0.25, 1.75, "dog"), StrongLabel("b.wav", 2.0, 3.5, "-cat")]


@pytest.mark.parametrize("overrides, key", [
    (["events.high=1.5"], "events.high"), (["events.low=0"], "events.low"),
    (["events.median_windows=4"], "events.median_windows"), (["events.min_duration=-1"], "events.min_duration"),
    (["events.max_gap=nan"], "events.max_gap"), (["events.low=0.5", "events.high=0.4"], "events.low"),
    (["events.median_windows=wide"], "events.median_windows"), (["events.min_level_db=6"], "events.min_level_db"),
    (["events.min_level_db=-inf"], "events.min_level_db"),
])
def test_bad_events_settings_are_one_line_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_a_runs_stored_events_section_is_checked_as_a_config():
    assert events_config({"median_windows": 5, "max_gap": 0.5}) == EventsConfig(median_windows=5, max_gap=0.5)
    assert events_config(None) == EventsConfig()
    with pytest.raises(ConfigError, match="events.min_duration"):
        events_config({"min_duration": -2})
    # --events-set: overrides on top of the run's section, each checked
    assert events_config({"median_windows": 5}, ["events.max_gap=1", "events.median_windows=3"]) == \
        EventsConfig(median_windows=3, max_gap=1.0)
    with pytest.raises(ConfigError, match="events.median_window"):
        events_config(None, ["events.median_window=3"])  # a misspelt key, named
    with pytest.raises(ConfigError, match="expected events.KEY=VALUE"):
        events_config(None, ["train.epochs=3"])


def test_config_list_shows_the_events_keys(capsys):
    assert main(["config", "--list"]) in (0, None)
    text = capsys.readouterr().out
    for key in ("events.high", "events.low", "events.median_windows", "events.min_duration", "events.max_gap",
                "events.min_level_db"):
        assert key in text


def test_decision_thresholds_default_and_per_class():
    np.testing.assert_array_equal(decision_thresholds(["a", "b"]), [0.5, 0.5])
    np.testing.assert_array_equal(decision_thresholds(["a", "b"], {"b": 0.2}), [0.5, 0.2])
    with pytest.raises(ConfigError, match="unknown classes: c"):
        decision_thresholds(["a", "b"], {"c": 0.2})


@pytest.mark.parametrize("row, message", [
    ("a.wav,2.0,1.0,dog", "onset 2 s is not before offset 1 s"),
    ("a.wav,nan,1.0,dog", "onset='nan'"),
    ("a.wav,0.5,x,dog", "offset='x'"),
    ("a.wav,0.5,1.0,cow", "unknown event_label 'cow'"),
    ("a.wav,0.5,1.0,", "empty filename or event_label"),
    ("a.wav,1.0,1.0,dog", "onset 1 s is not before offset 1 s"), ("a.wav,0,NaN,dog", "offset='NaN'"),
    ("a.wav,-1,2,dog", "onset='-1'"), ("a.wav,0,inf,dog", "offset='inf'"),
    ("a.wav,0.5", "2 of 4 columns; missing offset,event_label"),
])
def test_hostile_strong_labels_are_one_line_errors_naming_the_line(tmp_path, row, message):
    path = tmp_path / "strong.csv"
    path.write_text(f"filename,onset,offset,event_label\na.wav,0,1,dog\n{row}\n")
    with pytest.raises(DataError) as info:
        read_strong_labels(path, ["dog", "cat"])
    assert message in str(info.value) and "line 3" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"", "empty file; expected a header like 'filename,onset,offset,event_label'"),
    (b"\n\n", "empty file; expected a header like 'filename,onset,offset,event_label'"),
    (b"filename,onset,offset,event_label\n", "no events (a header and no rows)"),
    (b"\xff\xfe\x00garbage\x00", "not a UTF-8 text file"),
    (b"fname,start,end,label\na.wav,0,1,dog\n", "missing filename,onset,offset,event_label"),
])
def test_hostile_strong_label_files_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "strong.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_strong_labels(path, ["dog"])
    assert str(info.value).startswith(str(path)) and message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="cannot read"):
        read_strong_labels(tmp_path / "gone.csv")


def test_strong_labels_read_dcase_tsv_and_name_a_missing_column(tmp_path):
    tsv = tmp_path / "strong.tsv"
    tsv.write_text("filename\tonset\toffset\tevent_label\nx.wav\t0.5\t1.25\tSpeech\n")
    assert read_strong_labels(tsv) == [StrongLabel("x.wav", 0.5, 1.25, "Speech")]
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,onset,event_label\nx.wav,0.5,Speech\n")
    with pytest.raises(DataError, match="missing offset"):
        read_strong_labels(bad)


# --- scoring through psds_eval -------------------------------------------------------------------------------
TRUTH = [StrongLabel("a.wav", 0, 2, "dog"), StrongLabel("a.wav", 5, 7, "cat"), StrongLabel("b.wav", 1, 3, "dog")]
DURATIONS = {"a.wav": 10.0, "b.wav": 10.0}


def _score(detections):
    pytest.importorskip("psds_eval")
    from audioclf.deploy.event_scores import score_events

    return score_events(TRUTH, DURATIONS, lambda s: [e for e in detections if e.peak >= (s.high or 0.5)],
                        EventsConfig())


def test_event_f1_on_a_hand_case_counts_a_missed_class_as_zero():
    # dog: a.wav [0.2, 2] covers 90 % of its truth and lies inside it (dtc = gtc = 0.7 met), b.wav exact: TP 2,
    # FP 0, FN 0 -> F1 1. cat: the detection is in b.wav, the truth in a.wav: TP 0, FP 1, FN 1 -> F1 0.
    # Macro F1 = (1 + 0) / 2 = 0.5 (psds_eval 0.5.3's own macro F would skip cat's 0 / 0 and say 1.0).
    result = _score([Event("a.wav", 0.2, 2, "dog", 0.9), Event("b.wav", 1, 3, "dog", 0.8),
                     Event("b.wav", 6, 7, "cat", 0.7)])
    assert result["event_f1"] == pytest.approx(0.5)
    assert result["event_f1_per_class"] == {"cat": 0.0, "dog": 1.0}
    # PSDS with alpha_st = 1 takes the classes' mean TP ratio minus its spread: (1 + 0) / 2 - 0.5 = 0
    assert result["psds1"] == pytest.approx(0.0)


def test_perfect_detections_score_one_and_an_extra_one_lowers_f1():
    perfect = [Event(t.filename, t.onset, t.offset, t.label, 0.9) for t in TRUTH]
    result = _score(perfect)
    assert result["event_f1"] == pytest.approx(1.0) and result["psds1"] == pytest.approx(1.0)
    assert result["psds2"] == pytest.approx(1.0)
    # one false dog in b.wav: dog TP 2, FP 1, FN 0 -> 2 * 2 / (2 * 2 + 1) = 0.8; cat 1 -> macro 0.9
    assert _score(perfect + [Event("b.wav", 6, 8, "dog", 0.9)])["event_f1"] == pytest.approx(0.9)


def test_overlapping_truth_of_one_class_is_a_one_line_error():
    pytest.importorskip("psds_eval")
    from audioclf.deploy.event_scores import score_events

    truth = TRUTH + [StrongLabel("a.wav", 1, 3, "dog")]
    with pytest.raises(DataError, match="strong labels: .*intersecting"):
        score_events(truth, DURATIONS, lambda s: [], EventsConfig())


# --- synth mixtures: strong labels where the sources were placed ---------------------------------------------
def test_synth_mixtures_write_strong_labels_where_each_source_sits(tmp_path):
    from audioclf.data.importers import load_manifest
    from audioclf.data.synth.demo import make_demo_dataset
    from audioclf.data.synth.mixtures import make_multilabel_mixtures

    source = load_manifest(make_demo_dataset(tmp_path / "src", n_per_class=2, seconds=0.5, seed=3))
    out = tmp_path / "mix"
    make_multilabel_mixtures(source, out, n=6, max_events=1, seconds=2.0, sample_rate=16000, progress=False,
                             placement="events")
    labels = read_strong_labels(out / "strong_labels.csv", source.classes)
    assert sorted({t.filename for t in labels}) == [f"mix_{i:06d}.wav" for i in range(6)] and len(labels) == 6
    for label in labels:  # one source per mixture: the sound is exactly where its label says
        wave, sr = sf.read(out / "audio" / label.filename)
        loud = np.flatnonzero(np.abs(wave) > 1e-4)
        assert label.onset - 0.001 <= loud[0] / sr and loud[-1] / sr < label.offset + 0.001  # written to 1 ms
        assert loud[0] / sr - label.onset < 0.06 and label.offset - loud[-1] / sr < 0.06  # trimmed to the sound
        assert 0 < label.onset or label.offset < 2.0  # 0.5 s sources in 2 s: silence around each
    kinds = [t.label for t in labels]
    assert kinds == [source.classes[i % len(source.classes)] for i in range(6)]  # mixture i holds class i mod C

    tiled = make_multilabel_mixtures(source, tmp_path / "tiled", n=3, max_events=2, seconds=1.0, progress=False)
    strong = read_strong_labels(tiled.parent / "strong_labels.csv")
    assert {(t.onset, t.offset) for t in strong} == {(0.0, 1.0)}  # tiled sources fill the mixture
    clip_labels = {row.split(",")[0]: row for row in tiled.read_text().splitlines()[1:]}
    assert sum(len([t for t in strong if t.filename == name]) for name in clip_labels) == len(strong)


def test_synth_mixtures_refuse_an_unknown_placement(tmp_path):
    from audioclf.data.importers import load_manifest
    from audioclf.data.synth.demo import make_demo_dataset
    from audioclf.data.synth.mixtures import make_multilabel_mixtures

    source = load_manifest(make_demo_dataset(tmp_path / "src", n_per_class=1, seconds=0.5, seed=3))
    with pytest.raises(ConfigError, match="placement='middle'"):
        make_multilabel_mixtures(source, tmp_path / "mix", n=1, placement="middle", progress=False)


def test_the_timeline_picture_draws_events_as_boxes_on_their_rows(tmp_path, monkeypatch):
    from audioclf.runs import plots

    drawn = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, *a: (drawn.extend(
        (round(p.get_x(), 2), round(p.get_width(), 2), round(p.get_y() + 0.42)) for p in fig.axes[0].patches),
        real_save(fig, path, *a))[1])
    probs = np.full((6, 2), 0.1)
    plots.plot_timeline(STARTS[:6], 1.0, probs, ["dog", "cat"], tmp_path / "t.png", "t",
                        [("cat", 0.75, 2.25), ("cow", 0, 1)])
    assert drawn == [(0.75, 1.5, 1)] and (tmp_path / "t.png").stat().st_size > 0  # cat's row; no row for cow
