"""``audioclf doctor``: each finding kind on generated data (bad audio, exact and near duplicates, leaks,
conflicts, group leaks), ``--fix``'s cleaned manifest, and the quick form training runs before it starts."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclf.cli import main
from audioclf.config import load_config
from audioclf.data.audio import load_audio, write_audio
from audioclf.data.fingerprint import ALIGNED_COSINE, aligned_similarity, fingerprint
from audioclf.workflows.doctor import doctor_data
from layouts import write_table

RATE = 8000
HEADER = ("fname", "labels", "split", "speaker")


def clip(seed: int, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """Ten notes of random pitch and level, each faded in and out, over a noise floor: every seed a different clip
    (abrupt steps would be unlike recorded sound, and lossy codecs smear them)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    per = -(-n // 10)
    pitch = np.repeat(rng.uniform(150.0, 3000.0, 10), per)[:n]
    level = (np.repeat(rng.uniform(0.02, 0.3, 10), per) * np.tile(np.hanning(per), 10))[:n]
    wave = level * np.sin(2 * np.pi * np.cumsum(pitch) / rate) + 0.002 * rng.standard_normal(n)
    return wave.astype(np.float32)


def clean_rows(root: Path, n: int = 24) -> list[tuple]:
    """``n`` distinct clips, two labels, train/val/test, one speaker per clip."""
    rows = []
    for i in range(n):
        name = f"c{i}.wav"
        write_audio(root / name, clip(i), RATE)
        rows.append((name, ("dog", "rain")[i % 2], ("train", "train", "val", "test")[i % 4], f"s{i}"))
    return rows


def doctor(root: Path, rows, *extra: str, fix: Path | None = None):
    csv_path = write_table(root / "meta.csv", HEADER, rows)
    # labels=False: these sets' labels are arbitrary; the label-issue search has its own tests (test_noisy_labels)
    return doctor_data(load_config(None, [f"data.path={csv_path}", *extra]), root / "report", fix, progress=False,
                       labels=False)


def of_kind(result, kind: str) -> list:
    return [finding for finding in result.findings if finding.kind == kind]


def names(finding) -> set[str]:
    return {Path(path).name for path in finding.paths}


def test_clean_distinct_clips_have_no_findings(tmp_path):
    result = doctor(tmp_path, clean_rows(tmp_path))
    assert result.findings == []
    assert "No findings." in (tmp_path / "report" / "doctor.md").read_text()


@pytest.mark.parametrize("kind, wave, rate", [
    ("silent", 1e-4 * clip(100), RATE),
    ("clipped", np.clip(8 * clip(101), -1, 1), RATE),
    ("dc_offset", 0.3 * clip(102) + 0.1, RATE),
    ("odd_sample_rate", clip(103).repeat(2), 2 * RATE),  # 1 s at 16 kHz among 8 kHz files
    ("mixed_channels", np.stack([clip(104), clip(105)], axis=1), RATE),
    ("duration_outlier", clip(106, 4.0), RATE),
])
def test_each_kind_of_bad_audio_is_found_in_that_file_alone(tmp_path, kind, wave, rate):
    rows = clean_rows(tmp_path)
    write_audio(tmp_path / "bad.wav", wave, rate)
    result = doctor(tmp_path, [*rows, ("bad.wav", "dog", "train", "s99")])
    assert [names(f) for f in result.findings] == [{"bad.wav"}]
    assert result.findings[0].kind == kind
    assert kind.replace("_", " ") in (tmp_path / "report" / "doctor.md").read_text()


def test_undecodable_and_empty_files_are_findings_not_errors(tmp_path):
    rows = clean_rows(tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 8)
    (tmp_path / "empty.wav").write_bytes(b"")
    result = doctor(tmp_path, [*rows, ("broken.wav", "dog", "train", "s98"), ("empty.wav", "rain", "train", "s99")])
    assert {f.kind: names(f) for f in result.findings} == {"undecodable": {"broken.wav"}, "empty": {"empty.wav"}}


def test_an_exact_copy_in_another_split_is_a_leak_and_under_another_label_a_conflict(tmp_path):
    rows = clean_rows(tmp_path)
    shutil.copyfile(tmp_path / "c0.wav", tmp_path / "copy_test.wav")  # c0: dog, train
    shutil.copyfile(tmp_path / "c4.wav", tmp_path / "copy_rain.wav")  # c4: dog, train
    pcm, _ = sf.read(tmp_path / "c8.wav", dtype="int16")
    sf.write(tmp_path / "same.flac", pcm, RATE)  # c8 converted to FLAC: the same PCM, one split and label
    rows += [("copy_test.wav", "dog", "test", "s90"), ("copy_rain.wav", "rain", "train", "s91"),
             ("same.flac", "dog", "train", "s92")]
    result = doctor(tmp_path, rows)
    assert [names(f) for f in of_kind(result, "leak")] == [{"c0.wav", "copy_test.wav"}]
    assert [names(f) for f in of_kind(result, "conflict")] == [{"c4.wav", "copy_rain.wav"}]
    assert [names(f) for f in of_kind(result, "exact_duplicate")] == [{"c8.wav", "same.flac"}]
    assert all(dup.kind == "exact" for dup in result.sets)


@pytest.mark.parametrize("change", ["gain", "trim", "resample"])
def test_a_near_copy_in_another_split_is_a_leak(tmp_path, change):
    rows = clean_rows(tmp_path)
    original = clip(0)
    wave, rate = {"gain": (0.4 * original, RATE), "trim": (original[600:-300], RATE),
                  "resample": (np.repeat(original, 2), 2 * RATE)}[change]
    write_audio(tmp_path / "near.flac", wave, rate)
    result = doctor(tmp_path, [*rows, ("near.flac", "dog", "val", "s90")], "data.sample_rate=8000")
    leaks = of_kind(result, "leak")
    assert [names(f) for f in leaks] == [{"c0.wav", "near.flac"}]
    assert "near copies" in leaks[0].message


def test_the_fingerprint_tells_a_copy_from_another_clip_of_the_same_spectrum():
    a, b = fingerprint(clip(0), RATE), fingerprint(clip(1), RATE)
    copy = fingerprint(0.3 * clip(0)[400:], RATE)
    assert aligned_similarity(a, copy) > 0.97 > 0.5 > aligned_similarity(a, b)


def decaying_note(f0: float, seed: int = 0, seconds: float = 3.0, rate: int = 16000) -> np.ndarray:
    """A plucked-string-like note: eight harmonics, each decaying exponentially (the higher, the faster), into a
    recording's noise floor, as the instrument set's notes do."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.exp(-t * (1.0 + 0.4 * k)) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
               for k in range(1, 9))
    wave = np.minimum(t / 0.01, 1.0) * wave  # a 10-ms attack
    return (0.5 * wave / np.abs(wave).max() + 1e-3 * rng.standard_normal(len(t))).astype(np.float32)


def test_a_trimmed_ogg_copy_of_a_decaying_note_is_a_leak_and_a_note_a_fifth_up_is_not(tmp_path):
    # The decay into the noise floor is where the codec and the trim (which moves the loud reference) change the
    # levels most: this copy lined up to only 0.983 before the per-frame floor (FRAME_FLOOR_DB).
    note = decaying_note(220.0)
    write_audio(tmp_path / "note.wav", note, 16000)
    write_audio(tmp_path / "copy.ogg", note[int(0.1 * len(note)):], 16000)
    write_audio(tmp_path / "fifth.wav", decaying_note(330.0, seed=1), 16000)
    copy, rate = load_audio(tmp_path / "copy.ogg")
    assert aligned_similarity(fingerprint(note, 16000), fingerprint(copy, rate)) >= ALIGNED_COSINE
    assert aligned_similarity(fingerprint(note, 16000), fingerprint(decaying_note(330.0, seed=1), 16000)) < 0.97
    rows = [*clean_rows(tmp_path), ("note.wav", "dog", "train", "s90"), ("copy.ogg", "dog", "val", "s91"),
            ("fifth.wav", "dog", "test", "s92")]
    assert [names(f) for f in of_kind(doctor(tmp_path, rows), "leak")] == [{"note.wav", "copy.ogg"}]


def test_a_speaker_in_two_splits_is_a_group_leak(tmp_path):
    rows = clean_rows(tmp_path)
    rows[0] = (*rows[0][:3], "shared")  # train
    rows[3] = (*rows[3][:3], "shared")  # test
    result = doctor(tmp_path, rows)
    leaks = of_kind(result, "group_leak")
    assert [(f.values, names(f)) for f in leaks] == [(["shared"], {"c0.wav", "c3.wav"})]
    assert "data.group=speaker" in leaks[0].fix


def test_fix_writes_a_manifest_without_the_later_copies_and_says_why(tmp_path, capsys):
    rows = clean_rows(tmp_path)
    shutil.copyfile(tmp_path / "c0.wav", tmp_path / "copy_test.wav")
    shutil.copyfile(tmp_path / "c4.wav", tmp_path / "copy_rain.wav")
    rows += [("copy_test.wav", "dog", "test", "s90"), ("copy_rain.wav", "rain", "train", "s91")]
    csv_path = write_table(tmp_path / "meta.csv", HEADER, rows)
    fixed = tmp_path / "cleaned.csv"
    assert main(["doctor", "--no-labels", "--data", str(csv_path), "--fix", str(fixed)]) == 0
    printed = capsys.readouterr().out
    assert "2 row(s) dropped" in printed and "copy_test.wav" in printed and "leak" in printed
    with open(fixed, newline="") as handle:
        kept = {Path(row["path"]).name for row in csv.DictReader(handle)}
    assert kept == {row[0] for row in rows} - {"copy_test.wav", "copy_rain.wav"}
    assert main(["doctor", "--no-labels", "--data", str(fixed)]) == 0  # the cleaned manifest loads, and is clean
    assert "no findings" in capsys.readouterr().out


TINY = ["train.epochs=1", "train.batch_size=8", "data.clip_seconds=1.0", "features.n_mels=16", "features.n_fft=256",
        "features.hop_length=128", "model.name=small_cnn"]


@pytest.mark.parametrize("enabled", [True, False])
def test_training_reports_an_exact_copy_across_splits_in_its_header_and_report(tmp_path, capsys, enabled):
    rows = clean_rows(tmp_path, 16)
    shutil.copyfile(tmp_path / "c0.wav", tmp_path / "copy_test.wav")
    rows.append(("copy_test.wav", "dog", "test", "s90"))
    csv_path = write_table(tmp_path / "meta.csv", HEADER, rows)
    assert main(["train", "--data", str(csv_path), "--out", str(tmp_path / "run"), *TINY,
                 f"data.doctor={str(enabled).lower()}"]) == 0
    printed = capsys.readouterr()
    report = (tmp_path / "run" / "report.md").read_text()
    if enabled:
        assert "data check" in printed.out + printed.err and "1 leak" in printed.out + printed.err
        assert "## Data check" in report and "copy_test.wav" in report
    else:
        assert "## Data check" not in report and "1 leak" not in printed.out + printed.err
