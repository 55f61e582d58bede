"""The CLI as a user meets it: exit codes, one-line errors, predict output."""

import csv
import os
from pathlib import Path

import pytest

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.data.audio import window_starts

TINY = ["train.epochs=1", "train.batch_size=16", "data.clip_seconds=1.0", "features.n_mels=32",
        "features.n_fft=512", "features.hop_length=320"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_demo_dataset(root / "data", n_per_class=8, seconds=1.0, seed=3)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return root / "run", data


def test_train_then_predict_prints_top_k_and_writes_csv(cli_run, capsys, tmp_path):
    run, data = cli_run
    files = sorted(data.rglob("*.wav"))[:3]
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(run), *map(str, files), "--top-k", "2", "--csv", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    for path in files:
        assert path.name in printed
    with open(out_csv) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    for row in rows:
        probs = [float(v) for k, v in row.items() if k not in ("path", "prediction", "error")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["prediction"] in row


def test_predict_tta_reports_its_cost_and_still_sums_to_one(cli_run, capsys, tmp_path):
    run, data = cli_run
    files = sorted(data.rglob("*.wav"))[:2]
    plain_csv, tta_csv = tmp_path / "plain.csv", tmp_path / "tta.csv"
    assert main(["predict", str(run), *map(str, files), "--csv", str(plain_csv)]) == 0
    assert "the compute" not in capsys.readouterr().err
    assert main(["predict", str(run), *map(str, files), "--tta", "4", "--csv", str(tta_csv)]) == 0
    captured = capsys.readouterr()
    assert "tta 4: 4x the compute" in captured.err and "s per file" in captured.err
    assert "x the compute" not in captured.out  # stdout: predictions only
    with open(plain_csv) as a, open(tta_csv) as b:
        plain, tta = list(csv.DictReader(a)), list(csv.DictReader(b))
    for before, after in zip(plain, tta):
        probs = [float(v) for k, v in after.items() if k not in ("path", "prediction", "error")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    assert plain != tta  # the shifted copies moved the probabilities
    assert main(["predict", str(run), str(files[0]), "--tta", "0"]) == 2
    assert "tta=0: expected a positive integer" in capsys.readouterr().err


def test_predict_reports_an_unreadable_file_and_goes_on(cli_run, capsys, tmp_path):
    run, data = cli_run
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    good = sorted(data.rglob("*.wav"))[0]
    assert main(["predict", str(run), str(bad), str(good)]) == 3  # some inputs failed
    captured = capsys.readouterr()
    assert good.name in captured.out and "bad.wav" not in captured.out  # stdout: predictions only
    assert "bad.wav: skipped" in captured.err and "1 of 2 file(s) could not be read" in captured.err
    assert main(["predict", str(run), str(good)]) == 0
    assert main(["predict", str(run), str(bad), str(good), "--strict"]) == 2
    assert "bad.wav" in capsys.readouterr().err


def test_a_decompression_bomb_is_skipped_in_predict_and_train(cli_run, capsys, tmp_path):
    import numpy as np
    import soundfile as sf

    from audioclf.runs import RunDir

    run, data = cli_run
    bomb = tmp_path / "bomb.wav"  # 40 KB whose header claims 1 Hz: 320 M samples once resampled to 16 kHz
    sf.write(bomb, np.zeros(20_000, dtype=np.float32), 8000, subtype="PCM_16")
    raw = bytearray(bomb.read_bytes())
    raw[24:28], raw[28:32] = (1).to_bytes(4, "little"), (2).to_bytes(4, "little")
    bomb.write_bytes(bytes(raw))
    assert main(["predict", str(run), str(bomb)]) == 3
    assert "bomb.wav: skipped" in capsys.readouterr().err
    # In a training folder it is listed as skipped with its reason, and the run goes on.
    target = sorted(p for p in data.iterdir() if p.is_dir())[0] / "bomb.wav"
    target.write_bytes(bomb.read_bytes())
    try:
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
    finally:
        target.unlink()
    skipped = RunDir(tmp_path / "run").read_summary()["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["bomb.wav"] and "1 Hz" in skipped[0]["reason"]


def test_predict_long_recording_uses_windows(cli_run, tmp_path):
    import numpy as np

    from audioclf.data.audio import apply_trim, load_audio, write_audio
    from audioclf.deploy.predictor import Predictor

    run, data = cli_run
    clip, sr = load_audio(sorted(data.rglob("*.wav"))[0])
    long_path = tmp_path / "long.wav"
    write_audio(long_path, np.tile(clip, 7), sr)
    predictor = Predictor.from_run(run)
    probs = predictor.predict_files([long_path])[0].probs
    assert probs.shape == (len(predictor.classes),) and probs.sum() == pytest.approx(1.0, abs=1e-5)
    # The file is decoded as a stream (memory independent of its length): the same windows, the same answer
    # as the whole decoded recording, also through the streaming resampler (a file at another rate).
    other_rate = tmp_path / "long48k.wav"
    write_audio(other_rate, load_audio(long_path, sample_rate=48000)[0], 48000, subtype="FLOAT")
    for path in (long_path, other_rate):
        wave, _ = load_audio(path, sample_rate=predictor.sample_rate)
        whole = predictor.wave_window_probabilities(apply_trim(wave, predictor.sample_rate, predictor.trim_silence))
        streamed = predictor.file_window_probabilities(path)
        assert len(whole) > 7
        np.testing.assert_allclose(streamed, whole, atol=1e-6)
        np.testing.assert_allclose(predictor.predict_files([path], aggregate="max")[0].probs, whole.max(0), atol=1e-6)


def test_evaluate_command(cli_run, capsys, tmp_path):
    run, _ = cli_run
    assert main(["evaluate", str(run), "--json", str(tmp_path / "e.json")]) == 0
    captured = capsys.readouterr()
    assert "accuracy" in captured.out and "of the run's test split" in captured.out and "not a test" not in captured.err
    assert (tmp_path / "e.json").exists()


def test_evaluating_on_the_training_data_says_it_is_not_a_test_score(cli_run, capsys):
    run, data = cli_run
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    captured = capsys.readouterr()
    text = " ".join(captured.out.split())
    assert "(every row)" in text and "│ test" not in captured.out
    assert "were in the run's training or validation split: this is not a test score" in " ".join(captured.err.split())


def test_evaluate_a_csv_kept_away_from_its_audio(cli_run, capsys, tmp_path):
    run, data = cli_run
    rows = [f"{path.relative_to(data).as_posix()},{path.parent.name}" for path in sorted(data.glob("*/*.wav"))[:6]]
    listing = tmp_path / "meta" / "eval.csv"
    listing.parent.mkdir()
    listing.write_text("fname,labels\n" + "\n".join(rows) + "\n")
    assert main(["evaluate", str(run), "--data", str(listing)]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "6 of 6 listed files not found" in message and "(evaluate: --audio-root <folder>)" in message
    assert main(["evaluate", str(run), "--data", str(listing), "--audio-root", str(data)]) == 0
    assert "Evaluation on 6 items" in " ".join(capsys.readouterr().out.split())


def test_errors_are_one_line_with_exit_code_2(cli_run, capsys, tmp_path):
    run, data = cli_run
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), "train.epoch=3"]) == 2
    message = capsys.readouterr().err.strip()
    assert "train.epoch" in message and "epochs" in message and "Traceback" not in message
    assert len(message.splitlines()) == 1
    assert main(["predict", str(tmp_path / "no_run"), "x.wav"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "y"), "model.name=resnet9000"]) == 2
    assert "resnet9000" in capsys.readouterr().err


def test_window_starts_cover_the_signal():
    assert window_starts(100, 100, 50) == [0]
    assert window_starts(250, 100, 50) == [0, 50, 100, 150]
    assert window_starts(260, 100, 50) == [0, 50, 100, 150, 160]


@pytest.mark.parametrize("multi_label", [pytest.param(False, marks=pytest.mark.slow), True])  # one of them fast
def test_demo_command_ends_with_results_and_predictions(tmp_path, capsys, multi_label):
    args = ["demo", "--out", str(tmp_path), "--clips-per-class", "12", "train.epochs=1"]
    assert main(args + (["--multi-label"] if multi_label else [])) == 0
    printed = capsys.readouterr().out
    assert ("lwlrap" if multi_label else "accuracy") in printed
    assert "Predictions on a few test files" in printed and "(true: " in printed
    for name in ("summary.json", "metrics.jsonl", "config.yaml", "manifest.csv", "checkpoints/best.pt"):
        assert (tmp_path / "run" / name).exists()


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_ensemble_of_two_runs_reports_members_and_mean(cli_run, tmp_path, capsys):
    import json

    import numpy as np

    from audioclf.workflows.evaluation import ensemble_runs, run_outputs

    run, data = cli_run
    other = tmp_path / "other"
    assert main(["train", "--data", str(data), "--out", str(other), *TINY, "seed=7"]) == 0
    result = ensemble_runs([run, other])
    first, second = run_outputs(run), run_outputs(other, data=str(run / "manifest.csv"), split="test")
    first, second = first.result, second.result
    assert result["n_items"] == len(first.ids)
    # The ensemble's log loss is that of the averaged probabilities (same item order: both sorted by id).
    order1, order2 = np.argsort(first.ids), np.argsort(second.ids)
    mean = (first.probs[order1] + second.probs[order2]) / 2
    from audioclf.metrics import log_loss

    assert result["ensemble"]["log_loss"] == pytest.approx(log_loss(first.targets[order1], mean), abs=1e-9)
    assert result["members"][str(run)]["accuracy"] == pytest.approx(first.metrics["accuracy"])
    capsys.readouterr()
    assert main(["ensemble", str(run), str(other), "--json", str(tmp_path / "e.json")]) == 0
    assert "ensemble" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["n_items"] == result["n_items"]


def test_augment_command_writes_variants_with_their_parameters(tmp_path, capsys):
    import json

    from audioclf.data.manifest import Manifest

    data = make_demo_dataset(tmp_path / "data", n_per_class=1, seconds=0.5, seed=5)
    out = tmp_path / "aug"
    assert main(["augment", "--data", str(data), "--out", str(out), "--variants", "2",
                 "--transform", "{name: gain, p: 1.0, min_gain_db: -6, max_gain_db: -3}",
                 "--transform", "{name: polarity_inversion, p: 1.0}"]) == 0
    manifest = Manifest.from_csv(out / "manifest.csv")
    n_sources = len(list(data.rglob("*.wav")))
    assert len(manifest) == 3 * n_sources
    augmented = [item for item in manifest if item.groups.get("variant") != "0"]
    record = json.loads(augmented[0].groups["augmentation"])
    assert [r["name"] for r in record] == ["gain", "polarity_inversion"]
    assert -6 <= record[0]["params"]["gain_db"] <= -3
    assert main(["augment", "--data", str(data), "--out", str(tmp_path / "x")]) == 2


def test_augment_reads_a_format_and_copies_a_balanced_subset_of_one_split(tmp_path, capsys):
    """González Poy's IR copies: TAU 2022's training fold read as data.format=tau2022, cut to at most n clips per
    device x scene (``--subset``), each copied with every transform."""
    from collections import Counter

    import layouts
    from audioclf.data.importers.tau2022 import import_tau2022
    from audioclf.data.manifest import Manifest

    root = layouts.tau2022(tmp_path / "tau")
    train = import_tau2022(root).subset("train")
    out = tmp_path / "copies"
    assert main(["augment", "--data", str(root), "--format", "tau2022", "--split", "train", "--subset",
                 "{per: [city], n: 1}", "--no-original", "--out", str(out), "--transform", "{name: gain, p: 1.0}"]) == 0
    copies = Manifest.from_csv(out / "manifest.csv")
    sources = {item.id.rsplit(".aug", 1)[0] for item in copies}
    assert sources <= {item.id for item in train}  # the training fold only
    cells = Counter((train[i].groups["city"], train[i].labels[0]) for i in range(len(train)))
    assert len(sources) == len(cells) < len(train)  # one clip per city x scene
    assert Counter((item.groups["city"], item.labels[0]) for item in copies) == Counter(dict.fromkeys(cells, 1))
    assert main(["augment", "--data", str(root), "--format", "tau2022", "--subset", "{n: 0}", "--out",
                 str(tmp_path / "bad"), "--transform", "{name: gain, p: 1.0}"]) == 2
    assert "--subset={'n': 0}: expected {per: [group columns], n: items per group (>= 1)}" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_overrides_may_follow_options(cli_run, tmp_path):
    run, data = cli_run
    out = tmp_path / "mixed"
    assert main(["train", "--data", str(data), *TINY[:1], "--out", str(out), *TINY[1:], "train.lr=0.002"]) == 0
    from audioclf.runs import RunDir

    assert RunDir(out).read_config()["train"]["lr"] == 0.002
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--out", str(out), "--bogus"])


@pytest.mark.parametrize("argv, command, hint", [
    (["train", "--epochs", "5"], "train", "; did you mean train.epochs=5?"),
    (["train", "demo", "--batch-size=8", "--out", "x"], "train", "; did you mean train.batch_size=8?"),
    (["train", "--data", "clips/", "--sample-rate", "8000"], "train", "; did you mean data.sample_rate=8000?"),
    (["predict", "run", "a.wav", "--epochs", "5"], "predict", ""),  # predict takes no overrides: no hint
    (["train", "--bogus"], "train", ""),
])
def test_an_unknown_option_shows_its_commands_usage_and_the_key_it_may_mean(capsys, argv, command, hint):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: audioclf {command} ") and "{demo,train" not in err  # not the top level's
    [error] = [line for line in err.splitlines() if "error:" in line]
    assert error.startswith(f"audioclf {command}: error: unrecognized arguments: --")
    assert error.endswith(hint) and ("did you mean" in error) == bool(hint)


@pytest.mark.parametrize("case", ["missing", "empty", "text", "fake_wav", "huge_float"])
def test_predict_exit_code_says_some_inputs_failed(cli_run, capsys, tmp_path, case):
    run, _ = cli_run
    path = tmp_path / ("nope.wav" if case == "missing" else f"{case}.wav")
    if case == "empty":
        path.write_bytes(b"")
    elif case == "huge_float":  # finite, so no NaN check caught it: predict wrote nan probabilities, exit 0
        import numpy as np
        import soundfile as sf

        sf.write(path, np.full(16000, 1e38, np.float32), 16000, subtype="FLOAT")
    elif case == "text":
        path.write_text("hello")
    elif case == "fake_wav":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(40))
    assert main(["predict", str(run), str(path)]) == 3
    captured = capsys.readouterr()
    assert captured.out.strip() == "" and path.name in captured.err


def test_budget_refusal_has_its_own_exit_code(capsys):
    assert main(["complexity", "small_cnn", "--max-params", "10"]) == 4
    assert "over the complexity limits" in capsys.readouterr().err
    assert main(["complexity", "small_cnn", "--max-params", "10000000"]) == 0


def test_version(capsys):
    from audioclf import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"audioclf {__version__}"


def test_every_option_has_help_and_train_help_lists_recipes_and_examples(capsys):
    import argparse

    from audioclf.cli import build_parser
    from audioclf.config import recipe_dir

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"{name} {action.dest}" for name, sub in commands.items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert missing == []
    with pytest.raises(SystemExit):
        main(["train", "-h"])
    text = capsys.readouterr().out
    assert "examples:" in text and all(p.stem in text for p in recipe_dir().glob("*.yaml"))
    with pytest.raises(SystemExit):
        main(["predict", "-h"])
    text = " ".join(capsys.readouterr().out.split())
    assert "most probable first (default: 3)" in text and "(default: None)" not in text


def test_config_list_shows_every_key_with_default_and_meaning(capsys):
    import dataclasses

    from audioclf.config import Config

    assert main(["config", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split()[0] for line in lines]
    from typing import get_type_hints

    hints = get_type_hints(Config)  # the sections' types (annotations are strings here)
    expected = sum(len(dataclasses.fields(hints[f.name])) if dataclasses.is_dataclass(hints[f.name]) else 1
                   for f in dataclasses.fields(Config))
    assert "train.frozen_embeddings" in keys and "data.max_seconds" in keys and len(keys) == expected
    assert all(len(line.split(None, 3)) == 4 for line in lines), "a key without its meaning"
    assert main(["config", "--list", "train"]) == 0
    assert all(line.startswith("train.") for line in capsys.readouterr().out.splitlines())
    assert main(["config", "--list", "trian"]) == 2


def test_the_run_header_says_what_was_inferred_and_the_end_says_why_it_stopped(cli_run, capsys, tmp_path):
    _, data = cli_run
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY, "data.sample_rate=16000"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "every value below is recorded in config.yaml" in err
    assert "sample rate 16000 Hz (set)" in err and "clip 1 s (set)" in err and "task single-label (from the labels)" in err
    assert "model small_cnn (default)" in err and "epochs 1 (set)" in err
    assert "trained all 1 epochs; best epoch 1" in err
    assert main(["train", "--out", str(out), "--resume", "train.epochs=2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "resume continues after epoch 1 (checkpoints/last.pt)" in err and "trained all 2 epochs" in err


def test_tables_are_plain_markdown_when_piped(cli_run, capsys):
    run, _ = cli_run
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| metric | test |" in out and "| accuracy | " in out and "┃" not in out and "│" not in out


def test_evaluate_streams_whole_files_and_reproduces_the_runs_test_metrics(cli_run, tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    from audioclf.data import dataset
    from audioclf.runs import RunDir
    from audioclf.workflows.evaluation import evaluate_run

    run, data = cli_run
    # Nothing is decoded up front (decode_manifest holds whole files): every window comes from a stream.
    monkeypatch.setattr(dataset, "_decode_one", lambda *a, **k: pytest.fail("decoded a whole file"))
    result = evaluate_run(run, device="cpu")
    expected = RunDir(run).read_summary()["metrics"]["test"]
    for name in ("accuracy", "log_loss", "macro_f1"):
        assert result["metrics"][name] == pytest.approx(expected[name], abs=1e-9)
    # A file whose header is fine but which turns bad part-way (a NaN at 2.5 s) is skipped and listed.
    folder = tmp_path / "data" / sorted(p.name for p in data.iterdir() if p.is_dir())[0]
    folder.mkdir(parents=True)
    wave = np.full(48000, 0.1, np.float32)
    wave[40000] = np.nan
    sf.write(folder / "bad.wav", wave, 16000, subtype="FLOAT")
    good = next(data.rglob("*.wav"))
    (folder / "good.wav").write_bytes(good.read_bytes())
    result = evaluate_run(run, data=str(tmp_path / "data"), device="cpu")
    assert result["n_items"] == 1 and [s["reason"] for s in result["skipped"]] == ["contains NaN or infinite samples"]


def test_brackets_in_paths_and_messages_are_printed_as_they_are(tmp_path, capsys):
    """Rich markup is off: "[tracking]" in a hint or "[1]" in a folder name is not swallowed as a style tag."""
    run = tmp_path / "run[best]"
    assert main(["evaluate", str(run)]) == 2
    assert f"{run}: not a run directory" in capsys.readouterr().err


def test_predict_timeline_of_a_long_recording(cli_run, tmp_path, capsys):
    import csv

    import numpy as np

    from audioclf.data.audio import load_audio, write_audio
    from audioclf.deploy.predictor import Predictor

    run, data = cli_run
    parts = [load_audio(f)[0] for f in sorted(data.rglob("*.wav"))[:6]]
    long_path = tmp_path / "long.wav"
    write_audio(long_path, np.concatenate(parts), 16000)  # 6 s, clip 1 s: 11 windows half a clip apart
    assert main(["predict", str(run), str(long_path), "--timeline", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.reader((tmp_path / "t.csv").open()))
    predictor = Predictor.from_run(run)
    assert rows[0] == ["start_s", "end_s", *predictor.classes] and len(rows) == 1 + 11
    assert [float(r[0]) for r in rows[1:]] == [0.5 * i for i in range(11)] and float(rows[-1][1]) == 6.0
    expected = predictor.file_window_probabilities(long_path)  # the windows predict scores (silence trimmed)
    np.testing.assert_allclose(np.array([[float(v) for v in r[2:]] for r in rows[1:]]), expected, atol=1e-6)
    assert main(["predict", str(run), str(long_path), "--timeline", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 5000
    capsys.readouterr()
    assert main(["predict", str(run), str(long_path), str(long_path), "--timeline", str(tmp_path / "x.csv")]) == 2
    assert "--timeline OUT.csv|OUT.png: one recording" in capsys.readouterr().err


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_the_cli_lets_idle_threads_sleep_unless_the_user_chose(monkeypatch, capsys, user_value):
    if user_value is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", user_value)
    assert main(["config", "--list", "train"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == (user_value or "PASSIVE")
