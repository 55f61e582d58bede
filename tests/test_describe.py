"""``audioclf describe``: the data exploration of the reports (class counts, durations, sample rates, labels per
clip, devices/speakers per split) as PNGs + data.md, for the splits ``train`` would use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audioclf.cli import main
from audioclf.config import load_config
from audioclf.data.audio import write_audio
from audioclf.data.prepare import prepare_data, split_from_headers
from layouts import write_table

# (file, labels, split, device, speaker, sex, note, sample rate, seconds)
ROWS = [
    ("a0.wav", "dog", "train", "a", "s1", "F", "x", 8000, 0.5),
    ("a1.wav", "dog", "train", "a", "s1", "F", "x", 8000, 0.5),
    ("a2.wav", "dog", "train", "b", "s2", "M", "x", 8000, 0.5),
    ("b0.wav", "rain", "train", "a", "s2", "M", "x", 8000, 1.0),
    ("b1.wav", "rain", "train", "b", "s1", "F", "x", 16000, 1.0),
    ("a3.wav", "dog", "val", "c", "s3", "F", "x", 8000, 0.5),
    ("b2.wav", "rain", "val", "c", "s3", "F", "x", 8000, 0.25),
    ("a4.wav", "dog", "test", "c", "s4", "M", "x", 16000, 0.5),
    ("b3.wav", "rain", "test", "a", "s4", "M", "x", 8000, 1.5),
    ("b4.wav", "rain", "test", "c", "s4", "M", "x", 8000, 0.5),
]


def _write(root: Path, rows, header=("fname", "labels", "split", "device", "speaker", "sex", "note")) -> Path:
    for i, (name, *_, rate, seconds) in enumerate(rows):
        wave = 0.05 * np.random.default_rng(i).standard_normal(int(rate * seconds)).astype(np.float32)
        write_audio(root / name, wave, rate)
    return write_table(root / "meta.csv", header, [row[:len(header)] for row in rows])


def _table(markdown: str, first: str) -> dict[str, list[str]]:
    """The markdown table whose header starts with ``first``: first cell -> the other cells (commas dropped)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip().replace(",", "") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _describe(capsys, *args) -> tuple[int, str, str]:
    code = main(["describe", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_counts_durations_rates_and_columns_equal_hand_counted_ones(tmp_path, capsys):
    csv_path = _write(tmp_path / "data", ROWS)
    out = tmp_path / "described"
    code, stdout, _ = _describe(capsys, "--data", csv_path, "--out", out)
    assert code == 0
    text = (out / "data.md").read_text()
    # Hand-counted from ROWS: dog train 3 / val 1 / test 1, rain 2 / 1 / 2.
    classes = _table(text, "class")
    assert classes["dog"] == ["3", "1", "1", "5"]
    assert classes["rain"] == ["2", "1", "2", "5"]
    assert classes["**total**"] == ["5", "2", "3", "10"]
    rates = _table(text, "sample rate (Hz)")
    assert rates == {"8000": ["4", "2", "2"], "16000": ["1", "0", "1"]}
    durations = _table(text, "split")  # files, min, median, mean, max, total hours
    assert durations["train"][:5] == ["5", "0.50", "0.50", "0.70", "1.00"]
    assert durations["val"][:5] == ["2", "0.25", "0.38", "0.38", "0.50"]
    assert durations["test"][:5] == ["3", "0.50", "0.50", "0.83", "1.50"]
    assert durations["all"][0] == "10"
    # device and speaker/sex columns are described, the unknown "note" column is not.
    assert "### device" in text and "### speaker" in text and "### sex" in text and "### note" not in text
    assert _table(text, "device") == {"a": ["3", "0", "1"], "b": ["2", "0", "0"], "c": ["0", "2", "2"]}
    assert _table(text, "sex") == {"F": ["3", "2", "0"], "M": ["2", "0", "3"]}
    assert "### device\n\ndistinct values: train 2 / val 1 / test 2; in more than one split: 2 (a, c)" in text
    assert "single-label" in text and "Label cardinality" not in text
    assert "10 items: train 5 / val 2 / test 3; 2 classes" in stdout
    assert "speaker: distinct values train 2 / val 1 / test 1; 0 in more than one split" in stdout


def test_pictures_are_valid_pngs_and_only_those_the_data_has(tmp_path, capsys):
    csv_path = _write(tmp_path / "data", ROWS)
    out = tmp_path / "described"
    assert _describe(capsys, "--data", csv_path, "--out", out)[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["audio.png", "class_counts.png", "columns.png", "data.md"]
    for name in names[:-1]:
        with Image.open(out / name) as image:
            image.verify()  # a truncated or half-written PNG fails here
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
        assert f"]({name})" in (out / "data.md").read_text()  # each picture is shown in data.md

    # Without metadata columns: no columns section and no columns.png (the earlier one is removed).
    plain = _write(tmp_path / "plain", ROWS, header=("fname", "labels", "split"))
    assert _describe(capsys, "--data", plain, "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["audio.png", "class_counts.png", "data.md"]
    assert "Metadata columns" not in (out / "data.md").read_text()


def test_a_multi_label_set_gets_the_label_cardinality_section(tmp_path, capsys):
    rows = [(name, {"a0.wav": "dog,rain", "b0.wav": "dog,rain,wind", "b2.wav": "wind,dog"}.get(name, labels), *rest)
            for name, labels, *rest in ROWS]
    csv_path = _write(tmp_path / "data", rows, header=("fname", "labels", "split"))
    out = tmp_path / "described"
    code, stdout, _ = _describe(capsys, "--data", csv_path, "--out", out)
    assert code == 0
    text = (out / "data.md").read_text()
    assert "multi-label" in text and "## Label cardinality" in text
    # train: a0 (2 labels), b0 (3), three with 1; val: b2 (2), a3 (1); test: three with 1.
    assert _table(text, "labels per clip") == {"1": ["3", "1", "3"], "2": ["1", "1", "0"], "3": ["1", "0", "0"],
                                               "mean": ["1.60", "1.50", "1.00"]}
    assert _table(text, "class")["dog"] == ["4", "2", "1", "7"]  # once per label: a0, a1, a2, b0 in train
    with Image.open(out / "labels_per_clip.png") as image:
        assert image.format == "PNG"
    assert "labels per clip (mean): train 1.60 / val 1.50 / test 1.00" in stdout


def test_splits_are_the_ones_training_draws(tmp_path):
    """No split column: the group split by speaker that `train` would draw, item by item."""
    rows = [(f"c{i}.wav", ("dog", "rain")[i % 2], f"s{i % 6}", 8000, 0.25) for i in range(36)]
    csv_path = _write(tmp_path / "data", rows, header=("fname", "labels", "speaker"))
    cfg = load_config(None, [f"data.path={csv_path}", "data.group=speaker", "seed=3"])
    described = split_from_headers(cfg).manifest
    trained = prepare_data(cfg, progress=False).manifest
    assert {item.id: item.split for item in described} == {item.id: item.split for item in trained}
    assert len({item.split for item in described}) == 3


def test_the_group_column_is_described_as_kept_apart(tmp_path, capsys):
    rows = [(f"c{i}.wav", ("dog", "rain")[i % 2], f"s{i % 6}", 8000, 0.25) for i in range(36)]
    csv_path = _write(tmp_path / "data", rows, header=("fname", "labels", "speaker"))
    out = tmp_path / "described"
    assert _describe(capsys, "--data", csv_path, "data.group=speaker", "--out", out)[0] == 0
    text = (out / "data.md").read_text()
    assert "group column 'speaker'" in text and "### speaker (the split keeps its values apart)" in text
    assert "in more than one split: 0" in text


def test_extra_columns_on_request_and_unknown_ones_refused_in_one_line(tmp_path, capsys):
    csv_path = _write(tmp_path / "data", ROWS)
    out = tmp_path / "described"
    assert _describe(capsys, "--data", csv_path, "--columns", "note", "--out", out)[0] == 0
    assert _table((out / "data.md").read_text(), "note") == {"x": ["5", "2", "3"]}

    code, _, err = _describe(capsys, "--data", csv_path, "--columns", "room", "--out", tmp_path / "other")
    assert code == 2 and "unknown column 'room'" in err and "device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_a_missing_file_is_one_line_and_nothing_is_written(tmp_path, capsys):
    csv_path = _write(tmp_path / "data", ROWS)
    (tmp_path / "data" / "b3.wav").unlink()
    code, _, err = _describe(capsys, "--data", csv_path, "--out", tmp_path / "described")
    assert code == 2 and "b3.wav" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "described").exists()
    code, _, err = _describe(capsys, "--data", tmp_path / "nothing.csv", "--out", tmp_path / "described")
    assert code == 2 and "nothing.csv" in err


def test_an_unreadable_file_is_skipped_and_listed_or_refused_with_strict(tmp_path, capsys):
    csv_path = _write(tmp_path / "data", ROWS)
    (tmp_path / "data" / "b3.wav").write_bytes(b"not audio at all")
    out = tmp_path / "described"
    assert _describe(capsys, "--data", csv_path, "--out", out)[0] == 0
    text = (out / "data.md").read_text()
    assert "## Skipped files" in text and "b3.wav" in text
    assert _table(text, "class")["rain"] == ["2", "1", "1", "4"]
    code, _, err = _describe(capsys, "--data", csv_path, "--strict", "--out", tmp_path / "strict")
    assert code == 2 and "b3.wav" in err
    assert not (tmp_path / "strict" / "data.md").exists()


def test_a_recipe_in_stages_describes_the_chosen_stage_data(tmp_path, capsys):
    """fsd2019: stage noisy (the first) reads the noisy subset, stage curated the curated one."""
    import layouts

    root = layouts.fsd2019_kaggle(tmp_path / "fsd")
    out = tmp_path / "described"
    code, stdout, _ = _describe(capsys, "fsd2019", f"data.path={root}", "--out", out)
    assert code == 0 and f"{len(layouts.FSD_NOISY)} items" in stdout
    assert "(stage noisy)" in (out / "data.md").read_text()
    code, stdout, _ = _describe(capsys, "fsd2019", f"data.path={root}", "--stage", "curated", "--out", out)
    assert code == 0 and f"{len(layouts.FSD_CURATED)} items" in stdout
    code, _, err = _describe(capsys, "fsd2019", f"data.path={root}", "--stage", "clean", "--out", out)
    assert code == 2 and "no such stage; the recipe has noisy, curated" in err


def test_out_must_be_a_folder(tmp_path, capsys):
    csv_path = _write(tmp_path / "data", ROWS)
    (tmp_path / "taken").write_text("mine")
    code, _, err = _describe(capsys, "--data", csv_path, "--out", tmp_path / "taken")
    assert code == 2 and "a file is there" in err and (tmp_path / "taken").read_text() == "mine"


def test_a_column_listing_several_speakers_counts_each_and_shows_one_in_two_splits(tmp_path, capsys):
    """The speaker-count mixtures' ``speakers`` column joins a mixture's speakers with "|": each speaker is
    counted, so a speaker in a train mixture and a test mixture is found (one value per combination would hide it)."""
    rows = [("m0.wav", "2", "train", "19|250", 8000, 0.5), ("m1.wav", "1", "train", "19", 8000, 0.5),
            ("m2.wav", "2", "val", "84|174", 8000, 0.5), ("m3.wav", "2", "test", "250|1089", 8000, 0.5)]
    csv_path = _write(tmp_path / "data", rows, header=("fname", "labels", "split", "speakers"))
    code, _, _ = _describe(capsys, "--data", csv_path, "--out", tmp_path / "out")
    assert code == 0
    text = (tmp_path / "out" / "data.md").read_text()
    assert "distinct values: train 2 / val 2 / test 2; in more than one split: 1 (250)" in text
    assert _table(text, "speakers") == {"19": ["2", "0", "0"], "250": ["1", "0", "1"], "1089": ["0", "0", "1"],
                                        "84": ["0", "1", "0"], "174": ["0", "1", "0"]}


def test_a_bar_inside_a_markdown_cell_is_escaped():
    from audioclf.console import markdown_table

    table = markdown_table(["file", "n"], [["a|b.wav", 2]])
    assert table.splitlines()[2] == "| a\\|b.wav | 2 |"
