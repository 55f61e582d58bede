"""Speaker-count mixtures of LibriSpeech utterances (after a reference speaker-counting project) and multi-label
mixtures from single-label sets."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioclf.data.audio import write_audio
from audioclf.data.importers import load_manifest
from audioclf.data.manifest import Item, Manifest
from audioclf.data.synth.mixtures import RECORD_NAME, make_multilabel_mixtures
from audioclf.data.synth.speaker_count import (
    generate_speaker_count,
    librispeech_subset_splits,
    render_mixture,
)
from audioclf.ownership import OWNER_FILE
from audioclf.errors import ConfigError, DataError

SR = 8000
SECONDS = 0.1  # 800-sample mixtures keep every test in milliseconds
N_WIN = int(SR * SECONDS)
SPEAKERS = {"19": "F", "26": "M", "103": "F", "7": "M", "121": "F", "1089": "M"}


def _utterance(rng: np.random.Generator) -> np.ndarray:
    """1 s of 'speech': 0.6 s of digital silence, then 0.4 s of noise -- most random windows are pauses."""
    wave = np.zeros(SR, dtype=np.float32)
    wave[int(0.6 * SR):] = 0.3 * rng.standard_normal(SR - int(0.6 * SR))
    return wave


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory) -> Manifest:
    """Two utterances per speaker, written as 16-bit WAV (as decoded, exactly representable floats)."""
    root = tmp_path_factory.mktemp("librispeech")
    rng = np.random.default_rng(0)
    items = []
    for speaker, sex in SPEAKERS.items():
        for u in range(2):
            uid = f"{speaker}-100-{u:04d}"
            path = write_audio(root / f"{uid}.wav", _utterance(rng), SR)
            subset = "train-clean-100" if speaker in ("19", "26", "103") else "dev-clean"
            items.append(Item(uid, str(path), (speaker,), groups={"speaker": speaker, "sex": sex, "subset": subset}))
    return Manifest(items)


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as handle:
        return list(csv.DictReader(handle))


def _digest(folder: Path) -> dict[str, str]:
    """The set's files (not the folder's ownership marker, which has a random id)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != OWNER_FILE}


def _pcm(path: str | Path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0]


def _generate(source: Manifest, out: Path, **kw) -> Path:
    args = {"n": 12, "seconds": SECONDS, "sample_rate": SR, "seed": 0, "max_tries": 40, "progress": False}
    return generate_speaker_count(source, out, **(args | kw))


# --- speaker count --------------------------------------------------------------------------------
def test_counts_balanced_speakers_distinct_metadata_consistent(librispeech, tmp_path):
    csv_path = _generate(librispeech, tmp_path / "sc", n=30)
    assert csv_path == tmp_path / "sc" / "metadata.csv"
    rows = _rows(csv_path)
    assert list(rows[0]) == ["fname", "label", "split", "sexes", "n_female", "n_male", "speakers", "utterances"]
    assert [r["fname"] for r in rows] == [f"Audio_{i}.wav" for i in range(30)]
    assert Counter(r["label"] for r in rows) == {"1": 10, "2": 10, "3": 10}
    utterance_speaker = {item.id: item.groups["speaker"] for item in librispeech}
    for row in rows:
        speakers = row["speakers"].split("|")
        count = int(row["label"])
        assert len(speakers) == len(set(speakers)) == count  # distinct speakers
        assert row["sexes"] == "".join(sorted(SPEAKERS[s] for s in speakers))  # the mix, in any order
        assert (int(row["n_female"]), int(row["n_male"])) == (row["sexes"].count("F"), row["sexes"].count("M"))
        assert [utterance_speaker[u] for u in row["utterances"].split("|")] == speakers
        info = sf.info(str(tmp_path / "sc" / "audio" / row["fname"]))
        assert (info.samplerate, info.frames, info.channels) == (SR, N_WIN, 1)
    manifest = load_manifest(csv_path)
    assert manifest.classes == ["1", "2", "3"] and manifest.task == "single_label"
    assert {"sexes", "n_female", "n_male", "speakers"} <= set(manifest.group_names)


def _is_window_of(mixture: np.ndarray, source: np.ndarray) -> bool:
    windows = np.lib.stride_tricks.sliding_window_view(source, len(mixture))
    return bool(np.any(np.all(windows == mixture, axis=1)))


def _silent_single_speaker_mixtures(source: Manifest, out: Path, **kw) -> int:
    """How many 1-speaker mixtures are all zeros, each checked to be a window of its listed utterance."""
    pcm = {item.id: _pcm(item.path) for item in source}
    rows = [r for r in _rows(_generate(source, out, n=30, **kw)) if r["label"] == "1"]
    silent = 0
    for row in rows:
        mixture = _pcm(out / "audio" / row["fname"])
        assert _is_window_of(mixture, pcm[row["utterances"]])  # a window of the listed utterance
        silent += not np.any(mixture)
    return silent


def test_windows_are_random_by_default_as_the_report_and_redraw_quiet_redraws_pauses(librispeech, tmp_path):
    # The report's windows are "seleccionado al azar": pauses included, so with these 60%-silent utterances
    # some 1-speaker mixtures are silent. redraw_quiet (our option) redraws them, unless allowed one try.
    assert _silent_single_speaker_mixtures(librispeech, tmp_path / "default") > 0
    assert _silent_single_speaker_mixtures(librispeech, tmp_path / "quiet", window="redraw_quiet") == 0
    assert _silent_single_speaker_mixtures(librispeech, tmp_path / "once", window="redraw_quiet", max_tries=1) > 0
    # A random window is redraw_quiet's first draw: one try of it makes the very same files (the generation
    # records differ: they name the window).
    files = [{k: v for k, v in _digest(tmp_path / d).items() if k != RECORD_NAME} for d in ("default", "once")]
    assert files[0] == files[1]


def _mixes_by_count(rows: list[dict[str, str]]) -> dict[str, Counter]:
    by_count: dict[str, Counter] = {}
    for row in rows:
        by_count.setdefault(row["label"], Counter())[row["sexes"]] += 1
    return by_count


def test_sex_mixes_are_balanced_as_far_as_possible_as_the_report(librispeech, tmp_path):
    """The report's figures of each count's sex mixes, "balanceados lo más posible": every mix of k speakers
    (FF, FM, MM) equally often, in every prefix; uniform draws (ours before) follow the binomial instead."""
    rows = _rows(_generate(librispeech, tmp_path / "balanced", n=72))  # 3 women, 3 men
    assert _mixes_by_count(rows) == {"1": {"F": 12, "M": 12}, "2": {"FF": 8, "FM": 8, "MM": 8},
                                     "3": {"FFF": 6, "FFM": 6, "FMM": 6, "MMM": 6}}
    mixes = {"1": ["F", "M"], "2": ["FF", "FM", "MM"], "3": ["FFF", "FFM", "FMM", "MMM"]}
    for end in range(1, len(rows) + 1):  # balanced in every prefix: each count's mixes differ by at most one
        for count, seen in _mixes_by_count(rows[:end]).items():
            made = [seen[mix] for mix in mixes[count]]
            assert max(made) - min(made) <= 1, (end, count, seen)
    for row in rows:  # the speakers drawn are of the sexes listed
        assert row["sexes"] == "".join(sorted(SPEAKERS[s] for s in row["speakers"].split("|")))
    uniform = _mixes_by_count(_rows(_generate(librispeech, tmp_path / "uniform", n=72, sexes="uniform")))
    assert uniform["3"]["FFF"] + uniform["3"]["MMM"] < uniform["3"]["FFM"] + uniform["3"]["FMM"]
    with pytest.raises(ConfigError, match="sexes='even'; expected one of balanced, uniform"):
        _generate(librispeech, tmp_path / "bad", sexes="even")


def test_the_cli_balances_sexes_from_speakers_txt_as_far_as_the_speakers_allow(tmp_path, capsys):
    import json

    import layouts
    from audioclf.cli import main

    root = layouts.librispeech_tones(tmp_path)  # SPEAKERS.TXT: two women, two men
    base = ["synth", "speaker-count", "--source", str(root), "--n", "18", "--seconds", "0.2"]
    assert main([*base, "--out", str(tmp_path / "mix")]) == 0
    # three speakers out of two women and two men: FFF and MMM cannot be made, FFM and FMM alternate
    assert _mixes_by_count(_rows(tmp_path / "mix" / "metadata.csv")) == {
        "1": {"F": 3, "M": 3}, "2": {"FF": 2, "FM": 2, "MM": 2}, "3": {"FFM": 3, "FMM": 3}}
    record = json.loads((tmp_path / "mix" / RECORD_NAME).read_text())
    assert record["sexes"] == "balanced"
    # a set made before sex mixes were balanced has no "sexes" in its record: it drew uniformly, and resumes so
    (tmp_path / "mix" / RECORD_NAME).write_text(json.dumps({k: v for k, v in record.items() if k != "sexes"}))
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "mix")]) == 2
    err = capsys.readouterr().err
    assert "generated with sexes='uniform', not 'balanced'" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--out", str(tmp_path / "mix"), "--sexes", "uniform"]) == 0


def test_render_mixture_averages_windows_and_pads_short_waves():
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(500).astype(np.float32), rng.standard_normal(300).astype(np.float32),
             rng.standard_normal(80).astype(np.float32)]
    mixture, starts = render_mixture(waves, 100, np.random.default_rng(2))
    assert starts[2] == 0 and 0 <= starts[0] <= 400 and 0 <= starts[1] <= 200
    short = np.concatenate([waves[2], np.zeros(20, np.float32)])
    expected = (waves[0][starts[0]:starts[0] + 100] + waves[1][starts[1]:starts[1] + 100] + short) / 3
    np.testing.assert_allclose(mixture, expected, atol=1e-6)
    assert mixture.dtype == np.float32
    again, starts_again = render_mixture(waves, 100, np.random.default_rng(2))
    assert starts_again == starts and np.array_equal(again, mixture)


def test_same_seed_byte_identical_whatever_the_row_order(librispeech, tmp_path):
    a = _digest(_generate(librispeech, tmp_path / "a").parent)
    shuffled = Manifest(list(librispeech)[::-1])
    b = _digest(_generate(shuffled, tmp_path / "b").parent)
    assert a == b
    c = _digest(_generate(librispeech, tmp_path / "c", seed=1).parent)
    assert c["audio/Audio_5.wav"] != a["audio/Audio_5.wav"]


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_uninterrupted_result(librispeech, tmp_path):
    reference = _digest(_generate(librispeech, tmp_path / "ref").parent)
    out = tmp_path / "run"
    written: list[Path] = []

    def crash_after_5(path: Path, was_written: bool) -> None:
        written.append(path)
        if len(written) == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        _generate(librispeech, out, on_item=crash_after_5)
    assert not (out / "metadata.csv").exists()  # the table is only written once every file is there
    assert sorted(p.name for p in (out / "audio").iterdir()) == sorted(p.name for p in written)
    (out / "audio" / ".Audio_7.tmp-deadbeef.wav").write_bytes(b"half a file")  # what a kill leaves behind

    calls: list[tuple[str, bool]] = []
    _generate(librispeech, out, on_item=lambda path, was_written: calls.append((path.name, was_written)))
    assert len(calls) == 12 and len({name for name, _ in calls}) == 12
    assert [name for name, was_written in calls if not was_written] == [p.name for p in written]
    assert _digest(out) == reference  # same files, same table, no duplicates and no temp files left


def test_growing_n_keeps_existing_mixtures(librispeech, tmp_path):
    out = tmp_path / "grow"
    _generate(librispeech, out, n=6)
    calls: list[bool] = []
    _generate(librispeech, out, n=12, on_item=lambda path, was_written: calls.append(was_written))
    assert calls == [False] * 6 + [True] * 6
    assert _digest(out) == _digest(_generate(librispeech, tmp_path / "fresh", n=12).parent)


def test_other_settings_in_the_same_folder_are_refused(librispeech, tmp_path):
    _generate(librispeech, tmp_path / "x", n=3)
    with pytest.raises(DataError, match="seed=0, not 1"):
        _generate(librispeech, tmp_path / "x", n=3, seed=1)
    with pytest.raises(DataError, match="already holds a set generated with window='random', not 'redraw_quiet'"):
        _generate(librispeech, tmp_path / "x", n=3, window="redraw_quiet")
    _generate(librispeech, tmp_path / "x", n=3, silence_db=-30.0)  # the pause test plays no part in random windows


def test_splits_keep_speakers_apart(librispeech, tmp_path):
    source = librispeech_subset_splits(librispeech)
    assert Counter(item.split for item in source) == {"train": 6, "val": 6}
    rows = _rows(_generate(source, tmp_path / "splits", n={"train": 6, "val": 3}))
    assert [r["fname"] for r in rows] == [*(f"Audio_Train{i}.wav" for i in range(6)),
                                          *(f"Audio_Validation{i}.wav" for i in range(3))]
    train_speakers = {"19", "26", "103"}
    for row in rows:
        speakers = set(row["speakers"].split("|"))
        assert speakers <= train_speakers if row["split"] == "train" else speakers.isdisjoint(train_speakers)
    manifest = load_manifest(tmp_path / "splits" / "metadata.csv")
    assert Counter(item.split for item in manifest) == {"train": 6, "val": 3}


def test_speaker_count_errors(librispeech, tmp_path):
    with pytest.raises(ConfigError, match="no source item has a split"):
        _generate(librispeech, tmp_path / "e1", n={"train": 3})
    with pytest.raises(DataError, match="6 speakers; 7-speaker mixtures need at least 7"):
        _generate(librispeech, tmp_path / "e2", max_speakers=7)
    no_sex = Manifest([Item("a", "a.wav", ("1",), groups={"speaker": "1"})])
    with pytest.raises(DataError, match="item a: sex group ''; expected M or F"):
        _generate(no_sex, tmp_path / "e3")
    with pytest.raises(ConfigError, match="n=-1"):
        _generate(librispeech, tmp_path / "e4", n=-1)
    with pytest.raises(ConfigError, match="window='loud'; expected one of random, redraw_quiet"):
        _generate(librispeech, tmp_path / "e5", window="loud")


# --- multi-label mixtures ---------------------------------------------------------------------------
CLASSES = ["bark", "horn", "rain", "siren"]


@pytest.fixture(scope="module")
def single_label(tmp_path_factory) -> Manifest:
    """Three clips per class, all shorter than the mixtures, so each is tiled deterministically."""
    root = tmp_path_factory.mktemp("single")
    rng = np.random.default_rng(3)
    items = []
    for ci, name in enumerate(CLASSES):
        for j in range(3):
            length = int(rng.integers(200, 700))
            wave = (0.2 * np.sin(2 * np.pi * (300 + 200 * ci) * np.arange(length) / SR)
                    + 0.05 * rng.standard_normal(length)).astype(np.float32)
            path = write_audio(root / name / f"{name}_{j}.wav", wave, SR)
            items.append(Item(f"{name}/{name}_{j}", str(path), (name,)))
    return Manifest(items)


def _mix(source: Manifest, out: Path, **kw) -> Path:
    args = {"n": 16, "max_events": 3, "seconds": SECONDS, "sample_rate": SR, "seed": 0, "progress": False}
    return make_multilabel_mixtures(source, out, **(args | kw))


def test_multilabel_labels_and_audio(single_label, tmp_path):
    csv_path = _mix(single_label, tmp_path / "ml")
    rows = _rows(csv_path)
    assert list(rows[0]) == ["fname", "labels", "sources"]
    by_id = {item.id: item for item in single_label}
    sizes, counts = Counter(), Counter()
    for row in rows:
        labels = row["labels"].split(",")
        sources = [by_id[s] for s in row["sources"].split("|")]
        assert 1 <= len(labels) <= 3 and len(set(labels)) == len(labels)
        assert labels == sorted(labels, key=CLASSES.index)  # source class order
        assert [s.labels[0] for s in sources] == labels  # one clip of each labelled class, nothing else
        sizes[len(labels)] += 1
        counts.update(labels)
        # Clips shorter than the mixture are tiled, so the mixture is exactly their average (int16 rounding).
        tiled = [np.resize(_pcm(s.path).astype(np.float64) / 32768, N_WIN) for s in sources]
        mixture = _pcm(tmp_path / "ml" / "audio" / row["fname"]).astype(np.float64) / 32768
        np.testing.assert_allclose(mixture, np.mean(tiled, axis=0), atol=1.01 / 32768)
    assert set(sizes) == {1, 2, 3}
    assert min(counts.values()) >= 16 // len(CLASSES)
    manifest = load_manifest(csv_path)
    assert manifest.task == "multi_label" and manifest.classes == CLASSES
    assert manifest.label_matrix().sum() == sum(len(r["labels"].split(",")) for r in rows)


def test_multilabel_deterministic_and_resumable(single_label, tmp_path):
    reference = _digest(_mix(single_label, tmp_path / "ref").parent)
    seen: list[Path] = []

    def crash(path: Path, was_written: bool) -> None:
        seen.append(path)
        if len(seen) == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        _mix(single_label, tmp_path / "run", on_item=crash)
    _mix(single_label, tmp_path / "run")
    assert _digest(tmp_path / "run") == reference


def test_multilabel_errors(single_label, tmp_path):
    with pytest.raises(ConfigError, match="max_events=5; expected 1..4"):
        _mix(single_label, tmp_path / "e", max_events=5)
    multi = Manifest([Item("a", "a.wav", ("x", "y"))])
    with pytest.raises(DataError, match="needs a single-label source"):
        _mix(multi, tmp_path / "e2")


def test_the_cli_draws_random_windows_unless_told_redraw_quiet(tmp_path, capsys):
    import json

    import layouts
    from audioclf.cli import main

    root = layouts.librispeech_tones(tmp_path)
    base = ["synth", "speaker-count", "--source", str(root), "--n", "3"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--out", str(tmp_path / "quiet"), "--window", "redraw_quiet", "--silence-db", "-30"]) == 0
    plain, quiet = (json.loads((tmp_path / d / RECORD_NAME).read_text()) for d in ("plain", "quiet"))
    assert plain["window"] == "random" and "silence_db" not in plain
    assert quiet["silence_db"] == -30.0 and quiet["window"] == "redraw_quiet"
    # A set made before windows could be random has no "window" in its record: it was redrawn, and resumes so.
    older = {key: value for key, value in quiet.items() if key != "window"}
    (tmp_path / "quiet" / RECORD_NAME).write_text(json.dumps(older))
    assert main([*base, "--out", str(tmp_path / "quiet"), "--window", "redraw_quiet", "--silence-db", "-30"]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "quiet")]) == 2
    assert "generated with window='redraw_quiet', not 'random'" in capsys.readouterr().err
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "loud"), "--window", "loud"]) == 2
    err = capsys.readouterr().err
    assert "window='loud'; expected one of random, redraw_quiet" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "loud").exists()
