"""The bundled sweep protocols (the reports' experiments): every one loads with all its trials checked (fast), and
every one runs end to end on a fixture in its dataset's real layout with tiny settings, producing its comparison
table (``make test-slow``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audioclf.cli import main
from audioclf.workflows.sweep import _planned, bundled_protocols, load_sweep

import layouts

PROTOCOLS = sorted(bundled_protocols())
# What a protocol needs besides its data: a noisy-stage run to start from (s1_optimizer), a teacher (KD).
NEEDS_RUN = {"s1_optimizer": "init_from", "s4_kd_temperature": "teacher"}


def test_the_reports_protocols_are_bundled():
    by_system = {name.split("_")[0] for name in PROTOCOLS}
    assert by_system == {"s1", "s2", "s3", "s4", "s5"}
    for name in ("s2_batch_epochs", "s4_kd_temperature", "s3_waveform_cnns", "s5_models", "s1_finetuning"):
        assert name in PROTOCOLS


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_loads_with_every_trial_checked(name, tmp_path, monkeypatch):
    extra = ["init_from=/runs/noisy"] if NEEDS_RUN.get(name) == "init_from" else []
    teachers = ["/runs/teacher"] if NEEDS_RUN.get(name) == "teacher" else None
    spec = load_sweep(name, overrides=["data.path=/data", *extra], teachers=teachers)
    planned = _planned(spec)
    assert planned and len(planned) == len({tuple(sorted(p.items())) for p in planned})  # distinct trials
    assert bundled_protocols()[name].startswith(name.split("_")[0].upper())  # the comment names the report


def test_a_stage_that_starts_from_another_needs_its_run():
    from audioclf.errors import ConfigError

    with pytest.raises(ConfigError, match="starts from stage noisy's weights: give that stage's run with init_from"):
        load_sweep("s1_optimizer", overrides=["data.path=/data"])
    with pytest.raises(ConfigError, match="give the teacher run with --teacher"):
        load_sweep("s4_kd_temperature", overrides=["data.path=/data"])


# --- end to end (slow) ----------------------------------------------------------------------------
TINY_FSD = ["train.batch_size=4", "model.weights=null", "train.epochs=1",
            "stages=[{name: noisy, data: {options: {subset: noisy, val_fraction: 0.0, noisy_val_fraction: 0.5}},"
            " train: {epochs: 1}}, {name: curated, train: {epochs: 1}, init_from: '@noisy'}]"]
TINY_TAU = ["train.batch_size=4", "train.epochs=1", "augment.waveform=[]"]


def _audioset(root):
    from audioclf.data.embeddings import make_synthetic_embeddings
    from audioclf.data.importers.audioset import write_class_labels, write_h5

    write_h5(root / "bal_train.h5", make_synthetic_embeddings(96, seed=1))
    write_h5(root / "unbal_train.h5", make_synthetic_embeddings(96, seed=3))
    write_h5(root / "eval.h5", make_synthetic_embeddings(32, seed=2))
    write_class_labels(root / "class_labels_indices.csv", [f"sound {i}" for i in range(527)])
    return root


def _speaker_mixtures(tmp_path):
    root = layouts.librispeech_tones(tmp_path)
    assert main(["synth", "speaker-count", "--source", str(root), "--n", "24", "--out", str(tmp_path / "mix")]) == 0
    return tmp_path / "mix" / "metadata.csv"


def _arguments(name: str, tmp_path) -> list[str]:
    """The protocol's data (a real-layout fixture) and tiny settings."""
    system = name.split("_")[0]
    if system == "s1":
        root = layouts.fsd2019_kaggle(tmp_path / "fsd")
        if name == "s1_kernel_size":  # the simple CNN on curated clips alone (the protocol drops the stages)
            return [f"data.root={root}", "train.batch_size=4", "train.epochs=1"]
        if name == "s1_frozen_heads":  # one stage, as the protocol runs it; ImageNet backbones without the download
            return [f"data.root={root}", "train.batch_size=4", "train.epochs=1", "model.weights=null"]
        if name == "s1_optimizer":  # the curated stage from a noisy-stage run made here
            noisy = tmp_path / "noisy"
            assert main(["train", "fsd2019", f"data.root={root}", f"out={noisy}", "train.batch_size=4",
                         "train.epochs=1", "stages=[]", "model.name=resnet50", "model.head=simple_cnn",
                         "data.options={subset: noisy, val_fraction: 0.0, noisy_val_fraction: 0.5}"]) == 0
            return [f"data.root={root}", "train.batch_size=4", "model.weights=null", f"init_from={noisy}"]
        return [f"data.root={root}", *TINY_FSD]  # ImageNet backbones, without the download
    if system == "s2":
        return [f"data.root={layouts.gtzan(tmp_path / 'g', per_genre=5)}", "data.clip_seconds=1.0",
                "train.batch_size=4", "train.epochs=1"]
    if system == "s3":
        return [f"data.path={_speaker_mixtures(tmp_path)}", "train.epochs=1", "train.batch_size=8"]
    if system == "s4":
        root = layouts.tau2022(tmp_path / "tau")
        args = [f"data.root={root}", *TINY_TAU]
        if name == "s4_kd_temperature":
            teacher = tmp_path / "teacher"
            assert main(["train", "dcase2022_task1", f"data.root={root}", f"out={teacher}", *TINY_TAU,
                         "stages=[]"]) == 0
            args += ["--teacher", str(teacher)]
        return args
    root = _audioset(tmp_path / "audioset")
    return [f"data.root={root}", "train.epochs=1", "model.hidden=16"]


def _with_fixture_copies(name: str, tmp_path) -> str:
    """s4_augmentation's IR rows add the user's offline IR copies: a copy of the protocol pointing at copies made
    here (`audioclf augment` of the fixture's training clips with two impulse responses)."""
    import yaml

    from audioclf.data.audio import write_audio
    from audioclf.data.importers.tau2022 import import_tau2022
    from audioclf.workflows.sweep import sweeps_dir

    for k in range(2):
        write_audio(tmp_path / "irs" / f"ir{k}.wav", np.exp(-np.arange(400) / (50.0 + k)).astype(np.float32), 44100)
    import_tau2022(tmp_path / "tau").filter(lambda item: item.split == "train").to_csv(tmp_path / "subset.csv")
    assert main(["augment", "--data", str(tmp_path / "subset.csv"), "--out", str(tmp_path / "copies"), "--variants",
                 "2", "--no-original", "--transform", f"{{name: impulse_response, ir_dir: {tmp_path / 'irs'}, "
                 "drc: {}, each: true, p: 1.0}"]) == 0
    protocol = yaml.safe_load((sweeps_dir() / f"{name}.yaml").read_text())
    for label in ("ir_mixed", "ir_val_augmented"):
        protocol["sweep"]["params"]["augmentation"][label]["data.add"][0]["path"] = str(tmp_path / "copies" /
                                                                                     "manifest.csv")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(protocol))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_protocol_runs_end_to_end_and_compares_its_trials(name, tmp_path):
    args = _arguments(name, tmp_path)
    source = _with_fixture_copies(name, tmp_path) if name == "s4_augmentation" else name
    out = tmp_path / "sweep"
    assert main(["sweep", source, "--out", str(out), *args]) == 0
    table = (out / "comparison.md").read_text()
    record = json.loads((out / "sweep.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["complete"] * len(record["trials"])
    assert table.count("| sweep/trial_") == len(record["trials"]) >= 2  # s2_cnn1_vs_cnn2 compares two nets
    assert (out / "curves.png").exists() and (out / "effects.png").exists()


@pytest.mark.slow
def test_s2_cnn1_vs_cnn2_scores_each_net_at_its_last_epoch(tmp_path):
    """The GTZAN report's §4 comparison (0.47 / 0.42): CNN1 and CNN2 with its [128, 128] head, each trial's
    validation accuracy read at the end of its run (train.keep=last), not at its best epoch."""
    import csv

    import yaml

    args = _arguments("s2_cnn1_vs_cnn2", tmp_path)
    out = tmp_path / "sweep"
    assert main(["sweep", "s2_cnn1_vs_cnn2", "--out", str(out), *args, "train.epochs=2"]) == 0
    rows = {r["model.name"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    runs = {t["settings"]["model.name"]: t["run_dir"] for t in json.loads((out / "sweep.json").read_text())["trials"]}
    assert sorted(rows) == sorted(runs) == ["genre_cnn1", "genre_cnn2"]
    for name, row in rows.items():
        run = out / "trials" / Path(runs[name]).name
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["name"] == name and config["model"]["hidden"] == [128, 128]
        assert (config["train"]["optimizer"], config["train"]["lr"], config["train"]["scheduler"]) == ("adam", 4e-4,
                                                                                                      "none")
        summary = json.loads((run / "summary.json").read_text())
        assert summary["kept"] == "last" and summary["planned_epochs"] == 2
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        assert [e["epoch"] for e in epochs if "val/accuracy" in e] == [1, 2]
        assert float(row["val accuracy"]) == pytest.approx(epochs[-1]["val/accuracy"])
