"""Plant known faults in a copy of a real set's manifest, run ``audioclf doctor`` on it, and score what it finds.

    python benchmarks/plant_faults.py /work/shared/realdata/speech_commands_ar/labels.csv /tmp/planted/speech

Writes into OUT only (never next to the source audio): ``labels.csv`` (the source rows with absolute paths plus
the planted rows), the derived audio under ``OUT/derived/``, ``labels_flipped.csv`` (the same with 10 % of the
labels flipped) and ``truth.json``. Faults, each planted on training clips
copied into the test split:

* exact: the file copied byte for byte;
* near: gain (-6 dB), resampled (to 11.025 kHz, or 16 kHz from 11.025 kHz), trimmed (10 % off the start, 5 %
  off the end), re-encoded (OGG Vorbis, and MP3 where libsndfile writes it);
* a group (speaker) leaked: half of one test group's rows moved to train (where a group has two test rows).

Then runs the doctor on ``labels_flipped.csv`` (every fault at once, groups kept apart by the ``group`` column) and
prints its precision and recall per fault kind (pairs for duplicates, values for group leaks, training files for
label issues: the doctor looks for those in the training split only), and
``--compare`` the similarity of the planted near copies against the best other clip under each fingerprint
candidate (pooled log-mel, pooled chroma, aligned log-mel), the evidence behind :mod:`audioclf.data.fingerprint`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import soundfile as sf

NEAR_KINDS = ("gain", "resampled", "trimmed", "ogg", "mp3")


def _read_rows(source: Path) -> list[dict[str, str]]:
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["fname"] = str((source.parent / row["fname"]).resolve())
    return rows


def _near_copy(kind: str, src: str, dst_stem: Path) -> Path:
    """The near copy ``kind`` of ``src``, written under ``dst_stem`` (its suffix chosen here)."""
    from audioclf.data.audio import load_audio, resample

    wave, rate = load_audio(src, mono=True)
    if kind == "gain":
        out, wave = dst_stem.with_suffix(".flac"), wave * 0.5
    elif kind == "resampled":
        new_rate = 11025 if rate != 11025 else 16000
        out, wave, rate = dst_stem.with_suffix(".flac"), resample(wave, rate, new_rate), new_rate
    elif kind == "trimmed":
        out, wave = dst_stem.with_suffix(".flac"), wave[int(0.10 * len(wave)):len(wave) - int(0.05 * len(wave))]
    elif kind == "ogg":
        out = dst_stem.with_suffix(".ogg")
    elif kind == "mp3":
        out = dst_stem.with_suffix(".mp3")
    else:
        raise ValueError(kind)
    sf.write(str(out), np.clip(wave, -1, 1), rate)
    return out


def plant_faults(source: str | Path, out: str | Path, seed: int = 0, n_exact: int = 20, n_near: int = 10,
                 flip: float = 0.1) -> dict:
    """Write the planted copy of ``source`` (a CSV with fname, labels, split, group) into ``out``; returns the
    truth (also in ``truth.json``)."""
    source, out = Path(source).resolve(), Path(out).resolve()
    if out == source.parent or source.parent in out.parents and out.name == "derived":
        raise ValueError(f"{out}: write the planted copy outside the source folder")
    derived = out / "derived"
    derived.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = _read_rows(source)
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["group"]] = sizes.get(r["group"], 0) + (r["split"] == "test")
    groups_in_test = sorted(group for group, n in sizes.items() if n >= 2)  # a group of one cannot be split
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    picked = [int(i) for i in rng.choice(train, n_exact + n_near * len(NEAR_KINDS), replace=False)]
    truth: dict = {"exact": [], "near": {kind: [] for kind in NEAR_KINDS}, "group_leak": []}
    added = []
    for k, i in enumerate(picked[:n_exact]):
        src = rows[i]["fname"]
        copy = derived / f"exact_{k}{Path(src).suffix}"
        shutil.copyfile(src, copy)
        added.append({**rows[i], "fname": str(copy), "split": "test", "group": f"planted_exact_{k}"})
        truth["exact"].append([src, str(copy)])
    for n, i in enumerate(picked[n_exact:]):
        kind = NEAR_KINDS[n // n_near]
        src = rows[i]["fname"]
        copy = _near_copy(kind, src, derived / f"near_{kind}_{n}")
        added.append({**rows[i], "fname": str(copy), "split": "test", "group": f"planted_near_{n}"})
        truth["near"][kind].append([src, str(copy)])
    # A test group moved half into train: the group (speaker) is then in both splits.
    if groups_in_test:  # a set whose groups are single clips has none to leak
        leaked = str(rng.choice(groups_in_test))
        members = [r for r in rows if r["group"] == leaked]
        for r in members[: len(members) // 2]:
            r["split"] = "train"
        truth["group_leak"].append(leaked)
    rows = rows + added
    columns = list(rows[0])
    _write(out / "labels.csv", rows, columns)
    classes = sorted({r["labels"] for r in rows})
    flipped_rows, flipped = [], []
    for r in rows:
        if rng.random() < flip:
            new = str(rng.choice([c for c in classes if c != r["labels"]]))
            flipped.append([r["fname"], r["labels"], new])
            r = {**r, "labels": new}
        flipped_rows.append(r)
    _write(out / "labels_flipped.csv", flipped_rows, columns)
    truth["flipped"] = flipped
    rest = sorted({r["fname"] for r in rows[: len(rows) - len(added)]} - {rows[i]["fname"] for i in picked})
    truth["others"] = [str(p) for p in rng.choice(rest, min(40, len(rest)), replace=False)]  # hard negatives
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _write(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def _pairs(sets, kind: str) -> set[frozenset]:
    return {frozenset((a.path, b.path)) for dup in sets if dup.kind == kind for a, b in combinations(dup.items, 2)}


def score(truth: dict, result, train_paths: set[str] | None = None) -> dict[str, dict[str, float]]:
    """Precision and recall per fault kind: duplicate pairs (a planted pair found in one set, of all pairs the
    doctor put in sets of that kind), leaked group values, and with ``train_paths`` (the resolved paths of the
    doctored manifest's training rows) flipped training labels among the label issues."""
    table = {}
    found = _pairs(result.sets, "exact")
    planted = {frozenset(p) for p in truth["exact"]}
    table["exact"] = _pr(planted, found)
    found_near = _pairs(result.sets, "near")
    every_near = set()
    for kind, pairs in truth["near"].items():
        planted = {frozenset(p) for p in pairs}
        every_near |= planted
        table[f"near:{kind}"] = {"recall": len(planted & found_near) / max(1, len(planted)), "planted": len(planted)}
    table["near"] = _pr(every_near, found_near)
    leaks = {value for f in result.findings if f.kind == "group_leak" for value in f.values}
    if truth["group_leak"]:
        table["group_leak"] = _pr(set(truth["group_leak"]), leaks)
    if train_paths is not None:  # scored only where the doctor ran on the flipped manifest
        flipped = {str(Path(path).resolve()) for path, _, _ in truth["flipped"]} & train_paths
        doubted = {str(Path(value).resolve()) for f in result.findings if f.kind == "label_issue" for value in f.paths}
        table["label_issue"] = _pr(flipped, doubted)
    return table


def _pr(planted: set, found: set) -> dict[str, float]:
    hit = len(planted & found)
    return {"precision": hit / len(found) if found else 1.0, "recall": hit / max(1, len(planted)),
            "planted": len(planted), "found": len(found)}


def compare_fingerprints(truth: dict) -> dict[str, dict[str, float]]:
    """For each planted near copy: its similarity to its original, and the best similarity of the original to
    any other clip of the planted set (a hard negative), under each candidate measure."""
    import librosa

    from audioclf.data.audio import load_audio
    from audioclf.data.fingerprint import aligned_similarity, fingerprint

    pairs = [(a, b, kind) for kind, ps in truth["near"].items() for a, b in ps]
    paths = sorted({p for a, b, _ in pairs for p in (a, b)} | set(truth.get("others", [])))
    prints, chroma = {}, {}
    for path in paths:
        wave, rate = load_audio(path, sample_rate=16000)
        prints[path] = fingerprint(wave, rate)
        c = librosa.feature.chroma_stft(y=wave, sr=rate)
        v = np.concatenate([c.mean(axis=1), c.std(axis=1)])
        v = v - v.mean()
        chroma[path] = v / max(np.linalg.norm(v), 1e-8)
    measures = {"pooled log-mel": lambda a, b: float(prints[a].vector @ prints[b].vector),
                "pooled chroma": lambda a, b: float(chroma[a] @ chroma[b]),
                "aligned log-mel": lambda a, b: aligned_similarity(prints[a], prints[b])}
    out = {}
    originals = sorted({a for a, _, _ in pairs})
    copies = {b for _, b, _ in pairs}
    for name, measure in measures.items():
        true_scores = [measure(a, b) for a, b, _ in pairs]
        pool = originals + sorted(set(paths) - copies - set(originals))
        negatives = [max(measure(a, o) for o in pool if o != a) for a in originals[:20]]  # 20: the cost of 5-s clips
        out[name] = {"copy min": min(true_scores), "copy median": float(np.median(true_scores)),
                     "best other max": max(negatives), "best other median": float(np.median(negatives)),
                     "margin": min(true_scores) - max(negatives)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a real set's CSV (fname, labels, split, group)")
    parser.add_argument("out", help="folder for the planted copy (outside the source)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true", help="compare the fingerprint candidates too")
    args = parser.parse_args(argv)
    truth = plant_faults(args.source, args.out, args.seed)
    from audioclf.config import load_config
    from audioclf.workflows.doctor import doctor_data

    manifest = Path(args.out) / "labels_flipped.csv"
    result = doctor_data(load_config(None, [f"data.path={manifest}", "data.split=given", "data.group=group"]),
                         Path(args.out) / "doctor", progress=False)
    train_paths = {str(Path(r["fname"]).resolve()) for r in _read_rows(manifest) if r["split"] == "train"}
    for kind, row in score(truth, result, train_paths).items():
        print(f"{kind:<16} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if args.compare:
        for name, row in compare_fingerprints(truth).items():
            print(f"{name:<16} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))


if __name__ == "__main__":
    sys.exit(main())
