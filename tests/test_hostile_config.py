"""Hostile configs and tables (issue 20): YAML bombs, sizes that would allocate gigabytes, values checked only
after decoding, and data that reaches the terminal or a spreadsheet. Each is a one-line error (exit 2) naming
the file, key or row before any audio is read, or is reported and handled as the README says."""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import audioclf
import layouts
from audioclf.cli import main
from audioclf.config import load_config
from audioclf.data.importers import import_csv, import_folder
from audioclf.data.manifest import Manifest
from audioclf.deploy.predictor import Prediction, write_predictions_csv
from audioclf.errors import ConfigError, DataError

SRC = str(Path(audioclf.__file__).parents[1])
# Nine levels of nine aliases: 9**9 (387 million) values in 300 bytes of YAML.
LAUGHS = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]


def _guarded(code: str, memory_gb: float = 1.0, timeout: float = 60) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python with at most ``memory_gb`` of address space and ``timeout`` seconds: a
    regression that expands the bomb fails here (MemoryError or timeout) instead of eating the machine."""
    def limit() -> None:
        import resource

        size = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    env = {**os.environ, "PYTHONPATH": SRC}
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"took over {timeout} s: {code}")


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "unexpected" not in err, err
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name in ("noise", "tone"):
        for i in range(4):
            layouts.clip(root / name / f"{name}{i}.wav", seed=i)
    return root


# --- 9: YAML -----------------------------------------------------------------------------------
def test_a_billion_laughs_recipe_is_refused_before_it_expands(tmp_path):
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text("model:\n  name: small_cnn\ntrain:\n  scheduler_args:\n" +
                      "".join(f"    {line}\n" for line in LAUGHS))
    done = _guarded(f"from audioclf.config import load_config\nload_config({str(recipe)!r})\nprint('loaded')")
    assert done.returncode == 1 and "loaded" not in done.stdout, done.stdout + done.stderr
    assert f"ConfigError: {recipe}: YAML refused: it stands for more than 100,000 values" in done.stderr


def test_a_billion_laughs_override_is_refused_naming_it():
    value = "{" + ", ".join(LAUGHS) + "}"
    done = _guarded("from audioclf.config import load_config\n"
                    f"load_config(None, [{'train.scheduler_args=' + value!r}])\nprint('loaded')")
    assert done.returncode == 1 and "loaded" not in done.stdout, done.stdout + done.stderr
    assert "ConfigError: override 'train.scheduler_args': YAML refused: it stands for more than" in done.stderr


def test_the_cli_refuses_the_bomb_in_one_line(tmp_path, data):
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text("train:\n  scheduler_args:\n" + "".join(f"    {line}\n" for line in LAUGHS))
    # torch is imported on the way: 4 GB of address space, still far below what expanding the bomb takes
    done = _guarded("import sys\nfrom audioclf.cli import main\n"
                    f"sys.exit(main(['train', {str(recipe)!r}, 'data.path={data}', 'out={tmp_path / 'run'}']))",
                    memory_gb=4, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {recipe}: YAML refused: it stands for more than 100,000 "
                                                "values (aliases expanded)"]


def test_small_anchors_and_aliases_still_work(tmp_path):
    recipe = tmp_path / "shared.yaml"
    recipe.write_text("features: &f {n_fft: 1024, n_mels: 80}\n"
                      "stages:\n  - {name: a, features: *f}\n  - {name: b, features: *f}\n")
    cfg = load_config(recipe)
    assert cfg.features == {"n_fft": 1024, "n_mels": 80} and cfg.stages[1]["features"] == cfg.features


def test_deep_yaml_is_one_line_not_a_recursion_error(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("train:\n  scheduler_args: {x: " + "[" * 20_000 + "]" * 20_000 + "}\n")
    err = _one_line_error(capsys, main(["train", str(deep)]))
    assert f"{deep}: YAML refused: nested deeper than 100 levels" in err
    block = tmp_path / "block.yaml"
    block.write_text("".join(" " * i + f"k{i}:\n" for i in range(150)) + " " * 150 + "v: 1\n")
    with pytest.raises(ConfigError, match="nested deeper than 100 levels"):
        load_config(block)
    with pytest.raises(ConfigError, match=r"^override 'train\.scheduler_args': YAML refused: nested deeper"):
        load_config(None, ["train.scheduler_args=" + "[" * 20_000 + "]" * 20_000])


def test_binary_and_huge_yaml_are_refused_naming_the_file(tmp_path, capsys):
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 8)
    err = _one_line_error(capsys, main(["train", str(binary)]))
    assert f"{binary}: not a UTF-8 text file" in err
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (1 << 20) + "\ntrain: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"huge\.yaml: larger than 1,048,576 bytes"):
        load_config(huge)


# --- 9: sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["features.n_mels=100000"], r"features\.n_mels=100000: expected 1\.\.1024 mel bands"),
    (["features.n_fft=1000000000"], r"features\.n_fft=1000000000: expected 1\.\.65536"),
    (["features.hop_length=0"], r"features\.hop_length=0: expected 1\.\.65536"),
    (["features.n_fft=256", "features.n_mels=200"], r"features\.n_mels=200: expected at most n_fft // 2 \+ 1 = 129"),
    (["model.hidden=1000000000"], r"model\.hidden=1000000000: expected 1\.\.16384 units"),
    (["model.channels=[16, 100000]"], r"model\.channels=\[16, 100000\]: expected 1\.\.4096 channels"),
    (["model.depth=100000"], r"model\.depth=100000: expected 0\.\.100 layers"),
    (["data.clip_seconds=100000"], r"data\.clip_seconds=100000\.0: expected null \(inferred\) or 0\.01\.\.600"),
    (["data.clip_seconds=1e-9"], r"data\.clip_seconds=1e-09: expected null \(inferred\) or 0\.01\.\.600"),
    (["train.batch_size=1000000000"], r"train\.batch_size=1000000000: expected .*1\.\.65536"),
    (["train.epochs=1000000000"], r"train\.epochs=1000000000: expected .*1\.\.100000"),
    (["train.num_workers=100000"], r"train\.num_workers=100000: expected 0\.\.256"),
    (["model.dropout=.nan"], r"model\.dropout=nan: expected a finite number"),
])
def test_sizes_are_bounded_before_anything_is_read(overrides, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_config("demo", overrides)


def test_the_bounds_leave_real_settings_alone():
    cfg = load_config("dcase2022_task1", ["features.n_fft=1764", "features.n_mels=128", "model.hidden=1500",
                                          "data.clip_seconds=600", "train.batch_size=256", "features.n_fft=65536"])
    assert cfg.features["n_mels"] == 128 and cfg.data.clip_seconds == 600


# --- 10: values checked only after decoding, or not at all ------------------------------------
@pytest.mark.parametrize("overrides, message", [
    (["data.pad_mode=nope"], "data.pad_mode='nope': expected one of tile, pad"),
    (["train.scheduler=exponential", "train.scheduler_args={gamma: nan}"],
     "train.scheduler_args.gamma='nan': scheduler 'exponential' expects a finite number"),
    (["train=5"], "config key 'train': expected a mapping, got 5"),
    (["train=0"], "config key 'train': expected a mapping, got 0"),
])
def test_values_are_checked_in_one_line_before_decoding(data, tmp_path, capsys, overrides, message):
    err = _one_line_error(capsys, main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *overrides]))
    assert message in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_the_library_refuses_a_section_given_as_a_scalar(data, tmp_path):
    with pytest.raises(ConfigError, match="config key 'train': expected a mapping, got 5"):
        audioclf.train(data, out=tmp_path / "run", train=5)


def test_a_200_kb_csv_field_is_a_data_error_naming_the_row(tmp_path, capsys):
    layouts.clip(tmp_path / "a.wav")
    table = tmp_path / "big.csv"
    table.write_text("fname,labels\na.wav,tone\n" + f'a.wav,"{"x" * 200_000}"\n')
    with pytest.raises(DataError, match=r"big\.csv: line 3: field larger than field limit"):
        import_csv(table)
    err = _one_line_error(capsys, main(["train", "--data", str(table), "--out", str(tmp_path / "run")]))
    assert "big.csv: line 3" in err
    snapshot = tmp_path / "manifest.csv"
    snapshot.write_text(f'id,path,labels\na,a.wav,"{"y" * 200_000}"\n')
    with pytest.raises(DataError, match=r"manifest\.csv: line 2: field larger"):
        Manifest.from_csv(snapshot)


# --- caveats -----------------------------------------------------------------------------------
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\u202egnp.exe"


def test_labels_reach_the_terminal_escaped(tmp_path, capsys):
    layouts.clip(tmp_path / "a.wav")
    table = tmp_path / "one.csv"
    table.write_text(f"fname,labels\na.wav,{ESCAPES}\n", encoding="utf-8")
    err = _one_line_error(capsys, main(["train", "--data", str(table), "--out", str(tmp_path / "run")]))
    assert "only one class" in err
    assert "\x1b" not in err and "\u202e" not in err and "\x07" not in err
    assert r"\x1b[2J\x1b]0;pwned" in err and r"\u202egnp.exe" in err  # (rich itself drops the bell)


def test_warnings_naming_labels_are_escaped_too(tmp_path):
    for name in ("a", "b", "c"):
        layouts.clip(tmp_path / f"{name}.wav")
    table = tmp_path / "spaced.csv"
    table.write_text(f"fname,labels\na.wav,high\nb.wav,mid{ESCAPES}\nc.wav,high mid{ESCAPES}\nmissing.wav,high\n",
                     encoding="utf-8")
    done = _guarded(f"import sys\nfrom audioclf.cli import main\nsys.exit(main(['train', '--data', {str(table)!r}]))",
                    memory_gb=4, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "looks like the labels" in done.stderr and r"\x1b[2J" in done.stderr
    assert "\x1b" not in done.stderr and "\u202e" not in done.stderr


def test_a_formula_label_is_quoted_in_the_predictions_csv_only(tmp_path):
    classes = ['=HYPERLINK("http://evil.example")', "+1", "tone"]
    out = tmp_path / "predictions.csv"
    write_predictions_csv(out, [Prediction("/clips/a.wav", np.array([0.8, 0.1, 0.1]), labels=(classes[0],)),
                                Prediction("@clip.wav", None, error="-cannot decode")], classes)
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["path", "prediction", "'" + classes[0], "'+1", "tone", "error"]
    assert rows[1][:2] == ["/clips/a.wav", "'" + classes[0]]
    assert rows[2][0] == "'@clip.wav" and rows[2][-1] == "'-cannot decode"
    from audioclf.data.manifest import Item

    from audioclf.runs import RunDir
    from audioclf.runs.report import write_group_csv

    groups = list(csv.reader(io.StringIO(write_group_csv(RunDir(tmp_path), {"=1+1": {"f1": -0.5}}, "test").read_text())))
    assert groups == [["group", "f1"], ["'=1+1", "-0.5"]]  # numbers stay numbers
    manifest = Manifest([Item("a", "/clips/a.wav", (classes[0],)), Item("b", "/clips/b.wav", ("tone",))])
    assert Manifest.from_csv(manifest.to_csv(tmp_path / "manifest.csv")) == manifest  # labels round-trip


def test_words_of_other_labels_joined_by_a_space_are_reported_once(tmp_path, caplog):
    for name in ("a", "b", "c", "d"):
        layouts.clip(tmp_path / f"{name}.wav")
    table = tmp_path / "labels.csv"
    table.write_text('fname,labels\na.wav,high\nb.wav,mid\nc.wav,high mid\nd.wav,"high mid,Acoustic guitar"\n')
    with caplog.at_level(logging.WARNING):
        manifest = import_csv(table)
    warnings = [r.getMessage() for r in caplog.records if "looks like the labels" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "line 4: label 'high mid' looks like the labels 'high', 'mid'" in warnings[0] and "'high,mid'" in warnings[0]
    assert "2 label(s)" in warnings[0] and "Acoustic guitar" not in warnings[0]
    assert "high mid" in manifest.classes  # kept: some datasets do have such classes


def test_an_unreadable_class_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    for name in ("noise", "tone"):
        layouts.clip(tmp_path / name / f"{name}0.wav")
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root: the permission error is simulated
        if os.path.basename(os.fspath(path)) == "tone":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"tone: cannot read the folder \(Permission denied\)"):
        import_folder(tmp_path)


def test_exact_repeated_rows_are_used_once_and_reported(tmp_path, caplog):
    for name in ("noise", "tone"):
        for i in range(3):
            layouts.clip(tmp_path / name / f"{name}{i}.wav", seed=i)
    rows = [f"{c}/{c}{i}.wav,{c}" for c in ("noise", "tone") for i in range(3)]
    table = tmp_path / "repeat.csv"
    table.write_text("fname,labels\n" + "\n".join([*rows, rows[1], rows[1] + " "]) + "\n")
    with caplog.at_level(logging.WARNING):
        manifest = import_csv(table)
    assert len(manifest) == 6
    assert "2 row(s) repeat an earlier row exactly (e.g. line 8 repeats line 3); each is used once" in caplog.text
    conflicting = tmp_path / "conflict.csv"
    conflicting.write_text("fname,labels\n" + "\n".join([*rows, "noise/noise1.wav,tone"]) + "\n")
    with pytest.raises(DataError, match="id 'noise/noise1' already used on line 3"):
        import_csv(conflicting)
