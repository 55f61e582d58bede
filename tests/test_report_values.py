"""Every value a report states about a recipe or protocol (``tests/data/report_values.csv``, transcribed with the
report's words) against what the bundled recipe or protocol resolves to, stages and trials included.

A row's ``target`` is ``NAME`` (a recipe, or a protocol: each of its trials), ``NAME/STAGE`` (that stage) and/or
``NAME:LABEL`` (the trials whose named sweep value is ``LABEL``, e.g. ``s5_models:lstm``). Its ``key`` is a dotted
config key (``model.*`` falls back to the model's own default), ``sweep.metric``, or a special key: ``trials``
(how many trials), ``input_shape`` (the model's input, e.g. ``201x552``), ``params`` / ``macs`` (the network's
parameters and MACs, as a run's summary counts them), ``trainable`` (the parameters training updates, as the
reports' "trainable" columns count them), ``params_keras`` (``params`` plus the BatchNorm running statistics,
which Keras's ``model.summary()`` counts as parameters) and ``params_tflite`` (the INT8 TFLite weight bytes,
BatchNorm folded: 1 byte per weight, 4 per int32 bias, the DCASE 2022 "parameters"). Its ``value``: a number
(compared numerically), a word, ``a|b|c`` (the set of values over the trials), ``low..high`` (every value, and
every entry of a list, inside), or ``chosen``: the report is silent, the quote says why the value was chosen, and
the target's YAML comments say it too.
"""

from __future__ import annotations

import copy
import csv
import functools
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from audioclf.config import Config, config_from_dict, config_value, load_config, recipe_dir
from audioclf.workflows.stages import plan_stages
from audioclf.workflows.sweep import _planned, bundled_protocols, load_sweep, sweeps_dir, trial_config, trial_settings

TABLE = Path(__file__).parent / "data" / "report_values.csv"
ROWS = list(csv.DictReader(TABLE.open(encoding="utf-8")))
COLUMNS = ["system", "source", "target", "key", "value", "quote", "where"]
N_CLASSES = {"S1": 80, "S2": 10, "S3": 3, "S4": 10, "S5": 527}  # the reports' class counts (params, macs)
NEEDS_RUN = {"s1_optimizer": ["init_from=/runs/noisy"]}  # a protocol that starts from another run's weights


def _keys_filled_when_unset() -> frozenset[str]:
    """The keys an audio run fills in when they are null (training.inputs.zero_config)."""
    from audioclf.training.inputs.zero_config import audio_defaults

    return frozenset(audio_defaults("multi_label", (80, 92)))


_FILLED_WHEN_UNSET = _keys_filled_when_unset()


def _split_target(target: str) -> tuple[str, str | None, str | None]:
    name, _, label = target.partition(":")
    name, _, stage = name.partition("/")
    return name, stage or None, label or None


@functools.lru_cache(maxsize=None)
def _resolved(name: str, label: str | None) -> tuple[tuple[Config, ...], Any]:
    """The configs a recipe or protocol runs (a protocol: one per trial, those with ``label`` when given) and the
    protocol's spec (None for a recipe)."""
    if name not in bundled_protocols():
        assert label is None, f"{name} is a recipe: it has no trials to pick with :{label}"
        return (load_config(name, ["data.path=/data"]),), None
    teachers = ["/runs/teacher"] if name == "s4_kd_temperature" else None
    spec = load_sweep(name, overrides=["data.path=/data", *NEEDS_RUN.get(name, [])], teachers=teachers)
    configs = []
    for params in _planned(spec):
        if label is not None and label not in params.values():
            continue
        cfg, _ = trial_config(spec, trial_settings(spec, params), Path("trial"))
        configs.append(config_from_dict(cfg))
    assert configs, f"{name}: no trial is labelled {label!r}"
    return tuple(configs), spec


def _stage(cfg: Config, stage: str | None) -> Config:
    if stage is None:
        return cfg
    stages = {s.name: s.config for s in plan_stages(cfg)}
    assert stage in stages, f"no stage {stage!r}; stages: {sorted(stages)}"
    return stages[stage]


def _sizes(cfg: Config, n_classes: int) -> tuple[tuple[int, ...], dict[str, Any]]:
    """The network's input shape (without channels) and its parameter / MAC counts, as a run measures them."""
    from audioclf.data.importers.audioset import EMBEDDING_DIM, N_STEPS
    from audioclf.features import n_frames
    from audioclf.models import create_model
    from audioclf.models.complexity import complexity_report
    from audioclf.training.inputs.audio import build_classifier, feature_config
    from audioclf.training.inputs.embeddings import EmbeddingInputs
    from audioclf.training.trainer import measure_complexity

    if EmbeddingInputs.describes(cfg):
        args = dict(cfg.model)
        name = args.pop("name", None) or EmbeddingInputs.defaults["model.name"]
        shape = (N_STEPS, EMBEDDING_DIM)
        report = complexity_report(create_model(name, n_classes=n_classes, input_shape=shape, **args), shape)
        return shape, {"params": report.params_pytorch, "macs": report.macs_total}
    cfg = copy.deepcopy(cfg)
    cfg.model.pop("weights", None)  # the counts do not depend on the weights (and a test downloads none)
    rate = cfg.data.sample_rate
    assert rate and cfg.data.clip_seconds, "input_shape/params/macs need data.sample_rate and data.clip_seconds"
    n_samples = round(cfg.data.clip_seconds * rate)
    features = feature_config(cfg, rate)
    classifier = build_classifier(cfg, n_classes, rate, n_samples)
    counts = measure_complexity(classifier, cfg.limits)
    network = classifier.backbone
    statistics = sum(buffer.numel() for name, buffer in network.named_buffers()
                     if name.endswith(("running_mean", "running_var")))
    tflite = complexity_report(network, tuple(network.audioclf_spec["input_shape"])).bytes_int8_tflite
    return (features.n_bins, n_frames(features, n_samples)), {
        "params": counts["total"], "macs": counts["macs"], "trainable": counts["trainable"],
        "params_keras": counts["total"] + statistics,
        "params_tflite": tflite}


def _value(cfg: Config, spec: Any, key: str, system: str) -> Any:
    if key.startswith("sweep."):
        return getattr(spec, key.split(".", 1)[1])
    if key in ("input_shape", "params", "macs", "trainable", "params_keras", "params_tflite"):
        shape, counts = _sizes(cfg, N_CLASSES[system])
        return "x".join(map(str, shape)) if key == "input_shape" else counts[key]
    if key.startswith("model.") and key.split(".", 1)[1] not in cfg.model:
        from audioclf.models import model_kwargs
        from audioclf.training.inputs.embeddings import EmbeddingInputs

        name = cfg.model.get("name") or (EmbeddingInputs.defaults["model.name"] if EmbeddingInputs.describes(cfg)
                                         else "small_cnn")
        return model_kwargs(name).get(key.split(".", 1)[1])
    return config_value(cfg, key)


def _same(resolved: Any, stated: Any) -> bool:
    """Numbers numerically, lists entry by entry, mappings key by key (in any order), ``none`` as null, anything
    else as text."""
    if isinstance(stated, dict):
        return isinstance(resolved, dict) and set(resolved) == set(stated) and all(
            _same(resolved[key], value) for key, value in stated.items())
    if isinstance(stated, (list, tuple)):
        return isinstance(resolved, (list, tuple)) and len(resolved) == len(stated) and all(
            _same(r, s) for r, s in zip(resolved, stated))
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if number(stated) and number(resolved):
        return math.isclose(resolved, stated, rel_tol=1e-9, abs_tol=0.0)
    if stated in (None, "none", "null"):
        return resolved in (None, "none")
    return str(resolved) == str(stated)


def _comments(name: str) -> str:
    """The comment lines of a recipe or protocol file and of the recipes under it (``base:``)."""
    path = sweeps_dir() / f"{name}.yaml"
    path = path if path.exists() else recipe_dir() / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    base = (yaml.safe_load(text) or {}).get("base")
    own = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    return own + ("\n" + _comments(base) if base else "")


def test_the_table_has_its_columns_and_a_quote_and_place_for_every_row():
    assert ROWS and list(ROWS[0]) == COLUMNS
    for row in ROWS:
        assert all(row[c].strip() for c in COLUMNS), row
        assert row["system"] in N_CLASSES, row
    keys = [(r["target"], r["key"]) for r in ROWS]
    assert len(keys) == len(set(keys)), "a (target, key) pair is transcribed twice"
    assert sum(r["value"] == "chosen" for r in ROWS) <= len(ROWS) // 10  # the reports state most values


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['target']}-{r['key']}" for r in ROWS])
def test_the_recipe_or_protocol_runs_what_the_report_states(row):
    name, stage, label = _split_target(row["target"])
    configs, spec = _resolved(name, label)
    key, value = row["key"], row["value"]
    if value == "chosen":  # silent report: the file says what it chose
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in _comments(name), f"{name}: chose {key} where the report is silent; its comments must say so"
        return
    if key == "trials":
        assert len(configs) == int(value), f"{row['target']}: {len(configs)} trials, the report {value}"
        return
    resolved = [_value(_stage(cfg, stage), spec, key, row["system"]) for cfg in configs]
    where = f"{row['target']} {key}: resolved {resolved}, the report ({row['where']}) says {value!r}: {row['quote']}"
    if key in _FILLED_WHEN_UNSET:  # null there is "unset": a run fills in its own choice, not "none"
        assert None not in resolved, where + " (null: a run would fill in its zero-config choice)"
    if "|" in value:
        stated = [yaml.safe_load(v) for v in value.split("|")]
        assert all(any(_same(r, s) for s in stated) for r in resolved), where
        assert all(any(_same(r, s) for r in resolved) for s in stated), where
    elif ".." in value:
        low, high = (float(v) for v in value.split(".."))
        flat = [v for r in resolved for v in (r if isinstance(r, (list, tuple)) else [r])]
        assert flat and all(low <= v <= high for v in flat), where
    else:
        stated = yaml.safe_load(value)
        assert all(_same(r, stated) for r in resolved), where


def test_params_and_macs_are_what_a_run_counts():
    """The special keys on a case done by hand: GTZAN CNN1 (32 @ 9x9, 64 @ 3x3, two 2x2 max pools, FC 128, FC 128,
    FC 10) on its 201 x 552 spectrogram."""
    cfg = load_config("gtzan", ["data.path=/data"])
    flat = 64 * (201 // 2 // 2) * (552 // 2 // 2)
    params = (32 * 81 + 32) + (64 * 32 * 9 + 64) + (flat * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)
    macs = 32 * 81 * 201 * 552 + 64 * 32 * 9 * 100 * 276 + flat * 128 + 128 * 128 + 128 * 10
    assert _value(cfg, None, "params", "S2") == params
    assert _value(cfg, None, "macs", "S2") == macs
    assert _value(cfg, None, "input_shape", "S2") == "201x552"
