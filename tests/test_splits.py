"""Splits: per-class counts, determinism, iterative stratification quality, groups, held-out groups, auto."""

from collections import Counter

import numpy as np
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from audioclf.data.manifest import Item, Manifest
from audioclf.data.splits import (
    SPLITS,
    assign_splits,
    group_split,
    heldout_group_split,
    iterative_stratified_split,
    random_split,
    stratified_split,
)
from audioclf.errors import ConfigError, DataError


def _counts(splits, mask=None) -> tuple[int, int, int]:
    splits = np.asarray(splits) if mask is None else np.asarray(splits)[mask]
    return tuple(int(np.sum(splits == name)) for name in SPLITS)


def _max_label_deviation(Y: np.ndarray, splits: np.ndarray, fractions) -> float:
    """Largest |share of a label's positives in a split - that split's fraction| over labels and splits."""
    positives = Y.sum(axis=0)
    return max(float(np.max(np.abs(Y[splits == name].sum(axis=0) / positives - f)))
               for name, f in zip(SPLITS, fractions) if f > 0)


@pytest.fixture(scope="module")
def multi_hot() -> np.ndarray:
    rng = np.random.default_rng(0)
    prevalence = np.geomspace(0.02, 0.4, 15)  # rare and common labels, ~50 rows with no label
    return (rng.random((600, 15)) < prevalence).astype(np.int64)


# --- stratified / random ------------------------------------------------------------------------
def test_stratified_exact_fractions_per_class():
    labels = ["a"] * 10 + ["b"] * 20 + ["c"] * 30 + ["d"] * 11
    splits = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    labels = np.asarray(labels)
    assert _counts(splits, labels == "a") == (8, 1, 1)
    assert _counts(splits, labels == "b") == (16, 2, 2)
    assert _counts(splits, labels == "c") == (24, 3, 3)
    assert _counts(splits, labels == "d") == (9, 1, 1)  # 8.8 / 1.1 / 1.1 by largest remainder
    assert _counts(stratified_split(["x"] * 10, (0.6, 0.2, 0.2))) == (6, 2, 2)


@pytest.mark.parametrize("n", range(3, 13))
def test_stratified_small_classes_get_every_split(n):
    counts = _counts(stratified_split(["x"] * n, (0.8, 0.1, 0.1), seed=n))
    assert sum(counts) == n and min(counts) >= 1
    assert counts[0] >= max(n - 3, int(0.8 * n) - 1)  # the fix-up only takes what it must from train


def test_stratified_hand_computed_small_cases():
    assert _counts(stratified_split(["x"] * 3)) == (1, 1, 1)
    assert _counts(stratified_split(["x"] * 5)) == (3, 1, 1)
    assert _counts(stratified_split(["x"] * 2)) in {(2, 0, 0), (1, 1, 0), (1, 0, 1)}
    assert _counts(stratified_split(["x"] * 15)) in {(12, 2, 1), (12, 1, 2)}
    assert _counts(stratified_split(["x"] * 10, (0.9, 0.1, 0.0))) == (9, 1, 0)


def test_stratified_is_deterministic_from_seed():
    labels = [f"c{i % 4}" for i in range(80)]
    first = stratified_split(labels, seed=7)
    np.testing.assert_array_equal(first, stratified_split(labels, seed=7))
    assert not np.array_equal(first, stratified_split(labels, seed=8))
    assert set(first.tolist()) == set(SPLITS)


def test_random_split():
    splits = random_split(100, (0.7, 0.2, 0.1), seed=1)
    assert _counts(splits) == (70, 20, 10)
    np.testing.assert_array_equal(splits, random_split(100, (0.7, 0.2, 0.1), seed=1))
    assert not np.array_equal(splits, random_split(100, (0.7, 0.2, 0.1), seed=2))
    assert _counts(random_split(0)) == (0, 0, 0)


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1), (0.5, float("nan"), 0.5)])
def test_bad_fractions(fractions):
    with pytest.raises(ConfigError, match="expected 3 non-negative numbers"):
        random_split(10, fractions)


# --- iterative ----------------------------------------------------------------------------------
def test_iterative_beats_random_on_label_proportions(multi_hot):
    fractions = (0.8, 0.1, 0.1)
    for seed in range(3):
        iterative = iterative_stratified_split(multi_hot, fractions, seed)
        plain = random_split(len(multi_hot), fractions, seed)
        deviation = _max_label_deviation(multi_hot, iterative, fractions)
        assert deviation <= _max_label_deviation(multi_hot, plain, fractions)
        assert deviation < 0.05
        assert _counts(iterative) == (480, 60, 60)  # rows without labels fill the sizes


def test_iterative_two_way_matches_iterstrat_quality(multi_hot):
    ours = iterative_stratified_split(multi_hot, (0.8, 0.2, 0.0), seed=0)
    assert "test" not in set(ours.tolist())
    train, val = next(MultilabelStratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=0)
                      .split(np.zeros(len(multi_hot)), multi_hot))
    reference = np.full(len(multi_hot), "train", dtype="<U5")
    reference[val] = "val"
    ours_dev = _max_label_deviation(multi_hot, ours, (0.8, 0.2, 0.0))
    reference_dev = _max_label_deviation(multi_hot, reference, (0.8, 0.2, 0.0))
    assert ours_dev <= reference_dev + 1 / multi_hot.sum(axis=0).min()  # within one item of the rarest label


def test_iterative_on_one_hot_equals_exact_class_counts():
    Y = np.repeat(np.eye(3, dtype=int), 10, axis=0)
    splits = iterative_stratified_split(Y, (0.8, 0.1, 0.1), seed=0)
    for c in range(3):
        assert _counts(splits, Y[:, c] == 1) == (8, 1, 1)


def test_iterative_assigns_unlabelled_rows_and_is_deterministic(multi_hot):
    Y = np.vstack([multi_hot[:40], np.zeros((20, 15), dtype=int)])
    splits = iterative_stratified_split(Y, seed=5)
    assert set(splits.tolist()) <= set(SPLITS) and "" not in splits.tolist()
    np.testing.assert_array_equal(splits, iterative_stratified_split(Y, seed=5))
    seed1, seed2 = iterative_stratified_split(multi_hot, seed=1), iterative_stratified_split(multi_hot, seed=2)
    assert not np.array_equal(seed1, seed2)
    assert len(iterative_stratified_split(np.zeros((0, 3)))) == 0


# --- groups -------------------------------------------------------------------------------------
def test_group_split_keeps_groups_disjoint_and_sizes_close():
    rng = np.random.default_rng(0)
    groups = [f"spk{g}" for g in rng.integers(0, 40, size=1000)]
    splits = group_split(groups, (0.8, 0.1, 0.1), seed=0)
    owners = {}
    for group, split in zip(groups, splits):
        assert owners.setdefault(group, split) == split, group
    train, val, test = _counts(splits)
    assert abs(train - 800) <= 40 and abs(val - 100) <= 40 and abs(test - 100) <= 40  # < one group (~25 items)
    np.testing.assert_array_equal(splits, group_split(groups, (0.8, 0.1, 0.1), seed=0))


def test_group_split_stratifies_by_label():
    # 20 speakers of 10 items, speakers 0-9 all say "a", 10-19 all say "b": val and test need two speakers
    # each, and with labels they must be one of each class.
    groups = [f"s{i // 10}" for i in range(200)]
    labels = ["a" if i < 100 else "b" for i in range(200)]
    for seed in range(5):
        splits = group_split(groups, (0.8, 0.1, 0.1), seed=seed, labels=labels)
        for name, expected in zip(SPLITS, (80, 10, 10)):
            assert Counter(np.asarray(labels)[splits == name].tolist()) == {"a": expected, "b": expected}


def test_group_split_fills_empty_splits():
    groups = ["big"] * 50 + ["mid"] * 30 + ["small"] * 20
    splits = group_split(groups, (0.8, 0.1, 0.1))
    assert all(n > 0 for n in _counts(splits))
    assert len({(g, s) for g, s in zip(groups, splits)}) == 3


def test_heldout_group_split():
    devices = (["a"] * 30 + ["b"] * 30 + ["s4"] * 10 + ["s5"] * 10)
    labels = [f"scene{i % 2}" for i in range(80)]
    splits = heldout_group_split(devices, ["s4", "s5"], (0.8, 0.1, 0.1), seed=0, labels=labels)
    devices, labels = np.asarray(devices), np.asarray(labels)
    assert set(splits[np.isin(devices, ["s4", "s5"])].tolist()) == {"test"}
    assert set(devices[splits != "test"].tolist()) == {"a", "b"}
    seen = ~np.isin(devices, ["s4", "s5"])
    assert _counts(splits, seen & (labels == "scene0")) == (24, 3, 3)
    no_labels = heldout_group_split(devices, ["s4"], (0.5, 0.25, 0.25))  # random over the 70 seen items
    assert _counts(no_labels, devices != "s4") in {(35, 17, 18), (35, 18, 17)}
    with pytest.raises(ConfigError, match="heldout value 's9' does not occur; group values: a, b, s4, s5"):
        heldout_group_split(devices, ["s9"])


# --- assign_splits ------------------------------------------------------------------------------
def _single(n_per_class=10, classes=("a", "b", "c"), split=None) -> Manifest:
    return Manifest([Item(f"{c}{i}", f"/{c}{i}.wav", (c,), split=split, groups={"speaker": f"s{i % 5}"})
                     for c in classes for i in range(n_per_class)])


def test_auto_single_label_is_stratified():
    manifest = _single()
    result = assign_splits(manifest, seed=4)
    expected = stratified_split([item.labels[0] for item in manifest], (0.8, 0.1, 0.1), seed=4)
    assert [item.split for item in result] == expected.tolist()
    assert result.classes == manifest.classes and [i.id for i in result] == [i.id for i in manifest]


def test_auto_multi_label_is_iterative(multi_hot):
    classes = [f"c{j}" for j in range(multi_hot.shape[1])]
    manifest = Manifest([Item(f"x{i}", f"/x{i}.wav", tuple(c for c, on in zip(classes, row) if on))
                         for i, row in enumerate(multi_hot)], classes=classes)
    result = assign_splits(manifest, seed=2)
    expected = iterative_stratified_split(multi_hot, (0.8, 0.1, 0.1), seed=2)
    assert [item.split for item in result] == expected.tolist()


def test_auto_keeps_given_splits_and_carves_val_from_train():
    given = _single().with_splits(["train", "val", "test"] * 10)
    assert assign_splits(given) == given
    train_test = _single(n_per_class=20).with_splits(["train"] * 15 + ["test"] * 5 + ["train"] * 15 + ["test"] * 5
                                                     + ["train"] * 15 + ["test"] * 5)
    result = assign_splits(train_test, fractions=(0.7, 0.1, 0.2))
    before = {item.id: item.split for item in train_test}
    for item in result:
        assert item.split == before[item.id] or (item.split == "val" and before[item.id] == "train")
    for label in ("a", "b", "c"):
        # 1/8 of each class's 15 train items (1.875) -> 2 go to val
        subset = result.filter(lambda item, label=label: item.labels == (label,))
        assert Counter(item.split for item in subset) == {"train": 13, "val": 2, "test": 5}


def test_auto_carves_val_by_group_when_given():
    train_test = _single(n_per_class=20).with_splits((["train"] * 3 + ["test"]) * 15)
    result = assign_splits(train_test, group="speaker")
    owners = {}
    for item in result.filter(lambda item: item.split != "test"):
        assert owners.setdefault(item.groups["speaker"], item.split) == item.split
    assert "val" in owners.values()


def test_auto_errors_on_partial_splits():
    items = list(_single().items)
    items[0] = Item(items[0].id, items[0].path, items[0].labels, split="train")
    items[5] = Item(items[5].id, items[5].path, items[5].labels, split="test")
    with pytest.raises(DataError, match=r"item a1 has no split"):
        assign_splits(Manifest(items))


def test_assign_group_and_heldout_methods():
    manifest = _single(n_per_class=20)
    by_speaker = assign_splits(manifest, method="group", group="speaker", seed=1)
    owners = {}
    for item in by_speaker:
        assert owners.setdefault(item.groups["speaker"], item.split) == item.split
    held = assign_splits(manifest, method="heldout", group="speaker", heldout=["s0"], seed=1)
    assert {item.split for item in held if item.groups["speaker"] == "s0"} == {"test"}
    assert "s0" not in {item.groups["speaker"] for item in held if item.split != "test"}
    auto_held = assign_splits(manifest, group="speaker", heldout=["s0"], seed=1)
    assert auto_held == held
    assert _counts([item.split for item in assign_splits(manifest, method="random")]) == (48, 6, 6)


def test_assign_given_and_config_errors():
    manifest = _single()
    with pytest.raises(DataError, match="item a0 has no split; expected train, val or test"):
        assign_splits(manifest, method="given")
    given = manifest.with_splits(["train"] * len(manifest))
    assert assign_splits(given, method="given", group="city", heldout=["x"]) == given  # nothing to apply them to
    with pytest.raises(DataError, match="split 'holdout' is not one of"):
        assign_splits(manifest.with_splits(["holdout"] * len(manifest)), method="given")
    with pytest.raises(ConfigError, match=r"unknown split method 'kfold'; available: auto, stratified, iterative"):
        assign_splits(manifest, method="kfold")
    with pytest.raises(ConfigError, match="unknown group column 'city'; available: speaker"):
        assign_splits(manifest, group="city")
    with pytest.raises(ConfigError, match="split method 'group' needs a group column; available: speaker"):
        assign_splits(manifest, method="group")
    with pytest.raises(ConfigError, match="needs single-label data"):
        assign_splits(Manifest([Item("m", "/m.wav", ("a", "b"))]), method="stratified")
    with pytest.raises(ConfigError, match="only used by split methods"):
        assign_splits(manifest, method="random", group="speaker")


def test_train_subset_keeps_at_most_n_training_items_per_group_and_label():
    from audioclf.data.manifest import Item, Manifest
    from audioclf.data.splits import limit_per_group

    items = [Item(f"t{i}", f"/a/t{i}.wav", (["bus", "park"][i % 2],), split="train",
                  groups={"device": ["a", "b"][i // 2 % 2], "city": "x"}) for i in range(40)]
    items += [Item(f"v{i}", f"/a/v{i}.wav", ("bus",), split="val", groups={"device": "a", "city": "x"})
              for i in range(5)]
    manifest = Manifest(items, classes=["bus", "park"], task="single_label")
    cut = limit_per_group(manifest, per=["device"], n=3, seed=0)
    train = [item for item in cut if item.split == "train"]
    assert len(train) == 2 * 2 * 3 and len([i for i in cut if i.split == "val"]) == 5  # val untouched
    assert cut.items == limit_per_group(manifest, per=["device"], n=3, seed=0).items  # the seed decides
    assert limit_per_group(manifest, per=["device"], n=3, seed=1).items != cut.items
    with pytest.raises(ConfigError, match="unknown group column 'room'"):
        limit_per_group(manifest, per=["room"], n=3)
