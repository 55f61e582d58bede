"""Duplicates and leaks between the items of a split manifest (``audioclf doctor``, and its fast form in training).

* :func:`exact_duplicates`: items whose canonical PCM hashes alike (:func:`~.audit.pcm_hash`);
* :func:`near_duplicates`: items whose fingerprints match (:mod:`.fingerprint`), exact copies left out;
* a set of duplicates is a **leak** when it spans two splits (the test score then measures memory) and a
  **conflict** when it spans two labellings (the same audio taught as two things): :func:`duplicate_findings`;
* :func:`group_leaks`: a speaker, session or recording (a group column, or ``data.group_pattern``'s groups)
  found in more than one split;
* :func:`rows_to_drop`: what ``--fix`` removes: in every leaking or conflicting set, the items after the
  first (manifest order) that sit in another split or carry other labels than it. Audio is never touched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .audit import Finding
from .fingerprint import ALIGNED_COSINE, CANDIDATE_COSINE, Fingerprint, aligned_similarity, candidate_pairs
from .integrity import AUTO_GROUP_COLUMNS
from .manifest import Item, Manifest

__all__ = ["LEAK_COLUMNS", "DuplicateSet", "duplicate_findings", "exact_duplicates", "findings_line", "group_leaks",
           "near_duplicates", "quick_findings", "rows_to_drop"]

# Columns naming who or what recorded a clip: one value in two splits is a leak. Devices and locations are left
# out: DCASE-style sets share them between splits on purpose (the unseen ones are held out by data.heldout).
LEAK_COLUMNS = tuple(name for name in AUTO_GROUP_COLUMNS if name not in ("device", "device_id", "location"))
SHOWN = 5  # files named in one finding's message (all are listed in its paths)


@dataclass
class DuplicateSet:
    kind: str  # "exact" | "near"
    items: list[Item]  # manifest order
    similarity: float = 1.0  # near: the lowest aligned similarity of the pairs that joined the set

    @property
    def splits(self) -> list[str]:
        return sorted({item.split or "none" for item in self.items})

    @property
    def labellings(self) -> list[str]:
        return sorted({",".join(item.labels) for item in self.items})


def exact_duplicates(items: Sequence[Item], hashes: Mapping[str, str]) -> list[DuplicateSet]:
    """Sets of two or more items (by id in ``hashes``) with the same PCM hash."""
    by_hash: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.id in hashes:
            by_hash[hashes[item.id]].append(item)
    return [DuplicateSet("exact", group) for group in by_hash.values() if len(group) > 1]


def near_duplicates(items: Sequence[Item], prints: Mapping[str, Fingerprint], hashes: Mapping[str, str],
                    candidate: float = CANDIDATE_COSINE, aligned: float = ALIGNED_COSINE) -> list[DuplicateSet]:
    """Sets of items joined by fingerprint matches (pairs that line up, :func:`~.fingerprint.aligned_similarity`
    ``>= aligned``), with exact copies counted once (their hash sets are reported by :func:`exact_duplicates`)."""
    first_of_hash: dict[str, Item] = {}
    for item in items:  # one representative per exact-duplicate set
        if item.id in prints:
            first_of_hash.setdefault(hashes.get(item.id, item.id), item)
    kept = list(first_of_hash.values())
    if len(kept) < 2:
        return []
    vectors = np.stack([prints[item.id].vector for item in kept])
    parent = list(range(len(kept)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lowest: dict[int, float] = {}
    for i, j in candidate_pairs(vectors, candidate):
        score = aligned_similarity(prints[kept[i].id], prints[kept[j].id])
        if score >= aligned:
            a, b = root(i), root(j)
            parent[max(a, b)] = min(a, b)
            lowest[min(a, b)] = min(score, lowest.get(a, 1.0), lowest.get(b, 1.0))
    sets: dict[int, list[int]] = defaultdict(list)
    for i in range(len(kept)):
        sets[root(i)].append(i)
    return [DuplicateSet("near", [kept[i] for i in members], lowest.get(r, 1.0))
            for r, members in sets.items() if len(members) > 1]


def _listed(items: Sequence[Item]) -> str:
    shown = ", ".join(f"{item.path} ({item.split or 'no split'}, {','.join(item.labels)})" for item in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def duplicate_findings(sets: Sequence[DuplicateSet], fix_command: str = "") -> list[Finding]:
    """One finding per set: "leak" (spans splits), "conflict" (spans labellings; a set can be both: listed as a
    conflict, the worse), else "exact_duplicate" / "near_duplicate" within one split and labelling."""
    found = []
    for dup in sets:
        what = "exact copies" if dup.kind == "exact" else f"near copies (aligned similarity >= {dup.similarity:.2f})"
        paths = [item.path for item in dup.items]
        if len(dup.labellings) > 1:
            found.append(Finding("conflict", f"{what} with different labels ({' / '.join(dup.labellings)}): "
                                             f"{_listed(dup.items)}", paths, fix_command))
        elif len(dup.splits) > 1:
            found.append(Finding("leak", f"{what} in {' and '.join(dup.splits)}: {_listed(dup.items)}", paths,
                                 fix_command))
        else:
            found.append(Finding(f"{dup.kind}_duplicate", f"{what} in {dup.splits[0]}: {_listed(dup.items)}", paths,
                                 "harmless for the score; drop the copies to stop them weighing double"))
    return found


def rows_to_drop(sets: Sequence[DuplicateSet]) -> dict[str, str]:
    """Item id -> why it is dropped, for every leaking or conflicting set (module docstring)."""
    dropped = {}
    for dup in sets:
        first = dup.items[0]
        for item in dup.items[1:]:
            if item.split != first.split or item.labels != first.labels:
                how = "exact" if dup.kind == "exact" else "near"
                why = "conflict" if item.labels != first.labels else "leak"
                dropped[item.id] = (f"{why}: {how} copy of {first.path} ({first.split or 'no split'}, "
                                    f"{','.join(first.labels)})")
    return dropped


def leak_columns(manifest: Manifest, group: str | None = None) -> list[str]:
    """The columns whose values must stay in one split: ``group`` (data.group or the pattern's column) and
    any of :data:`LEAK_COLUMNS` the data has (names matched case-insensitively)."""
    names = [name for name in manifest.group_names if name.lower() in LEAK_COLUMNS]
    return list(dict.fromkeys([*([group] if group in manifest.group_names else []), *names]))


def group_leaks(manifest: Manifest, group: str | None = None) -> list[Finding]:
    """One finding per leak column (:func:`leak_columns`) with values in more than one split."""
    found = []
    for column in leak_columns(manifest, group):
        splits_of: dict[str, set[str]] = defaultdict(set)
        for item in manifest:
            value = item.groups.get(column, "")
            if value and item.split:
                splits_of[value].add(item.split)
        shared = sorted(value for value, splits in splits_of.items() if len(splits) > 1)
        if shared:
            examples = ", ".join(f"{v} ({'/'.join(sorted(splits_of[v]))})" for v in shared[:SHOWN])
            paths = [item.path for item in manifest if item.groups.get(column, "") in set(shared)]
            found.append(Finding("group_leak", f"{len(shared)} {column} value(s) in more than one split: {examples}"
                                               f"{' ...' if len(shared) > SHOWN else ''}", paths,
                                 f"split with data.group={column} (drop the split column, or data.split=group)",
                                 shared))
    return found


def quick_findings(manifest: Manifest, hashes: Mapping[str, str], group: str | None = None) -> list[Finding]:
    """The cheap checks training runs before it starts: exact duplicates across splits or labels (``hashes``:
    item id -> hash of the decoded audio) and group leaks."""
    sets = [dup for dup in exact_duplicates(list(manifest), hashes) if len(dup.splits) > 1 or len(dup.labellings) > 1]
    return duplicate_findings(sets, "audioclf doctor --data DATA --fix cleaned.csv") + group_leaks(manifest, group)


def findings_line(kinds: Sequence[str]) -> str:
    """One line for a run header and report.md: the counts of the findings' ``kinds``, or that the quick checks
    found nothing."""
    counts: dict[str, int] = defaultdict(int)
    for kind in kinds:
        counts[kind] += 1
    if not counts:
        return "no exact duplicates across splits or labels, no group in two splits (audioclf doctor checks more)"
    return (", ".join(f"{n} {kind.replace('_', ' ')}{'s' if n > 1 else ''}" for kind, n in counts.items())
            + ": the test score may be optimistic; audioclf doctor --data DATA lists them")
