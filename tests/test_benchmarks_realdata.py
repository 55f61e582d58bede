"""The real-data benchmark's instruments: the pyAudioAnalysis-style peer's features and the held-out splits."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts import each other

import heldout_splits  # noqa: E402
import midterm  # noqa: E402

SR = 16000


def tone(freq: float, seconds: float = 2.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)


def row(features: np.ndarray, name: str) -> np.ndarray:
    return features[midterm.SHORT_TERM_NAMES.index(name)]


def test_zero_crossing_rate_of_a_sine_is_twice_its_frequency_over_the_rate():
    zcr = row(midterm.short_term_features(tone(1000.0), SR), "zcr")
    assert zcr.mean() == pytest.approx(2 * 1000.0 / SR, rel=0.02)


@pytest.mark.parametrize("freq", [500.0, 1000.0, 3000.0])
def test_spectral_centroid_and_rolloff_of_a_pure_tone_sit_at_its_frequency(freq):
    features = midterm.short_term_features(tone(freq), SR)
    nyquist = SR / 2
    assert row(features, "spectral_centroid").mean() * nyquist == pytest.approx(freq, rel=0.03)
    assert row(features, "spectral_rolloff").mean() * nyquist == pytest.approx(freq, rel=0.03)
    assert row(features, "spectral_spread").mean() * nyquist < 100  # one line: almost no spread


def test_energy_is_the_mean_square_of_the_peak_scaled_signal_and_its_entropy_tells_steady_from_a_burst():
    steady = 0.3 * np.sign(tone(1000.0, 1.0))  # a square wave: the same energy in every sub-block
    burst = np.zeros(SR)
    burst[::800] = 1.0  # one click per 50 ms frame: all of a frame's energy in one of its sub-blocks
    flat, spiky = midterm.short_term_features(steady, SR), midterm.short_term_features(burst, SR)
    assert row(flat, "energy").mean() == pytest.approx(1.0, rel=0.02)  # peak scaled to 1 first
    assert row(flat, "energy_entropy").mean() == pytest.approx(np.log2(midterm.N_SUBBLOCKS), rel=0.01)
    assert row(spiky, "energy_entropy").max() < 0.1


def test_the_descriptor_does_not_change_with_the_gain_or_a_dc_offset():
    wave = tone(440.0) + 0.3 * tone(1250.0)
    assert np.allclose(midterm.clip_descriptor(0.05 * wave + 0.01, SR), midterm.clip_descriptor(wave, SR), atol=1e-6)


def test_chroma_of_an_a440_tone_is_pitch_class_a_and_white_noise_has_flat_spectral_entropy():
    chroma = np.stack([row(midterm.short_term_features(tone(440.0), SR), f"chroma_{i}") for i in range(1, 13)])
    assert chroma.mean(axis=1).argmax() == 0  # A is the first pitch class
    noise = np.random.default_rng(0).standard_normal(2 * SR)
    tone_entropy = row(midterm.short_term_features(tone(440.0), SR), "spectral_entropy").mean()
    noise_entropy = row(midterm.short_term_features(noise, SR), "spectral_entropy").mean()
    assert tone_entropy < 1.0 < 3.0 < noise_entropy


def test_spectral_flux_is_zero_on_a_steady_tone_and_positive_at_a_change():
    wave = np.concatenate([tone(500.0, 1.0), tone(3000.0, 1.0)])
    flux = row(midterm.short_term_features(wave, SR), "spectral_flux")
    assert flux[1:30].max() < 1e-3
    assert flux.max() > 0.1


def test_short_and_mid_term_shapes():
    short = midterm.short_term_features(tone(440.0, 3.0), SR)
    assert short.shape == (34, 1 + (3 * SR - 800) // 400)
    mid = midterm.mid_term_features(midterm.with_deltas(short))
    assert mid.shape == (68, 2, 4)  # 1 s windows every 0.5 s over 3 s
    assert midterm.mid_term_features(midterm.with_deltas(midterm.short_term_features(tone(440.0, 0.02), SR))).shape \
        == (68, 2, 1)  # shorter than one frame: padded, one window
    descriptor = midterm.clip_descriptor(tone(440.0, 3.0), SR)
    assert descriptor.shape == (136,) and np.isfinite(descriptor).all()
    assert np.allclose(midterm.with_deltas(short)[34:, 1:], np.diff(short, axis=1))


def write_labels(folder: Path, rows: list[dict], metadata: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True)
    for name, table in (("labels.csv", rows), ("metadata.csv", metadata)):
        if table:
            with open(folder / name, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(table[0]))
                writer.writeheader()
                writer.writerows(table)
    return folder


def groups_by_split(rows):
    found = {}
    for r in rows:
        found.setdefault(r["split"], set()).add(r["group"])
    return found


def assert_held_out(splits):
    assert splits
    for rows in splits.values():
        found = groups_by_split(rows)
        assert set(found) == {"train", "val", "test"}
        assert not (found["train"] & found["val"]) and not (found["train"] & found["test"]) \
            and not (found["val"] & found["test"])


def test_speaker_splits_hold_out_one_whole_speaker_for_val_and_one_for_test(tmp_path):
    rows = [{"fname": f"a/{s}_{w}_{k}.wav", "labels": w, "split": "train", "group": f"spk{s}"}
            for s in range(9) for w in ("yes", "no") for k in range(6)]
    splits = heldout_splits.held_out_splits(write_labels(tmp_path / "words", rows))
    assert len(splits) == heldout_splits.ROTATIONS
    assert_held_out(splits)
    tests = set()
    for split_rows in splits.values():
        found = groups_by_split(split_rows)
        assert (len(found["train"]), len(found["val"]), len(found["test"])) == (4, 1, 1)
        tests |= found["test"]
    assert len(tests) == heldout_splits.ROTATIONS  # the test speaker rotates
    assert heldout_splits.held_out_splits(tmp_path / "words") == splits  # seeded


def test_fold_splits_keep_a_source_in_one_fold_and_units_keep_near_duplicates_together(tmp_path):
    rows = [{"fname": f"{f}-{g}.ogg", "labels": "dog" if g % 2 else "rain", "split": "train", "group": str(g),
             "fold": str(f)} for f in range(1, 6) for g in range(10 * f, 10 * f + 4)]
    splits = heldout_splits.held_out_splits(write_labels(tmp_path / "esc", rows))
    assert_held_out(splits)
    assert {r["fold"] for r in splits["fold5"] if r["split"] == "test"} == {"5"}
    assert {r["fold"] for r in splits["fold1"] if r["split"] == "test"} == {"1"}

    clips = [{"fname": f"c{i}.flac", "labels": "cello" if i % 2 else "flute", "split": "train", "group": f"c{i}"}
             for i in range(40)]
    units = [{"fname": c["fname"], "split_unit": "pair" if c["fname"] in ("c0.flac", "c2.flac") else c["group"]}
             for c in clips]
    splits = heldout_splits.held_out_splits(write_labels(tmp_path / "inst", clips, units))
    assert_held_out(splits)
    for split_rows in splits.values():
        split_of = {r["fname"]: r["split"] for r in split_rows}
        assert split_of["c0.flac"] == split_of["c2.flac"]  # one near-duplicate unit, one split


def test_a_split_that_shares_a_group_is_refused_and_a_set_without_groups_is_named(tmp_path):
    shared = [{"fname": "a.wav", "labels": "x", "split": "train", "group": "g"},
              {"fname": "b.wav", "labels": "x", "split": "test", "group": "g"}]
    with pytest.raises(ValueError, match="group g is in"):
        heldout_splits.check_disjoint(shared, "set")
    folder = write_labels(tmp_path / "nogroups", [{"fname": "a.wav", "labels": "x", "split": "train"}])
    with pytest.raises(ValueError, match="labels.csv: no column group"):
        heldout_splits.held_out_splits(folder)


def test_written_csvs_have_absolute_paths_and_no_temp_file_left(tmp_path):
    rows = [{"fname": f"audio/{s}_{k}.wav", "labels": "yes" if k % 2 else "no", "split": "train", "group": f"s{s}"}
            for s in range(6) for k in range(12)]
    folder = write_labels(tmp_path / "words", rows)
    written = heldout_splits.write_held_out([folder], tmp_path / "out")
    assert [p.parent for p in written] == [tmp_path / "out" / "words"] * heldout_splits.ROTATIONS
    assert not list((tmp_path / "out").rglob("*.tmp"))
    first = heldout_splits.read_rows(written[0])[0]
    assert Path(first["fname"]).is_absolute() and first["fname"].startswith(str(folder.resolve()))


def test_the_table_lists_each_members_validation_score_and_tolerates_their_absence():
    import realdata

    summary = {"metrics": {"val": {"accuracy": 0.9}, "test": {"accuracy": 0.8, "macro_f1": 0.7}},
               "members": {"chosen": "ensemble", "members": [{"name": "network", "val_score": 0.91},
                                                            {"name": "classical", "val_score": 0.875}]}}
    result = realdata.Result("words", 10, {"MFCC+SVM": (0.5, 0.4), "mid-term+SVM": (0.64, 0.6)}, 1.0, summary, 60.0)
    header, rows = realdata.table([result, realdata.Result("plain", 10, result.peers, 1.0)])
    cells = dict(zip(header, rows[0]))
    assert cells["members (val)"] == "network 0.910, classical 0.875, kept: ensemble"
    assert cells["acc / better peer"] == "1.25"  # 0.8 over the better peer's 0.64, not the MFCC one's 0.5
    assert dict(zip(header, rows[1]))["members (val)"] == "-" and rows[1][header.index("audioclf acc")] == "-"
    assert realdata.members_cell({"metrics": {}}) == "-"
