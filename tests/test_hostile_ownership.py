"""Hostile output folders: audioclf writes into or deletes only folders it made (``.audioclf-owner``), and no
name from a config, a database or a run folder leads a write outside ``--out``. Each refusal is one line naming
the folder or key, before anything is written; the user's files stay as they were."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pytest
import yaml

from audioclf.cli import main
from audioclf.data.audio import write_audio
from audioclf.data.importers import import_folder
from audioclf.data.manifest import Item, Manifest
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.ownership import OWNER_FILE, owner
from audioclf.runs import RunDir
from audioclf.workflows.run import run
from audioclf.workflows.sweep import load_sweep, sweep

TINY = ["model.name=mlp", "train.epochs=1", "data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.num_workers=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("own") / "data", n_per_class=3, seconds=1.0, seed=3)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("own") / "run"
    run({}, overrides=[f"data.path={data}", f"out={out}", *TINY])
    return out


def _user_files(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return files


def _untouched(root, files):
    return all((root / name).read_text() == text for name, text in files.items())


def _one_line_exit_2(args, capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, (code, err)
    return err


# --- 1. --overwrite deletes only a folder audioclf marked as its own -----------------------------------------
@pytest.mark.parametrize("files", [
    {"app/config.yaml": "x: 1\n", "thesis.txt": "keep\n"},  # a child that looks like a run
    {"config.yaml": "name: project\n", "main.py": "print('hi')\n"},  # a project with a config.yaml
    {"sub/.lock": "{}", ".git/HEAD": "ref: refs/heads/main\n"},  # a child holding a .lock
], ids=["child-config", "project-config", "child-lock"])
def test_train_overwrite_never_deletes_a_folder_audioclf_did_not_mark(data, tmp_path, capsys, files):
    out = tmp_path / "v"
    _user_files(out, files)
    err = _one_line_exit_2(["train", "--data", str(data), "--out", str(out), "--overwrite", *TINY], capsys)
    assert f"out={out} holds files audioclf did not write" in err and "not deleted" in err
    assert _untouched(out, files) and not (out / OWNER_FILE).exists()


def test_sweep_overwrite_never_deletes_a_folder_audioclf_did_not_mark(data, tmp_path):
    out = tmp_path / "v"
    files = _user_files(out, {"app/config.yaml": "x: 1\n", "thesis.txt": "keep\n"})
    spec = load_sweep(None, ["train.lr=0.001"], [f"data.path={data}", *TINY])
    with pytest.raises(ConfigError, match=rf"out={out} holds files audioclf did not write .*not deleted"):
        sweep(spec, out, overwrite=True)
    assert _untouched(out, files) and sorted(p.name for p in out.iterdir()) == ["app", "thesis.txt"]


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_run_without_a_marker_is_not_overwritten_but_still_resumes(data, tmp_path, capsys):
    out = tmp_path / "old"
    args = ["train", "--data", str(data), "--out", str(out), *TINY]
    assert main(args) == 0 and owner(out)["kind"] == "run"
    first = RunDir(out).run_id()
    capsys.readouterr()
    (out / OWNER_FILE).unlink()  # as a run of an older audioclf
    err = _one_line_exit_2([*args, "--overwrite"], capsys)
    assert "delete it by hand" in err and RunDir(out).run_id() == first
    assert main([*args[:-1], "train.epochs=2", "--resume"]) == 0  # it is still the user's run to continue


# --- 2. a crafted sweep database cannot choose a trial's folder ----------------------------------------------
@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_crafted_sweep_database_cannot_steer_a_trial_outside_or_into_another_run(data, tmp_path):
    root, elsewhere = tmp_path / "sweep", tmp_path / "elsewhere"
    sweep(load_sweep(None, ["train.lr=0.001"], [f"data.path={data}", *TINY]), root)
    first = RunDir(root / "trials" / "trial_000")
    first_id, first_last = first.run_id(), first.checkpoint("last").read_bytes()
    study = optuna.load_study(study_name="audioclf-sweep", storage=f"sqlite:///{root / 'sweep.db'}")
    study.enqueue_trial({"train.lr": 0.001}, user_attrs={"run_dir": str(elsewhere)})
    study.enqueue_trial({"train.lr": 0.001}, user_attrs={"run_dir": str(first.root), "retry_of": 0})
    sweep(None, root, resume=True)
    assert not elsewhere.exists()
    assert first.run_id() == first_id and first.checkpoint("last").read_bytes() == first_last
    assert sorted(p.name for p in (root / "trials").iterdir()) == ["trial_000", "trial_001", "trial_002"]


# --- 3. stage names stay inside --out ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "ABS", "../victim"])
def test_a_stage_name_cannot_lead_outside_out(data, tmp_path, name):
    name = str(tmp_path / "abs") if name == "ABS" else name
    victim = _user_files(tmp_path / "victim", {"report.md": "my report\n", "summary.json": "{}\n",
                                               "notes.txt": "keep\n"})
    cfg = {"data": {"path": str(data)}, "out": str(tmp_path / "out"), "stages": [{"name": name}]}
    with pytest.raises(ConfigError, match=re.escape(f"stages[0].name='{name}': leads outside")):
        run(cfg, overrides=TINY, overwrite=True)
    assert _untouched(tmp_path / "victim", victim) and sorted(p.name for p in tmp_path.iterdir()) == ["victim"]


def test_a_stage_name_through_a_link_that_leads_out_is_refused(data, tmp_path):
    files = _user_files(tmp_path / "elsewhere", {"notes.txt": "keep\n"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    cfg = {"data": {"path": str(data)}, "out": str(tmp_path / "out"), "stages": [{"name": "link/x"}]}
    with pytest.raises(ConfigError, match=re.escape("stages[0].name='link/x': leads outside")):
        run(cfg, overrides=TINY, resume=True)
    assert _untouched(tmp_path / "elsewhere", files) and [p.name for p in (tmp_path / "elsewhere").iterdir()] == [
        "notes.txt"]


# --- 4. commands that write into a folder refuse one they did not make ----------------------------------------
def test_augment_refuses_a_folder_with_the_users_files(data, tmp_path, capsys):
    out = tmp_path / "F"
    files = _user_files(out, {"manifest.csv": "my,table\n"})
    transform = "{name: gain, p: 1.0, min_gain_db: -3, max_gain_db: 3}"
    for flags in ([], ["--overwrite"]):
        err = _one_line_exit_2(["augment", "--data", str(data), "--out", str(out), "--transform", transform, *flags],
                               capsys)
        assert f"out_dir={out} holds files audioclf did not write (manifest.csv" in err
    assert _untouched(out, files) and sorted(p.name for p in out.iterdir()) == ["manifest.csv"]
    # Its own output is continued, and replaced with --overwrite.
    new = tmp_path / "aug"
    assert main(["augment", "--data", str(data), "--out", str(new), "--transform", transform]) == 0
    assert main(["augment", "--data", str(data), "--out", str(new), "--transform", transform, "--seed", "1",
                 "--overwrite"]) == 0
    assert json.loads((new / "augment_settings.json").read_text())["seed"] == 1


def test_synth_mixtures_refuses_a_folder_with_the_users_files(data, tmp_path, capsys):
    out = tmp_path / "F"
    files = _user_files(out, {"labels.csv": "mine\n", "audio/mix_000000.wav": "my recording\n"})
    for flags in ([], ["--overwrite"]):
        err = _one_line_exit_2(["synth", "mixtures", "--source", str(data), "--out", str(out), "--n", "2",
                                "--sr", "8000", *flags], capsys)
        assert f"out_dir={out} holds files audioclf did not write (audio, labels.csv" in err
    assert _untouched(out, files)


def test_synth_speaker_count_refuses_a_folder_with_the_users_files(tmp_path):
    from audioclf.data.synth.speaker_count import generate_speaker_count

    rng = np.random.default_rng(0)
    items = [Item(f"{s}-1-0000", str(write_audio(tmp_path / "src" / f"{s}.wav", 0.1 * rng.standard_normal(8000), 8000)),
                  (s,), groups={"speaker": s, "sex": "F" if int(s) % 2 else "M"}) for s in ("1", "2", "3", "4")]
    out = tmp_path / "F"
    files = _user_files(out, {"metadata.csv": "mine\n"})
    with pytest.raises(ConfigError, match=rf"out_dir={out} holds files audioclf did not write \(metadata.csv"):
        generate_speaker_count(Manifest(items), out, max_speakers=2, n=2, seconds=0.5, sample_rate=8000,
                               progress=False)
    assert _untouched(out, files)


def test_shard_refuses_a_folder_with_the_users_shard_named_files(data, tmp_path, capsys):
    out = tmp_path / "F"
    files = _user_files(out, {"train-000000.tar": "my archive\n", "shards.json": "{\"mine\": 1}\n"})
    err = _one_line_exit_2(["shard", "--data", str(data), "--out", str(out), "data.clip_seconds=1.0"], capsys)
    assert f"out={out} holds files audioclf did not write" in err and _untouched(out, files)


def test_export_replaces_only_an_onnx_model_audioclf_exported(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    target = tmp_path / "model.onnx"
    target.write_text("my model\n")
    for flags in ([], ["--overwrite"]):
        err = _one_line_exit_2(["export", str(trained), "--out", str(target), *flags], capsys)
        assert f"--out {target}:" in err
    assert target.read_text() == "my model\n"
    own = tmp_path / "own.onnx"
    assert main(["export", str(trained), "--out", str(own)]) == 0
    assert "add --overwrite" in _one_line_exit_2(["export", str(trained), "--out", str(own)], capsys)
    assert main(["export", str(trained), "--out", str(own), "--overwrite"]) == 0


# --- 5. a received run folder cannot choose where --resume writes its cache ----------------------------------
@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_resume_ignores_a_cache_dir_named_only_by_the_run_folder(data, tmp_path):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run({}, overrides=[f"data.path={data}", f"out={out}", *TINY])
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["data"]["cache_dir"] = str(elsewhere)  # as in a run folder someone sent
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    run({}, overrides=[f"out={out}", "train.epochs=2"], resume=True)
    assert not elsewhere.exists() and len(RunDir(out).read_metrics()) == 2
    # Named again by the user, it is used.
    run({}, overrides=[f"out={out}", "train.epochs=3", f"data.cache_dir={elsewhere}"], resume=True)
    assert elsewhere.is_dir() and any(elsewhere.rglob("*"))


def test_the_demo_replaces_only_its_own_folders(tmp_path):
    from audioclf.workflows.demo import run_demo

    out = tmp_path / "thesis"
    files = _user_files(out, {"data/labels.csv": "my labels\n", "data/tone/take1.wav": "my take\n"})
    with pytest.raises(ConfigError, match=rf"out={out / 'data'} holds files audioclf did not write"):
        run_demo(out, multi_label=True, n_per_class=4, overrides=TINY)
    assert _untouched(out, files) and sorted(p.name for p in out.iterdir()) == ["data"]
