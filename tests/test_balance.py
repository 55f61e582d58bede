"""Class imbalance (train.balance): the balanced sampler, the loss's class weights, zero-config's choice and the
monitor it picks, and the helper that makes a set imbalanced for measuring them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from audioclf import metrics as M
from audioclf.config import load_config
from audioclf.data.balance import (ClassBalancedOrder, class_weights, drop_to_imbalance, imbalance_ratio,
                                   item_weights)
from audioclf.data.manifest import Item, Manifest
from audioclf.errors import ConfigError, DataError
from audioclf.training.distributed import epoch_batches
from audioclf.training.inputs.zero_config import AUTO_BALANCE, balance_for
from audioclf.training.losses import build_loss


# --- the sampler ------------------------------------------------------------------------------------
def test_the_balanced_sampler_draws_every_class_about_equally_often():
    targets = np.array([0] * 900 + [1] * 90 + [2] * 10)  # 90x between the largest and the smallest class
    batches = epoch_batches(len(targets), 50, seed=3, weights=item_weights(targets, 3))
    drawn = []
    for epoch in range(1, 21):  # 20,000 draws: a class's share has a standard deviation of 0.0033
        batches.set_epoch(epoch)
        drawn += [i for batch in batches for i in batch]
    assert len(drawn) == 20 * len(targets)  # an epoch keeps the split's size
    shares = np.bincount(targets[drawn], minlength=3) / len(drawn)
    assert np.all(np.abs(shares - 1 / 3) < 0.03), shares  # unbalanced order: 0.90 / 0.09 / 0.01


def test_the_sampler_order_is_fixed_by_seed_and_epoch():
    weights = item_weights(np.array([0, 0, 0, 1]), 2)
    first, again = ClassBalancedOrder(weights, 5), ClassBalancedOrder(weights, 5)
    first.set_epoch(2), again.set_epoch(2)
    assert list(first) == list(again)  # resuming at epoch 2 draws the same order
    again.set_epoch(3)
    orders = {tuple(again)} | {tuple(first)}
    assert len(orders) == 2


def test_multi_label_items_are_weighted_by_their_rarest_label():
    targets = np.array([[1, 0], [1, 1], [1, 0], [0, 0]], dtype=np.float32)  # counts: 3 and 1
    np.testing.assert_allclose(item_weights(targets, 2), [1 / 3, 1.0, 1 / 3, 1 / 3])


# --- the loss's class weights -------------------------------------------------------------------------
def test_class_weights_equal_the_hand_computed_values():
    # inverse: 1/10 and 1/2, scaled to mean 1 (sum 2): x 2 / 0.6
    np.testing.assert_allclose(class_weights([10, 2], "inverse"), [1 / 3, 5 / 3])
    # effective number (Cui et al. 2019), beta 0.9: (1 - 0.9) / (1 - 0.9**10) = 0.1 / 0.6513215599 = 0.15353399,
    # (1 - 0.9) / (1 - 0.9**2) = 0.1 / 0.19 = 0.52631579; scaled to sum 2: x 2 / 0.67984978
    np.testing.assert_allclose(class_weights([10, 2], "effective", beta=0.9), [0.45167035, 1.54832965], rtol=1e-6)
    # a class without items keeps weight 1 and does not enter the scaling
    np.testing.assert_allclose(class_weights([10, 0, 2], "inverse"), [1 / 3, 1.0, 5 / 3])


def test_weighted_cross_entropy_weights_each_item_by_its_class():
    logits = torch.tensor([[2.0, 0.5], [0.3, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    per_item = F.cross_entropy(logits, labels, reduction="none")
    loss = build_loss("single_label", class_weights=[0.5, 1.5])
    assert float(loss(logits, labels)) == pytest.approx(float((per_item * torch.tensor([0.5, 1.5, 1.5])).mean()))
    # one-hot rows are the same targets; a MixUp row weighs as the mix of its two classes
    assert float(loss(logits, F.one_hot(labels, 2).float())) == pytest.approx(float(loss(logits, labels)))
    mixed = torch.tensor([[0.25, 0.75]] * 3)
    soft = -(mixed * F.log_softmax(logits, 1)).sum(1)
    assert float(loss(logits, mixed)) == pytest.approx(float((soft * (0.25 * 0.5 + 0.75 * 1.5)).mean()))
    # label smoothing applies to the targets, the weight stays the item's class's
    smooth = build_loss("single_label", label_smoothing=0.2, class_weights=[0.5, 1.5])
    smoothed = -((F.one_hot(labels, 2) * 0.8 + 0.1) * F.log_softmax(logits, 1)).sum(1)
    assert float(smooth(logits, labels)) == pytest.approx(float((smoothed * torch.tensor([0.5, 1.5, 1.5])).mean()))


def test_weighted_bce_weights_each_class_column():
    logits = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per_element = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = build_loss("multi_label", class_weights=[0.4, 1.6])
    assert float(loss(logits, targets)) == pytest.approx(float((per_element * torch.tensor([0.4, 1.6])).mean()))


# --- zero-config ----------------------------------------------------------------------------------
def test_auto_turns_balancing_on_above_five_times_and_off_at_five():
    on, note = balance_for("auto", np.array([30, 12, 5]))  # 6x
    assert on == AUTO_BALANCE and "zero-config" in note and "6.0x" in note and "more than 5x" in note
    off, note = balance_for("auto", np.array([25, 12, 5]))  # exactly 5x
    assert off == "none" and "at most 5x" in note
    assert balance_for("loss", np.array([5, 5]))[0] == "loss"  # a setting stays as set
    assert balance_for("auto", None) == ("none", None)  # counts unknown (streamed shards): nothing claimed
    assert imbalance_ratio([40, 0, 8]) == 5.0  # a class without training items cannot be weighted


class Messages:
    """A reporter that keeps the trainer's messages (the run header among them)."""

    def __init__(self):
        self.texts = []

    def bar(self, description, total):
        return type("Bar", (), {"advance": lambda self, n: None, "close": lambda self: None})()

    def epoch(self, record, monitor, improved):
        pass

    def message(self, text):
        self.texts.append(text)


def _imbalanced_csv(tmp_path, rare_train: int) -> str:
    """Demo clips as a CSV with given splits: 6 training clips of every class but the last, which has
    ``rare_train``; one val and one test clip each."""
    from audioclf.data.synth.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "data", n_per_class=8, seconds=0.5, seed=2)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for index, name in enumerate(classes):
        files = sorted((root / name).glob("*.wav"))
        n_train = rare_train if index == len(classes) - 1 else 6
        rows += [(f, name, "train") for f in files[:n_train]]
        rows += [(files[6], name, "val"), (files[7], name, "test")]
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("fname", "labels", "split"), *[(str(f), c, s) for f, c, s in rows]])
    return str(path)


def _short_run(tmp_path, monkeypatch, data: str, *overrides: str):
    from audioclf.runs import RunDir
    from audioclf.training.inputs import zero_config
    from audioclf.training.trainer import train

    monkeypatch.setattr(zero_config, "TARGET_STEPS", 1)  # one epoch: the choices are under test, not training
    monkeypatch.setattr(zero_config, "MIN_EPOCHS", 1)
    messages = Messages()
    run = train(load_config(None, [f"data.path={data}", f"out={tmp_path / 'run'}", "data.sample_rate=8000",
                                   "features.n_mels=16", "features.n_fft=256", "features.hop_length=200",
                                   "train.ensemble=none", "augment.waveform=[]", *overrides]), reporter=messages)
    header = next(text for text in messages.texts if text.startswith("run "))
    return RunDir(run).read_config(), header


def test_zero_config_balances_an_imbalanced_split_says_so_and_monitors_balanced_accuracy(tmp_path, monkeypatch):
    config, header = _short_run(tmp_path, monkeypatch, _imbalanced_csv(tmp_path, rare_train=1))  # 6x
    assert config["train"]["balance"] == AUTO_BALANCE  # the resolved value, not "auto"
    assert config["train"]["monitor"] == "balanced_accuracy"
    balance_line = next(line for line in header.splitlines() if line.strip().startswith("balance"))
    assert f"{AUTO_BALANCE} (zero-config" in balance_line and "6.0x" in balance_line
    assert "better val balanced_accuracy" in header


def test_zero_config_leaves_a_mildly_imbalanced_split_alone(tmp_path, monkeypatch):
    config, header = _short_run(tmp_path, monkeypatch, _imbalanced_csv(tmp_path, rare_train=2))  # 3x
    assert config["train"]["balance"] == "none"
    assert config["train"]["monitor"] == "accuracy"
    assert "none (zero-config: the largest training class has 3.0x" in header


def test_the_monitor_is_scikit_learns_balanced_accuracy_on_imbalanced_data():
    rng = np.random.default_rng(0)
    y = np.array([0] * 90 + [1] * 8 + [2] * 2)
    probs = rng.dirichlet(np.ones(3), size=len(y))
    probs[:85, 0] += 2  # the common class mostly right: accuracy high, balanced accuracy not
    assert M.balanced_accuracy(y, probs) == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert M.balanced_accuracy(y, probs) < M.accuracy(y, probs) - 0.2


# --- bad values --------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("train.balance=always", "train.balance='always': expected one of auto, none, sampler, loss"),
    ("train.balance_weights=sqrt", "train.balance_weights='sqrt': expected one of inverse, effective"),
    ("train.balance_beta=1.0", "train.balance_beta=1.0: expected a number 0 < beta < 1"),
    ("train.balance_beta=0", "train.balance_beta=0.0: expected a number 0 < beta < 1")])
def test_bad_balance_settings_are_one_line_config_errors(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert str(error.value) == expected


def test_good_balance_settings_load():
    cfg = load_config(None, ["train.balance=loss", "train.balance_weights=inverse", "train.balance_beta=0.99"])
    assert (cfg.train.balance, cfg.train.balance_weights, cfg.train.balance_beta) == ("loss", "inverse", 0.99)
    assert load_config(None, []).train.balance == "auto"  # zero-config


def test_the_loss_refuses_bad_class_weights():
    with pytest.raises(ConfigError, match="class weights"):
        build_loss("single_label", class_weights=[1.0, float("nan")])
    with pytest.raises(DataError, match="3 class weights for 2 classes"):
        build_loss("single_label", class_weights=[1.0, 1.0, 1.0])(torch.zeros(1, 2), torch.tensor([0]))


# --- making a set imbalanced ------------------------------------------------------------------------------
def _manifest() -> Manifest:
    items = [Item(f"{c}{i}", f"{c}{i}.wav", (c,), split) for c in ("a", "b")
             for i, split in enumerate(["train"] * 16 + ["val"] * 4)]
    return Manifest(items)


def test_drop_to_imbalance_cuts_only_the_named_classes_of_one_split():
    cut = drop_to_imbalance(_manifest(), {"b": 1 / 8}, seed=1)
    assert cut.subset("train").class_counts() == {"a": 16, "b": 2}
    assert cut.subset("val").class_counts() == {"a": 4, "b": 4}  # validation (and test) untouched
    assert drop_to_imbalance(_manifest(), {"b": 1 / 8}, seed=1) == cut  # seeded
    assert drop_to_imbalance(_manifest(), {"b": 0.01}, seed=1).subset("train").class_counts()["b"] == 1


def test_drop_to_imbalance_names_what_it_cannot_do():
    with pytest.raises(DataError, match="class 'c' is not in the data"):
        drop_to_imbalance(_manifest(), {"c": 0.5})
    with pytest.raises(DataError, match="keep fraction 0"):
        drop_to_imbalance(_manifest(), {"a": 0})


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_a_run_from_before_train_balance_resumes_unbalanced(tmp_path, monkeypatch):
    """Its config.yaml has no balance key: resuming must not turn zero-config's balancing on half-way."""
    import yaml

    from audioclf.runs import RunDir
    from audioclf.training.trainer import train

    config, _ = _short_run(tmp_path, monkeypatch, _imbalanced_csv(tmp_path, rare_train=1))
    assert config["train"]["balance"] == AUTO_BALANCE
    run = RunDir(tmp_path / "run")
    del config["train"]["balance"]
    run.config.write_text(yaml.safe_dump(config))
    train(load_config(None, [f"out={run.root}", "train.epochs=2"]), resume=True)
    assert run.read_config()["train"]["balance"] == "none"


def test_the_sampler_finds_each_index_target_through_the_training_set_wrappers():
    from types import SimpleNamespace

    from audioclf.augment.batch import DuplicateAugmented
    from audioclf.training.inputs.audio import item_targets

    clips = type("Clips", (), {"targets": torch.tensor([0, 1, 1]), "__len__": lambda self: 3})()
    # augment.duplicate=GROUP=VALUE: only item 0 gets an augmented copy, which follows the originals
    np.testing.assert_array_equal(item_targets(DuplicateAugmented(clips, flag=True, only=[0])), [0, 1, 1, 0])
    # frozen embeddings: one row per window, each with its file's target
    windows = SimpleNamespace(targets=torch.tensor([2, 0]), owner=torch.tensor([0, 0, 1]))
    np.testing.assert_array_equal(item_targets(windows), [2, 2, 0])
