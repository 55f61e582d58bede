"""Hostile datasets: links that lead out of a class folder, files listed twice, class lists that cannot train.
Each is refused (one line naming the file, row or class) or reported before any audio is decoded; none
trains silently on wrong labels or leaks a file between splits."""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest
import soundfile as sf

from av_files import write_av

from audioclf.config import load_config
from audioclf.data.audio import load_audio
from audioclf.data.importers import import_folder, load_manifest
from audioclf.data.prepare import prepare_data
from audioclf.errors import AudioDecodeError, DataError


def _wav(path, freq=440.0, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(8000) / 8000
    rng = np.random.default_rng(seed)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 8000)
    return path


def _folder(root, classes=("noise", "tone"), n=4):
    for c, name in enumerate(classes):
        for i in range(n):
            _wav(root / name / f"{name}{i}.wav", 300 + 200 * c, seed=i)
    return root


def _prepare(path, *extra):
    return prepare_data(load_config(None, [f"data.path={path}", *extra]), progress=False)


def _csv(path, rows, header="fname,labels,split"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_a_link_to_the_parent_folder_does_not_relabel_other_classes(tmp_path, caplog):
    root = _folder(tmp_path / "data")
    os.symlink("..", root / "tone" / "up")
    os.symlink(".", root / "tone" / "loop")
    with caplog.at_level(logging.WARNING):
        manifest = import_folder(root)
    labels = {os.path.basename(item.path): item.labels[0] for item in manifest}
    assert len(manifest) == 8 and all(name.startswith(label) for name, label in labels.items())
    assert "skipping the linked folder" in caplog.text


def test_a_link_into_another_class_is_a_file_under_two_labels(tmp_path):
    root = _folder(tmp_path / "data")
    os.symlink(os.path.join("..", "noise"), root / "tone" / "borrowed")
    with pytest.raises(DataError, match=r"noise0\.wav: listed twice with different labels"):
        _prepare(root)


def test_a_file_under_two_ids_with_two_labels_or_splits_is_refused(tmp_path):
    _folder(tmp_path)
    header = "id,fname,labels,split"
    rows = [f"{c}{i},{c}/{c}{i}.wav,{c},train" for c in ("noise", "tone") for i in range(3)]
    csv = _csv(tmp_path / "two_labels.csv", [*rows, "copy,tone/tone0.wav,noise,train"], header)
    with pytest.raises(DataError, match=r"tone0\.wav: listed twice with different labels \('tone0': tone, 'copy'"):
        _prepare(csv)
    csv = _csv(tmp_path / "two_splits.csv", [*rows, "n3,noise/noise3.wav,noise,val", "t3,tone/tone3.wav,tone,val",
                                            "copy,noise/noise0.wav,noise,test"], header)
    with pytest.raises(DataError, match="listed twice with different split"):
        _prepare(csv)


def test_an_exact_repeat_is_decoded_and_used_once(tmp_path, caplog):
    _folder(tmp_path)
    rows = [f"{c}{i},{c}/{c}{i}.wav,{c}," for c in ("noise", "tone") for i in range(4)]
    csv = _csv(tmp_path / "repeat.csv", [*rows, "again,tone/tone1.wav,tone,"], header="id,fname,labels,split")
    with caplog.at_level(logging.WARNING):
        prepared = _prepare(csv)
    assert len(prepared.manifest) == 8 and "1 rows repeat a file" in caplog.text


def test_class_lists_that_cannot_train_are_refused(tmp_path):
    _folder(tmp_path / "one", classes=("tone",))
    with pytest.raises(DataError, match=r"only one class \('tone'\)"):
        _prepare(tmp_path / "one")
    _folder(tmp_path)
    rows = [f"noise/noise{i}.wav,noise,train" for i in range(4)] + ["tone/tone0.wav,tone,test"]
    with pytest.raises(DataError, match=r"classes without training items: 'tone' \(only in test\)"):
        _prepare(_csv(tmp_path / "test_only.csv", rows))


def test_a_class_whose_files_are_all_unreadable_is_named(tmp_path):
    root = _folder(tmp_path / "data", classes=("noise", "tone", "broken"))
    for path in (root / "broken").iterdir():
        path.write_text("not audio")
    with pytest.raises(DataError, match=r"every file of class 'broken' \(4 files\) was unreadable"):
        _prepare(root)


def test_case_variants_and_rare_classes_are_reported(tmp_path, caplog):
    _folder(tmp_path)
    rows = [f"noise/noise{i}.wav,noise," for i in range(4)] + [f"tone/tone{i}.wav,tone," for i in range(3)]
    rows.append("tone/tone3.wav,TONE ,")
    with caplog.at_level(logging.WARNING):
        _prepare(_csv(tmp_path / "variants.csv", rows), "data.split=random")
    assert "classes 'TONE', 'tone' differ only in case or spaces" in caplog.text
    assert "fewer than 3 items" in caplog.text and "TONE (1)" in caplog.text


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_larger_than_memory_data_is_mapped_through_one_open_file(tmp_path):
    """1,200 items memory-mapped from the disk cache under a limit of 256 open files (one mapping per item
    used to fail with 'Too many open files')."""
    import resource

    from audioclf.data.dataset import decode_manifest
    from audioclf.data.manifest import Item, Manifest

    source = _wav(tmp_path / "one.wav")
    copies = []
    for i in range(1200):  # distinct files (the cache is keyed by content): a sample appended to each
        path = tmp_path / "many" / f"f{i:04d}.wav"
        path.parent.mkdir(exist_ok=True)
        wave, sr = sf.read(source, dtype="float32")
        sf.write(path, np.append(wave, np.float32(i / 1e4)), sr)
        copies.append(Item(id=f"f{i:04d}", path=str(path), labels=("a" if i % 2 else "b",)))
    manifest = Manifest(copies)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        waves, skipped = decode_manifest(manifest, 8000, cache_dir=tmp_path / "cache", progress=False, mmap=True)
        again, _ = decode_manifest(manifest, 8000, cache_dir=tmp_path / "cache", progress=False, mmap=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not skipped and len(waves) == 1200
    assert {type(w).__name__ for w in waves.values()} == {"memmap"}
    assert waves["f0007"][-1] == pytest.approx(7 / 1e4, abs=1e-4) and np.array_equal(again["f1199"], waves["f1199"])
    assert len(list((tmp_path / "cache" / "packs").glob("*.f32"))) == 1  # the second call reuses the pack


def _speakers(root, classes=("noise", "tone"), speakers=("s1", "s2", "s3", "s4", "s5"), per=2):
    for c, name in enumerate(classes):
        for s, speaker in enumerate(speakers):
            for i in range(per):
                _wav(root / name / f"{speaker}_{name}{i}.wav", 300 + 200 * c + 10 * s, seed=s * 10 + i)
    return root


def test_group_pattern_keeps_a_speaker_out_of_two_splits(tmp_path):
    root = _speakers(tmp_path / "data")
    prepared = _prepare(root, r"data.group_pattern=/(s\d)_[^/]+$", "data.fractions=[0.6,0.2,0.2]")
    splits_of = {}
    for item in prepared.manifest:
        splits_of.setdefault(item.groups["group"], set()).add(item.split)
    assert len(splits_of) == 5 and all(len(s) == 1 for s in splits_of.values()), splits_of
    with pytest.raises(DataError, match=r"noise/s1_noise0\.wav: data.group_pattern='speaker\(\\\\d\+\)' does not match"):
        _prepare(root, r"data.group_pattern=speaker(\d+)")


def _speaker_csv(tmp_path, column="speaker", speakers=("s1", "s2", "s3", "s4", "s5")):
    _speakers(tmp_path, speakers=speakers)
    rows = [f"{c}/{s}_{c}{i}.wav,{c},{s}" for c in ("noise", "tone") for s in speakers for i in range(2)]
    return _csv(tmp_path / f"{column}.csv", rows, header=f"fname,labels,{column}")


def _splits_of(prepared, column):
    splits_of = {}
    for item in prepared.manifest:
        splits_of.setdefault(item.groups[column], set()).add(item.split)
    return splits_of


def test_a_split_that_ignores_a_group_column_is_warned_about(tmp_path, caplog):
    csv = _speaker_csv(tmp_path, column="mic")  # a name zero-config does not read as a group
    with caplog.at_level(logging.WARNING):
        _prepare(csv)
    assert "group columns (mic) but the split ignores them" in caplog.text and "data.group=mic" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _prepare(csv, "data.group=mic", "data.fractions=[0.6,0.2,0.2]")
    assert "ignores them" not in caplog.text


def test_zero_config_keeps_a_speaker_column_apart_unless_told_none(tmp_path, caplog):
    """Left to ``auto``, a plain CSV's speaker column is kept apart (validation and test hold unseen speakers, as
    real use does); ``data.group=none`` mixes them, with no warning since it is the user's choice."""
    csv = _speaker_csv(tmp_path, speakers=("s1", "s2", "s3", "s4", "s5", "s6"))
    cfg = load_config(None, [f"data.path={csv}", "data.fractions=[0.6,0.2,0.2]"])
    prepared = prepare_data(cfg, progress=False)
    assert cfg.data.group == "speaker"  # recorded in the run's config.yaml like every zero-config choice
    assert all(len(splits) == 1 for splits in _splits_of(prepared, "speaker").values())
    with caplog.at_level(logging.WARNING):
        mixed = _prepare(csv, "data.group=none", "data.fractions=[0.6,0.2,0.2]")
    assert any(len(splits) > 1 for splits in _splits_of(mixed, "speaker").values())
    assert "ignores them" not in caplog.text


@pytest.mark.parametrize("case", ["four speakers", "given split", "recipe format", "split method"])
def test_zero_config_leaves_the_split_alone_where_it_is_not_its_to_choose(tmp_path, case):
    from audioclf.data.prepare import choose_group

    csv = _speaker_csv(tmp_path, speakers=("s1", "s2", "s3", "s4") if case == "four speakers" else
                       ("s1", "s2", "s3", "s4", "s5", "s6"))
    extra = {"recipe format": ["data.format=esc50"], "split method": ["data.split=stratified"]}.get(case, [])
    cfg = load_config(None, [f"data.path={csv}", *extra])
    manifest = load_manifest(csv)
    if case == "given split":
        manifest = manifest.with_splits(["train"] * (len(manifest) - 2) + ["test"] * 2)
    assert choose_group(cfg.data, manifest) is None and cfg.data.group is None


def test_cross_validation_folds_keep_groups_together(tmp_path):
    from audioclf.workflows.cv import fold_values

    root = _speakers(tmp_path / "data")
    manifest = import_folder(root)
    from audioclf.data.integrity import groups_from_paths

    manifest = groups_from_paths(manifest, r"/(s\d)_", "speaker")
    folds = fold_values(manifest, 5, seed=0, group="speaker")
    fold_of = {}
    for item, fold in zip(manifest, folds):
        fold_of.setdefault(item.groups["speaker"], set()).add(fold)
    assert all(len(f) == 1 for f in fold_of.values()) and len(set(folds)) == 5


def test_a_float_file_of_finite_garbage_is_skipped_by_name_not_trained_on(tmp_path):
    """Samples of 1e38 pass a NaN check; they used to reach training and stop it with "lower train.lr" without
    naming the file. Now the decoder refuses the file and the import lists it."""
    root = _folder(tmp_path / "data")
    bad = root / "tone" / "garbage.wav"
    sf.write(bad, np.full(8000, 1e38, np.float32), 8000, subtype="FLOAT")
    prepared = _prepare(root)
    assert [(s.path, "beyond" in s.reason) for s in prepared.skipped] == [(str(bad), True)]


@pytest.mark.parametrize("value", [1e6, np.nan])
def test_garbage_samples_inside_an_m4a_are_refused_as_in_a_float_wav(tmp_path, value):
    """An .m4a (QuickTime) can hold raw float PCM: the sample bounds of the soundfile path apply to it too."""
    pytest.importorskip("av")
    wave = np.full((4096, 1), 0.1, np.float32)
    wave[3000] = value
    path = write_av(tmp_path / "raw.m4a", wave, 8000, codec="pcm_f32le", container="mov", sample_format="flt")
    with pytest.raises(AudioDecodeError, match=r"raw\.m4a: (sample values up to 1e\+06|contains NaN)"):
        load_audio(path)


def test_an_m4a_that_is_a_playlist_is_not_followed_to_other_files(tmp_path):
    """The demuxer comes from the extension: probed from the content, this 'm4a' is an ffconcat script and
    FFmpeg would decode other.wav (or any file or address it names) under this file's label."""
    pytest.importorskip("av")
    _wav(tmp_path / "other.wav")
    playlist = tmp_path / "clip.m4a"
    playlist.write_text("ffconcat version 1.0\nfile 'other.wav'\n")
    with pytest.raises(AudioDecodeError, match=r"clip\.m4a: cannot decode audio"):
        load_audio(playlist)


def test_an_m4a_without_pyav_is_skipped_with_the_install_hint(tmp_path, monkeypatch):
    pytest.importorskip("av")
    root = _folder(tmp_path / "data")
    clip = write_av(root / "tone" / "phone.m4a", np.full((8000, 1), 0.1, np.float32), 8000, container="mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    prepared = _prepare(root)
    assert [s.to_dict() for s in prepared.skipped] == [
        {"path": str(clip), "reason": "decoding .m4a files needs PyAV: pip install 'audioclf[formats]'"}]


# --- audioclf doctor on hostile data: bad files are findings, bad arguments one-line errors -----------------------
def _doctor_cli(capsys, *args) -> tuple[int, str, str]:
    from audioclf.cli import main

    code = main(["doctor", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_doctor_reports_a_corrupt_and_an_empty_file_and_checks_the_rest(tmp_path, capsys):
    rows = [f"{name}/{name}{i}.wav,{name},{split}" for name in ("noise", "tone")
            for i, split in enumerate(("train", "train", "val", "test"))]
    _folder(tmp_path)
    (tmp_path / "noise" / "noise0.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage" * 4)
    (tmp_path / "tone" / "tone0.wav").write_bytes(b"")
    code, out, err = _doctor_cli(capsys, "--data", _csv(tmp_path / "meta.csv", rows), "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in err
    assert "1 undecodable, 1 empty" in out and "noise0.wav" in out and "tone0.wav" in out


def test_doctor_refuses_an_unknown_split_value_naming_the_row(tmp_path, capsys):
    _folder(tmp_path)
    rows = ["noise/noise0.wav,noise,train", "tone/tone0.wav,tone,tset"]
    code, _, err = _doctor_cli(capsys, "--data", _csv(tmp_path / "meta.csv", rows))
    assert code != 0 and "line 3" in err and "'tset'" in err and "\n" not in err


@pytest.mark.parametrize("target, expected", [("missing/cleaned.csv", "does not exist"), (".", "a folder is there"),
                                              ("cleaned.txt", "name it .csv")])
def test_doctor_refuses_a_bad_fix_path_in_one_line_before_any_work(tmp_path, capsys, target, expected):
    rows = ["noise/noise0.wav,noise,train"]  # no audio at all: the path is refused before the data is read
    code, _, err = _doctor_cli(capsys, "--data", _csv(tmp_path / "meta.csv", rows), "--fix", tmp_path / target)
    assert code != 0 and expected in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.csv"]
