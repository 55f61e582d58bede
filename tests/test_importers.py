"""Folder and CSV importers, load_manifest auto-detection and the importer registry."""

import dataclasses
import os
from pathlib import Path

import pytest

from audioclf.data.importers import (
    IMPORTERS,
    get_importer,
    import_csv,
    import_folder,
    load_manifest,
    register_importer,
)
from audioclf.data.manifest import Manifest
from audioclf.errors import ConfigError, DataError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")  # importers only check that files exist; decoding comes later
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "genres"
    for rel in ["rock/a.wav", "rock/live/b.FLAC", "jazz/c.mp3", "jazz/d.ogg", "blues/e.aiff"]:
        _touch(root / rel)
    for rel in ["rock/notes.txt", "rock/.hidden.wav", "rock/.cache/f.wav", ".trash/g.wav", "empty/readme.md"]:
        _touch(root / rel)
    return root


# --- folder -------------------------------------------------------------------------------------
def test_folder_import(tree):
    manifest = import_folder(tree)
    assert [item.id for item in manifest] == ["blues/e", "jazz/c", "jazz/d", "rock/a", "rock/live/b"]
    assert [item.labels for item in manifest] == [("blues",), ("jazz",), ("jazz",), ("rock",), ("rock",)]
    assert manifest.classes == ["blues", "jazz", "rock"] and manifest.task == "single_label"
    assert manifest[4].path == str(tree / "rock" / "live" / "b.FLAC") and os.path.isabs(manifest[4].path)
    assert all(item.split is None and item.groups == {} for item in manifest)


def test_folder_import_extensions_and_loose_files(tree, caplog):
    _touch(tree / "loose.wav")
    with caplog.at_level("WARNING"):
        manifest = import_folder(tree, extensions=(".wav", "mp3"))
    assert [item.id for item in manifest] == ["jazz/c", "rock/a"]
    assert "loose.wav" in caplog.text


def test_folder_import_lists_m4a_and_reports_formats_it_cannot_decode(tree, caplog):
    for rel in ["rock/f.m4a", "jazz/g.opus", "jazz/h.AAC", "rock/x.wma", "blues/y.wma", "blues/z.amr"]:
        _touch(tree / rel)
    with caplog.at_level("WARNING"):
        manifest = import_folder(tree)
    assert {"rock/f", "jazz/g", "jazz/h"} <= {item.id for item in manifest}
    assert not {"rock/x", "blues/y", "blues/z"} & {item.id for item in manifest}
    warning = next(r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage())
    assert "skipping 3 file(s) in a format that cannot be decoded (.amr, .wma; e.g. blues/y.wma, blues/z.amr, " \
           "rock/x.wma)" in warning
    assert "supported formats: .aac, .aif, .aiff, .au, .flac, .m4a, .mp3, .mp4, .ogg, .opus, .wav" in warning
    assert "notes.txt" not in caplog.text  # not audio: left alone without a word


def test_folder_import_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope: folder not found; expected .*nope/<class>/<file>.wav"):
        import_folder(tmp_path / "nope")
    _touch(tmp_path / "flat" / "a.wav")
    _touch(tmp_path / "flat" / "cls" / "a.txt")
    with pytest.raises(DataError, match=r"flat: no class folder with audio files .*expected .*flat/<class>/<file>.wav"):
        import_folder(tmp_path / "flat")
    _touch(tmp_path / "dup" / "cls" / "a.wav")
    _touch(tmp_path / "dup" / "cls" / "a.flac")
    with pytest.raises(DataError, match="same id 'cls/a'"):
        import_folder(tmp_path / "dup")


# --- csv ----------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def audio(tmp_path):
    for name in ["a.wav", "b.wav", "c.wav", "d.wav"]:
        _touch(tmp_path / name)
    return tmp_path


def test_csv_fsd2019_style_quoted_multi_labels(audio):
    path = _write(audio / "train_curated.csv",
                  'fname,labels\na.wav,"Bark,Walk_and_footsteps"\nb.wav,Accordion\n'
                  'c.wav,"Bark, Accordion,Bark"\n')
    manifest = import_csv(path)
    assert [item.id for item in manifest] == ["a", "b", "c"]
    assert [item.labels for item in manifest] == [("Bark", "Walk_and_footsteps"), ("Accordion",),
                                                  ("Bark", "Accordion")]
    assert manifest.task == "multi_label" and manifest.classes == ["Accordion", "Bark", "Walk_and_footsteps"]
    assert manifest[0].path == str(audio / "a.wav")


def test_csv_tab_separated_synonyms_and_groups(audio):
    path = _write(audio / "meta.tsv", "Filename\tLabel\tSpeaker\tdevice\tFold\tDuration\n"
                                      "a.wav\tdog\ts1\tA\t1\t2.5\n"
                                      "b.wav\tcat\ts2\t\t2\t\n")
    manifest = import_csv(path)
    assert [item.labels for item in manifest] == [("dog",), ("cat",)]
    assert [item.fold for item in manifest] == [1, 2] and [item.duration for item in manifest] == [2.5, None]
    assert manifest[0].groups == {"Speaker": "s1", "device": "A"} and manifest[1].groups == {"Speaker": "s2"}
    assert manifest.group_values("device") == ["A", ""]


def test_csv_tab_detected_from_header_even_with_commas_in_labels(audio):
    path = _write(audio / "tags.csv", "file\tlabels\na.wav\tx,y\nb.wav\tz\n")
    assert [item.labels for item in import_csv(path)] == [("x", "y"), ("z",)]


def test_csv_split_normalisation(audio):
    path = _write(audio / "s.csv", "path,label,split\na.wav,x,Train\nb.wav,x,validation\n"
                                   "c.wav,y,evaluate\nd.wav,y, dev \n")
    assert [item.split for item in import_csv(path)] == ["train", "val", "test", "val"]
    path = _write(audio / "s.csv", "path,label,split\na.wav,x,valid\nb.wav,x,eval\nc.wav,y,test\nd.wav,y,\n")
    assert [item.split for item in import_csv(path)] == ["val", "test", "test", None]


def test_csv_file_resolution(tmp_path):
    _touch(tmp_path / "audio" / "a.wav")
    _touch(tmp_path / "elsewhere" / "sub" / "b.wav")
    path = _write(tmp_path / "l.csv", "fname,labels\na.wav,x\n")
    assert import_csv(path)[0].path == str(tmp_path / "audio" / "a.wav")  # <csv folder>/audio/ fallback
    path = _write(tmp_path / "l.csv", "fname,labels\nsub/b.wav,x\n")
    manifest = import_csv(path, audio_root=tmp_path / "elsewhere")
    assert manifest[0].path == str(tmp_path / "elsewhere" / "sub" / "b.wav") and manifest[0].id == "sub/b"


def test_csv_reports_every_missing_file_in_one_error(audio):
    rows = "".join(f"{_touch(audio / f'f{i}.wav').name},x\n" for i in range(16))  # 16 files found
    rows += "".join(f"gone{i}.wav,x\n" for i in range(12))  # lines 18-29
    with pytest.raises(DataError) as caught:
        import_csv(_write(audio / "l.csv", "fname,labels\n" + rows))
    message = str(caught.value)
    shown = ", ".join(f"line {18 + i} 'gone{i}.wav'" for i in range(10))
    assert message == (f"{audio / 'l.csv'}: 12 of 28 listed files not found in {audio} (the CSV's folder) and its "
                       f"audio/ folder: {shown} and 2 more")  # most files are there: no hint to move the root


def test_csv_away_from_its_audio_names_data_audio_root(tmp_path):
    for name in ["a.wav", "b.wav", "c.wav"]:
        _touch(tmp_path / "dataset" / "clips" / name)
    (tmp_path / "dataset" / "meta").mkdir()
    path = _write(tmp_path / "dataset" / "meta" / "l.csv", "fname,labels\na.wav,x\nb.wav,y\nc.wav,y\n")
    clips = tmp_path / "dataset" / "clips"
    with pytest.raises(DataError, match=rf"3 of 3 listed files not found .*; they are under {clips}: set "
                                        rf"data.audio_root={clips} \(evaluate: --audio-root {clips}\)$"):
        import_csv(path)
    assert [item.path for item in import_csv(path, audio_root=clips)] == [str(clips / n) for n in "a.wav b.wav c.wav".split()]
    nowhere = _write(tmp_path / "l.csv", "fname,labels\nx.wav,x\ny.wav,y\n")
    with pytest.raises(DataError, match=r"2 of 2 listed files not found .*; if the audio is not next to the CSV, "
                                        r"set data.audio_root=<folder> \(evaluate: --audio-root <folder>\)$"):
        import_csv(nowhere)
    with pytest.raises(DataError, match=rf"2 of 2 listed files not found in data.audio_root={clips}: line 2 'x.wav'"):
        import_csv(nowhere, audio_root=clips)


def test_csv_classes_fix_order(audio):
    path = _write(audio / "l.csv", "fname,labels\na.wav,dog\nb.wav,cat\n")
    assert import_csv(path, classes=["dog", "cat", "bird"]).classes == ["dog", "cat", "bird"]


def test_csv_multi_label_allows_empty_cells_and_no_label_column_means_unlabelled(audio):
    manifest = import_csv(_write(audio / "m.csv", 'fname,labels\na.wav,"x,y"\nb.wav,\n'))
    assert [item.labels for item in manifest] == [("x", "y"), ()]
    manifest = import_csv(_write(audio / "u.csv", "fname\na.wav\nb.wav\n"))
    assert [item.labels for item in manifest] == [(), ()] and manifest.classes == []


def test_manifest_snapshot_loads_through_import_csv(audio):
    source = import_csv(_write(audio / "l.csv", 'fname,labels,split,speaker\na.wav,"x,y",train,s1\n'
                                                'b.wav,y,test,s2\n'))
    source = source.with_items([source[0], dataclasses.replace(source[1], id="custom", fold=3, duration=0.1)])
    snapshot = source.to_csv(audio / "run" / "manifest.csv")
    assert import_csv(snapshot) == source
    assert Manifest.from_csv(snapshot) == source


@pytest.mark.parametrize("text, message", [
    ("name,labels\na.wav,x\n", r"line 1: no file column; expected one of path, fname, filename, file"),
    ("fname,labels\na.wav,x\nmissing.wav,x\n", r"1 of 2 listed files not found in .*: line 3 'missing.wav'$"),
    ("fname,labels\na.wav,x\n\nb.wav,\n", r"line 4: empty 'labels' cell; a single-label CSV"),
    ("fname,labels,split\na.wav,x,train\nb.wav,x,holdout\n", r"line 3: split 'holdout' is not one of train, val, test"),
    ("fname,labels,fold\na.wav,x,1\nb.wav,x,1.5\n", r"line 3: fold '1.5' is not an integer"),
    ("fname,labels,duration\na.wav,x,abc\n", r"line 2: duration 'abc' is not a number"),
    ("fname,labels\na.wav,x\nb.wav,x,extra\n", r"line 3: 3 fields, expected at most 2"),
    ("fname,labels\na.wav,x\n,x\n", r"line 3: empty 'fname' cell"),
    ("fname,labels,id\na.wav,x,same\nb.wav,x,same\n", r"line 3: id 'same' already used on line 2"),
    ("fname,Labels,labels\na.wav,x,x\n", r"line 1: column 'labels' appears twice"),
    ("", r"line 1: empty file"),
])
def test_csv_errors_name_file_and_line(audio, text, message):
    path = _write(audio / "bad.csv", text)
    with pytest.raises(DataError, match=rf"bad.csv: {message}"):
        import_csv(path)


def test_csv_unknown_label_names_line(audio):
    path = _write(audio / "bad.csv", 'fname,labels\na.wav,dog\nb.wav,"dog,cat"\n')
    with pytest.raises(DataError, match=r"bad.csv: line 3: unknown label 'cat'"):
        import_csv(path, classes=["dog", "bird"])


def test_csv_line_numbers_count_multiline_cells(audio):
    path = _write(audio / "bad.csv", 'fname,labels,note\na.wav,x,"two\nlines"\nb.wav,x,ok\nmissing.wav,x,ok\n')
    with pytest.raises(DataError, match=r"line 5 'missing.wav'"):
        import_csv(path)


# --- load_manifest and registry -----------------------------------------------------------------
def test_load_manifest_detects_the_source(tree, audio):
    assert load_manifest(tree) == import_folder(tree)
    path = _write(audio / "l.csv", "fname,labels\na.wav,x\n")
    assert load_manifest(path) == import_csv(path)
    tsv = _write(audio / "l.TSV", "fname\tlabels\na.wav\tx\n")
    assert load_manifest(tsv)[0].labels == ("x",)
    assert load_manifest(tree, classes=["rock", "jazz", "blues", "pop"]).classes == ["rock", "jazz", "blues", "pop"]
    with pytest.raises(DataError, match="unknown label 'blues'"):
        load_manifest(tree, classes=["rock", "jazz"])
    with pytest.raises(DataError, match=r"a.wav: cannot import; expected a folder .* or a .csv/.tsv"):
        load_manifest(audio / "a.wav")
    with pytest.raises(DataError, match="nothing.csv: CSV file not found"):
        load_manifest(audio / "nothing.csv")
    with pytest.raises(DataError, match="nowhere: not found"):
        load_manifest(audio / "nowhere")


def test_importer_registry(tmp_path):
    assert get_importer("folder") is import_folder and get_importer("csv") is import_csv

    @register_importer("_test_fmt")
    def import_test_fmt(root):
        return Manifest([])

    try:
        assert get_importer("_test_fmt") is import_test_fmt and IMPORTERS.get("_test_fmt") is import_test_fmt
        with pytest.raises(ConfigError, match="already registered"):
            register_importer("_test_fmt")(lambda root: Manifest([]))
    finally:
        IMPORTERS.remove("_test_fmt")
    with pytest.raises(ConfigError, match=r"unknown importer 'foldr'; did you mean folder\?"):
        get_importer("foldr")
