"""The README's contributing examples work as written: each adds a model, an importer, an augmentation or a
metric with one function or class, and the rest of the tool picks it up."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audioclf.augment.waveform import AUGMENTATIONS, WaveformTransform, build_waveform_augment, register_augmentation
from audioclf.data.importers import IMPORTERS, get_importer, register_importer
from audioclf.data.manifest import Item, Manifest
from audioclf.metrics import METRICS, MetricSpec, _class_indices, _probabilities, compute_metrics
from audioclf.models.registry import MODELS, create_model, register_model

README = Path(__file__).resolve().parents[1] / "README.md"


def _contributing_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Contributing"):]
    section = section[: section.find("\n## ", 3)] if "\n## " in section[3:] else section
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def namespace():
    names = {"Path": Path, "csv": csv, "np": np, "nn": nn, "Item": Item, "Manifest": Manifest,
             "register_model": register_model, "register_importer": register_importer,
             "register_augmentation": register_augmentation, "WaveformTransform": WaveformTransform,
             "MetricSpec": MetricSpec, "_class_indices": _class_indices, "_probabilities": _probabilities}
    yield names
    MODELS.remove("tiny_cnn")
    IMPORTERS.remove("my_corpus")
    AUGMENTATIONS.remove("invert_half")
    METRICS.pop("top3_accuracy", None)


def test_there_is_one_example_per_kind():
    blocks = _contributing_blocks()
    assert len(blocks) == 4
    for marker in ("@register_model", "@register_importer", "@register_augmentation", "MetricSpec("):
        assert sum(marker in block for block in blocks) == 1, marker


def test_the_examples_register_and_work(namespace, tmp_path):
    for block in _contributing_blocks():
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README

    model = create_model("tiny_cnn", n_classes=3, input_shape=(1, 64, 101), width=8)
    assert model(torch.zeros(2, 1, 64, 101)).shape == (2, 3)

    (tmp_path / "train.csv").write_text("file,label\na.wav,dog\nb.wav,cat\n")
    manifest = get_importer("my_corpus")(str(tmp_path))
    assert [item.labels for item in manifest] == [("dog",), ("cat",)] and manifest.classes == ["cat", "dog"]

    chain = build_waveform_augment([{"name": "invert_half", "p": 1.0}])
    wave = np.ones(10, dtype=np.float32)
    out = chain(wave, 16000, np.random.default_rng(0))
    assert sorted(out.tolist()) == [-1.0] * 5 + [1.0] * 5

    spec_line = next(line for block in _contributing_blocks() for line in block.splitlines()
                     if line.startswith("MetricSpec("))
    METRICS["top3_accuracy"] = eval(spec_line.split("#")[0].rstrip().rstrip(","), namespace)  # noqa: S307
    probs = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    values = compute_metrics("single_label", np.array([2, 0]), probs)
    assert values["top3_accuracy"] == 0.5  # class 2 is in the first row's top 3, class 0 not in the second's


def test_the_tested_versions_are_the_locks():
    """`make lock` writes them; edited by hand or left behind after a new lock, they fail here."""
    from test_lock import LOCK, lockdiff

    text = README.read_text()
    start, end = text.index(lockdiff.README_START) + len(lockdiff.README_START), text.index(lockdiff.README_END)
    listed = dict(re.findall(r"`([A-Za-z0-9._-]+)\s+([^`\s]+)`", text[start:end]))
    locked = lockdiff.read_lock(LOCK)
    assert list(listed) == list(lockdiff.KEY_PACKAGES)
    assert listed == {name: locked[name] for name in lockdiff.KEY_PACKAGES}
