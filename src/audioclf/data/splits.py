"""Train / val / test splits: stratified, iterative multi-label, by group, held-out groups, random.

The array functions return one split name per item (``np.ndarray`` of str, in item order) and are
deterministic from ``seed``; :func:`assign_splits` applies them to a Manifest. ``fractions`` are
(train, val, test) and must sum to 1; a zero fraction leaves that split empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from iterstrat.ml_stratifiers import IterativeStratification

from ..errors import ConfigError, DataError
from .manifest import Manifest

SPLITS = ("train", "val", "test")
METHODS = ("auto", "stratified", "iterative", "group", "heldout", "random", "given")
Fractions = Sequence[float]


# --- array-level splits -------------------------------------------------------------------------
def random_split(n: int, fractions: Fractions = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Shuffle ``n`` items and cut them by ``fractions``."""
    fractions = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype="<U5")
    out[rng.permutation(n)] = _names_for_counts(_split_counts(n, fractions, rng))
    return out


def stratified_split(labels: Sequence[str], fractions: Fractions = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Split within each class (GTZAN: "80/10/10 within each genre folder").

    Per class, counts are ``fractions * n`` rounded by largest remainder (ties broken at random), and every
    split with a positive fraction gets at least one item of a class that has enough items for all.
    """
    fractions = _check_fractions(fractions)
    labels = np.asarray([str(label) for label in labels])
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype="<U5")
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        out[rng.permutation(members)] = _names_for_counts(_split_counts(len(members), fractions, rng))
    return out


def iterative_stratified_split(Y: np.ndarray, fractions: Fractions = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Iterative multi-label stratification (Sechidis et al. 2011) into train/val/test.

    Uses iterstrat's implementation of the algorithm, which takes any number of subsets with any
    proportions (its ``MultilabelStratifiedShuffleSplit`` only cuts two). Rows are shuffled first so the
    seed changes more than tie-breaks. Rows without labels are spread to fill the subsets' sizes.
    """
    fractions = _check_fractions(fractions)
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise DataError(f"iterative_stratified_split needs an (N, C) label matrix, got shape {Y.shape}")
    out = np.empty(len(Y), dtype="<U5")
    if len(Y) == 0:
        return out
    active = [i for i, f in enumerate(fractions) if f > 0]  # a zero-size subset would still attract items
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(Y))
    r = np.asarray([fractions[i] for i in active], dtype=np.float64)
    # iterstrat only calls random_state.choice(n), which numpy's Generator provides.
    folds = IterativeStratification(labels=Y[order].astype(bool), r=r, random_state=rng)
    out[order] = np.asarray([SPLITS[i] for i in active])[folds]
    return out


def group_split(groups: Sequence[str], fractions: Fractions = (0.8, 0.1, 0.1), seed: int = 0,
                labels: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Whole groups (speaker, location ...) go to one split; sizes approximate ``fractions`` by items.

    Greedy, largest group first: each group goes to the split where it most reduces the L1 distance
    between the split's (item count, per-class counts) and their targets, so with ``labels`` (class names,
    or an (N, C) 0/1 matrix) the class mix is kept as well as whole groups allow. Afterwards every split
    with a positive fraction that ended empty takes the smallest group from a split holding several.
    """
    fractions = _check_fractions(fractions)
    groups = np.asarray([str(g) for g in groups])
    counts = _count_matrix(len(groups), labels)  # (N, 1 + C): item count, then classes
    names, inverse = np.unique(groups, return_inverse=True)
    group_counts = np.zeros((len(names), counts.shape[1]))
    np.add.at(group_counts, inverse, counts)
    targets = np.outer(fractions, counts.sum(axis=0))  # (S, 1 + C)
    assigned = np.zeros_like(targets)

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(names))  # random order among equal sizes
    order = shuffled[np.argsort(-group_counts[shuffled, 0], kind="stable")]
    split_of_group = np.zeros(len(names), dtype=int)
    positive = np.asarray(fractions) > 0
    for g in order:
        after = np.abs(assigned + group_counts[g] - targets).sum(axis=1)
        before = np.abs(assigned - targets).sum(axis=1)
        cost = np.where(positive, after - before, np.inf)
        deficit = targets[:, 0] - assigned[:, 0]
        best = np.lexsort((-deficit, cost))[0]  # lowest cost; ties -> the split missing the most items
        split_of_group[g] = best
        assigned[best] += group_counts[g]
    _fill_empty_splits(split_of_group, group_counts[:, 0], positive)
    return np.asarray(SPLITS)[split_of_group[inverse]].astype("<U5")


def heldout_group_split(groups: Sequence[str], heldout: Sequence[str], fractions: Fractions = (0.8, 0.1, 0.1),
                        seed: int = 0, labels: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Items whose group value is in ``heldout`` go to "test" only (devices unseen in training, DCASE 2022 Task 1).

    The other items are split by ``fractions`` (test included): stratified by class when ``labels`` are
    class names, iterative when they are an (N, C) matrix, random without labels.
    """
    fractions = _check_fractions(fractions)
    groups = np.asarray([str(g) for g in groups])
    heldout = [str(h) for h in heldout]
    present = set(groups.tolist())
    missing = [h for h in heldout if h not in present]
    if missing:
        raise ConfigError(f"heldout value '{missing[0]}' does not occur; group values: {', '.join(sorted(present))}")
    is_heldout = np.isin(groups, heldout)
    rest = np.flatnonzero(~is_heldout)
    out = np.full(len(groups), "test", dtype="<U5")
    if labels is None:
        out[rest] = random_split(len(rest), fractions, seed)
    elif np.ndim(labels) == 2:
        out[rest] = iterative_stratified_split(np.asarray(labels)[rest], fractions, seed)
    else:
        out[rest] = stratified_split([labels[i] for i in rest], fractions, seed)
    return out


# --- manifest-level entry point -----------------------------------------------------------------
def assign_splits(manifest: Manifest, method: str = "auto", fractions: Fractions = (0.8, 0.1, 0.1),
                  group: str | None = None, heldout: Sequence[str] | None = None, seed: int = 0) -> Manifest:
    """A new manifest with a split on every item.

    ``method``:
      - "given": keep the items' splits (each item must have train, val or test); ``group`` and
        ``heldout`` are ignored.
      - "auto": every item has a split -> keep them, except that train/test without val gets a val set
        carved out of train (``fractions[1] / (fractions[0] + fractions[1])`` of it, stratified, iterative
        or by group as below); some items without a split -> DataError; none -> "heldout" when
        ``heldout`` is given, "group" when ``group`` is given, else "iterative" for multi-label and
        "stratified" for single-label data.
      - "stratified" (single-label), "iterative", "random": as the functions of the same name.
      - "group" / "heldout": by the group column ``group`` (and the ``heldout`` values).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown split method '{method}'; available: {', '.join(METHODS)}")
    fractions = _check_fractions(fractions)
    if method == "given":  # group / heldout only shaped splits made earlier (e.g. re-evaluating a run)
        _check_given(manifest)
        return manifest
    if group is not None and group not in manifest.group_names:
        available = ", ".join(manifest.group_names) or "none"
        raise ConfigError(f"unknown group column '{group}'; available: {available}")
    if group is not None and method not in ("auto", "group", "heldout"):
        raise ConfigError(f"group '{group}' is only used by split methods auto, group and heldout, not '{method}'")
    if heldout and method not in ("auto", "heldout"):
        raise ConfigError(f"heldout values are only used by split methods auto and heldout, not '{method}'")
    if len(manifest) == 0:
        return manifest

    if method == "auto":
        with_split = [item.split is not None for item in manifest]
        if all(with_split):
            _check_given(manifest)
            present = {item.split for item in manifest}
            return _carve_val(manifest, fractions, group, seed) if "val" not in present else manifest
        if any(with_split):
            first = next(item for item in manifest if item.split is None)
            raise DataError(f"item {first.id} has no split while others do; give every item a split or none")
        method = "heldout" if heldout else "group" if group else (
            "iterative" if manifest.task == "multi_label" else "stratified")

    if method == "stratified":
        if manifest.task != "single_label":
            raise ConfigError("split method 'stratified' needs single-label data; use 'iterative' for multi-label")
        splits = stratified_split([item.labels[0] for item in manifest], fractions, seed)
    elif method == "iterative":
        splits = iterative_stratified_split(manifest.label_matrix(), fractions, seed)
    elif method == "random":
        splits = random_split(len(manifest), fractions, seed)
    else:  # group / heldout
        if group is None:
            raise ConfigError(f"split method '{method}' needs a group column; available: "
                              f"{', '.join(manifest.group_names) or 'none'}")
        values = manifest.group_values(group)
        if method == "group":
            splits = group_split(values, fractions, seed, labels=_labels_for(manifest))
        else:
            if not heldout:
                raise ConfigError("split method 'heldout' needs heldout group values (e.g. devices s4,s5,s6)")
            splits = heldout_group_split(values, heldout, fractions, seed, labels=_labels_for(manifest))
    return manifest.with_splits(splits.tolist())


# --- helpers ------------------------------------------------------------------------------------
def limit_per_group(manifest: Manifest, per: Sequence[str], n: int, seed: int = 0) -> Manifest:
    """The training items cut to at most ``n`` per combination of the ``per`` group columns and the labels (e.g.
    González Poy's 50 clips per device x location x scene of TAU 2022), drawn with ``seed``; validation and
    test items are kept. ``data.train_subset: {per: [device, location], n: 50}``."""
    if int(n) < 1:
        raise ConfigError(f"data.train_subset.n={n}: expected at least 1 item per group")
    for column in per:
        if column not in manifest.group_names:
            raise ConfigError(f"data.train_subset.per: unknown group column '{column}'; available: "
                              f"{', '.join(manifest.group_names) or 'none'}")
    rng = np.random.default_rng(seed)
    cells: dict[tuple, list[int]] = {}
    for index, item in enumerate(manifest):
        if item.split == "train":
            key = (*(item.groups.get(column) for column in per), tuple(sorted(item.labels)))
            cells.setdefault(key, []).append(index)
    kept = {i for members in cells.values() for i in (members if len(members) <= n else rng.choice(members, n, replace=False))}
    return manifest.with_items([item for i, item in enumerate(manifest) if item.split != "train" or i in kept])


def _check_fractions(fractions: Fractions) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not np.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise ConfigError(f"split fractions {list(fractions)}: expected 3 non-negative numbers "
                          "(train, val, test) that sum to 1")
    total = sum(values)
    return tuple(f / total for f in values)  # type: ignore[return-value]  # exact sum 1 keeps counts = n


def _split_counts(n: int, fractions: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Items per split for ``n`` items: largest remainder, then at least one per positive split if n allows."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(int)
    remainder = exact - counts
    # Random tie-break, so e.g. val does not always win over test across many small classes.
    order = np.lexsort((rng.random(len(counts)), -remainder))
    counts[order[: n - counts.sum()]] += 1
    positive = np.flatnonzero(np.asarray(fractions) > 0)
    if n >= len(positive):
        for s in positive:
            if counts[s] == 0:
                counts[s] = 1
                counts[np.argmax(counts - (np.arange(len(counts)) == s) * n)] -= 1  # from the largest other
    return counts


def _names_for_counts(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(SPLITS), counts)


def _count_matrix(n: int, labels: Sequence[str] | np.ndarray | None) -> np.ndarray:
    """(N, 1 + C): a column of ones (item count) then one-hot classes or the given multi-hot matrix."""
    ones = np.ones((n, 1))
    if labels is None:
        return ones
    if np.ndim(labels) == 2:
        matrix = np.asarray(labels, dtype=np.float64)
    else:
        _, index = np.unique(np.asarray([str(label) for label in labels]), return_inverse=True)
        matrix = np.eye(index.max() + 1 if n else 0)[index]
    if len(matrix) != n:
        raise DataError(f"got {len(matrix)} labels for {n} group values")
    return np.hstack([ones, matrix])


def _fill_empty_splits(split_of_group: np.ndarray, sizes: np.ndarray, positive: np.ndarray) -> None:
    """Give every empty positive-fraction split the smallest group of a split that holds several groups."""
    for s in np.flatnonzero(positive):
        if np.any(split_of_group == s):
            continue
        per_split = np.bincount(split_of_group, minlength=len(positive))
        donors = np.flatnonzero(per_split > 1)
        if len(donors) == 0:
            return  # fewer groups than splits: nothing to move
        donor = donors[np.argmax(per_split[donors])]
        candidates = np.flatnonzero(split_of_group == donor)
        split_of_group[candidates[np.argmin(sizes[candidates])]] = s


def _labels_for(manifest: Manifest) -> list[str] | np.ndarray:
    if manifest.task == "single_label":
        return [item.labels[0] for item in manifest]
    return manifest.label_matrix()


def _check_given(manifest: Manifest) -> None:
    for item in manifest:
        if item.split is None:
            raise DataError(f"item {item.id} has no split; expected train, val or test")
        if item.split not in SPLITS:
            raise DataError(f"item {item.id}: split '{item.split}' is not one of train, val, test")


def _carve_val(manifest: Manifest, fractions: tuple[float, float, float], group: str | None, seed: int) -> Manifest:
    """Train/test-only data: move ``fractions[1] / (fractions[0] + fractions[1])`` of train to val."""
    if fractions[0] + fractions[1] == 0:
        return manifest
    val_share = fractions[1] / (fractions[0] + fractions[1])
    train = manifest.subset("train")
    carve = (1 - val_share, val_share, 0.0)
    if group is not None:
        splits = group_split(train.group_values(group), carve, seed, labels=_labels_for(train))
    elif train.task == "multi_label":
        splits = iterative_stratified_split(train.label_matrix(), carve, seed)
    else:
        splits = stratified_split([item.labels[0] for item in train], carve, seed)
    new_split = dict(zip((item.id for item in train), splits.tolist()))
    return manifest.with_splits([new_split.get(item.id, item.split) for item in manifest])
