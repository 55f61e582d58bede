"""Zero-config audioclf against two classical baselines a practitioner writes in an hour, on real recordings.

For every ``labels*.csv`` (``fname,labels,split[,...]``) under ``--root`` (default ``../shared/realdata``
beside the checkout), or the CSV files given as arguments, one run measures all sides on the same split:

* **audioclf**: ``audioclf train --data labels.csv`` with nothing else set (a fresh run directory; a run
  folder under ``--out`` that already holds a ``summary.json`` is read instead of trained again);
* **MFCC + SVM**: librosa MFCC(40) + deltas + delta-deltas, mean and std over time (240 numbers per clip);
* **mid-term + SVM**: pyAudioAnalysis-style short-term features (34 + deltas per 50 ms frame), mean and std
  over 1 s mid-term windows, averaged over the file (136 numbers per clip; ``midterm.py``).

Each peer is ``StandardScaler`` + RBF SVM with C picked on the validation split, trained on the train split.
``--held-out DIR`` also writes the group-held-out splits of ``heldout_splits.py`` under DIR and measures them.

It prints one table (dataset, audioclf val and test accuracy, macro-F1, both peers' test accuracy, the ratio of
audioclf's accuracy to the better peer's, audioclf's wall time, and each ensemble member's validation score when
``summary.json`` lists ``members``) and writes it as markdown (``--markdown``)::

    python benchmarks/realdata.py [CSV ...] [--root DIR] [--out DIR] [--held-out DIR] [--peers-only]
                                  [--markdown FILE] [key=value ...]

``key=value`` overrides go to every audioclf run (e.g. ``train.epochs=5`` for a quick look); the table then
says so. Not part of ``make test``: a full pass takes several minutes per dataset on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import print_table  # benchmarks/ is on sys.path when run as a script
from heldout_splits import default_root, read_rows, write_held_out
from midterm import clip_descriptor

C_GRID = (0.1, 1.0, 10.0, 100.0)
PEER_RATE = 16000  # the peers resample everything to 16 kHz (librosa.load), the common choice
PEERS = ("MFCC+SVM", "mid-term+SVM")


@dataclass
class Result:
    dataset: str
    n_train: int
    peers: dict[str, tuple[float, float]]  # peer name -> (test accuracy, test macro-F1)
    peer_seconds: float
    ours: dict | None = None  # summary.json of the audioclf run; None with --peers-only
    seconds: float = float("nan")

    @property
    def best_peer(self) -> float:
        return max(accuracy for accuracy, _ in self.peers.values())

    @property
    def ratio(self) -> float:
        if self.ours is None or not self.best_peer:
            return float("nan")
        return self.ours["metrics"]["test"]["accuracy"] / self.best_peer


def mfcc_stats(wave: np.ndarray, sr: int) -> np.ndarray:
    """MFCC(40) with deltas and delta-deltas, mean and std over time: the classical clip descriptor."""
    import librosa

    mfcc = librosa.feature.mfcc(y=wave, sr=sr, n_mfcc=40)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # delta needs an odd width <= frames
    stacked = [mfcc]
    if width >= 3:
        stacked += [librosa.feature.delta(mfcc, width=width), librosa.feature.delta(mfcc, order=2, width=width)]
    else:
        stacked += [np.zeros_like(mfcc)] * 2
    feats = np.concatenate(stacked)
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)])


DESCRIPTORS = dict(zip(PEERS, (mfcc_stats, clip_descriptor)))
_descriptor_cache: dict[Path, dict[str, np.ndarray]] = {}  # the held-out splits reuse the same files


def descriptors(path: Path) -> dict[str, np.ndarray]:
    """Every peer's descriptor of one file, decoded once (and once per benchmark run)."""
    import librosa

    path = path.resolve()
    if path not in _descriptor_cache:
        wave, sr = librosa.load(path, sr=PEER_RATE, mono=True)
        _descriptor_cache[path] = {name: describe(wave, sr) for name, describe in DESCRIPTORS.items()}
    return _descriptor_cache[path]


def svm_scores(data: dict[str, tuple[list[np.ndarray], list[str]]]) -> tuple[float, float]:
    """Test accuracy and macro-F1 of StandardScaler + RBF SVM, C chosen on the validation split."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def fit(c: float):
        model = make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale"))
        return model.fit(np.stack(data["train"][0]), data["train"][1])

    best_c = max(C_GRID, key=lambda c: accuracy_score(data["val"][1], fit(c).predict(np.stack(data["val"][0]))))
    predicted = fit(best_c).predict(np.stack(data["test"][0]))
    truth = data["test"][1]
    return accuracy_score(truth, predicted), f1_score(truth, predicted, average="macro")


def peers(csv_path: Path) -> dict[str, tuple[float, float]]:
    """Each peer's test accuracy and macro-F1 on the CSV's own train/val/test split."""
    rows = read_rows(csv_path)
    scores = {}
    for name in PEERS:
        data: dict[str, tuple[list[np.ndarray], list[str]]] = {s: ([], []) for s in ("train", "val", "test")}
        for row in rows:
            features, labels = data[row["split"]]
            features.append(descriptors(csv_path.parent / row["fname"])[name])  # an absolute fname stays as is
            labels.append(row["labels"])
        scores[name] = svm_scores(data)
    return scores


def ours(csv_path: Path, out_dir: Path, overrides: list[str]) -> dict:
    """summary.json of a zero-config audioclf run (plus any benchmark-wide overrides); an earlier one is reused."""
    import audioclf
    from audioclf.runs import RunDir

    if (out_dir / "summary.json").exists():
        return RunDir(out_dir).read_summary()
    result = audioclf.run({}, overrides=[f"data.path={csv_path}", f"out={out_dir}", *overrides])
    return RunDir(result.runs[-1]).read_summary()


def members_cell(summary: dict | None) -> str:
    """Each ensemble member's validation score and what the run kept, when its summary lists them (``members``:
    training.members' entry); '-' otherwise."""
    entry = (summary or {}).get("members") or {}
    members = entry.get("members", []) if isinstance(entry, dict) else []
    cells = [f"{m.get('name', '?')} {m['val_score']:.3f}" for m in members
             if isinstance(m, dict) and isinstance(m.get("val_score"), (int, float))]
    if cells and entry.get("chosen"):
        cells.append(f"kept: {entry['chosen']}")
    return ", ".join(cells) or "-"


def dataset_name(csv_path: Path) -> str:
    variant = csv_path.stem.removeprefix("labels").lstrip("_")
    return csv_path.parent.name + (f" ({variant})" if variant else "")


def table(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    def score(summary: dict | None, split: str, metric: str) -> str:
        value = (summary or {}).get("metrics", {}).get(split, {}).get(metric)
        return f"{value:.3f}" if isinstance(value, (int, float)) else "-"

    header = ["dataset", "train clips", "audioclf val acc", "audioclf acc", "audioclf macro-F1",
              *(f"{name} acc" for name in PEERS), "acc / better peer", "audioclf wall s", "members (val)"]
    rows = [[r.dataset, str(r.n_train), score(r.ours, "val", "accuracy"), score(r.ours, "test", "accuracy"),
             score(r.ours, "test", "macro_f1"), *(f"{r.peers[name][0]:.3f}" for name in PEERS),
             "-" if r.ours is None else f"{r.ratio:.2f}", "-" if r.ours is None else f"{r.seconds:.0f}",
             members_cell(r.ours)] for r in results]
    return header, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="*", help="labels CSV files, then key=value overrides for audioclf")
    parser.add_argument("--root", default=str(default_root()), help="folder searched for labels*.csv when no CSV is given")
    parser.add_argument("--out", help="where the audioclf runs go (default: a temporary folder)")
    parser.add_argument("--held-out", metavar="DIR", help="also write and measure the group-held-out splits here")
    parser.add_argument("--peers-only", action="store_true", help="measure the two peers only, train nothing")
    parser.add_argument("--markdown", default="realdata_results.md", help="the table as markdown")
    args = parser.parse_args()
    csvs = [Path(item) for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    if not csvs:
        csvs = sorted(Path(args.root).glob("*/labels*.csv"))
    if args.held_out:
        dataset_dirs = sorted({c.parent for c in csvs if (c.parent / "labels.csv").exists()})
        try:
            csvs += write_held_out(dataset_dirs, Path(args.held_out))
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
    if not csvs:
        raise SystemExit(f"no labels*.csv under {args.root}; give CSV files or --root")
    out_root = None if args.peers_only else Path(args.out or tempfile.mkdtemp(prefix="audioclf-realdata-"))

    results = []
    for csv_path in csvs:
        name = dataset_name(csv_path)
        started = time.perf_counter()
        result = Result(name, sum(row["split"] == "train" for row in read_rows(csv_path)), peers(csv_path),
                        time.perf_counter() - started)
        if out_root is not None:
            started = time.perf_counter()
            result.ours = ours(csv_path, out_root / name.replace(" ", "_").replace("(", "").replace(")", ""),
                               overrides)
            result.seconds = result.ours.get("wall_seconds", time.perf_counter() - started)
        results.append(result)
        print(f"{name}: " + ", ".join(f"{p} {a:.3f}" for p, (a, _) in result.peers.items())
              + (f", audioclf {result.ours['metrics']['test']['accuracy']:.3f} ({result.seconds:.0f} s)"
                 if result.ours else "") + f" (peers {result.peer_seconds:.0f} s)", flush=True)

    header, rows = table(results)
    title = ("Zero-config audioclf vs MFCC + SVM and mid-term + SVM (test split)"
             + (f", overrides: {' '.join(overrides)}" if overrides else ""))
    print_table(title, header, rows)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    Path(args.markdown).write_text("\n".join(lines) + "\n")
    print(f"\nwrote {args.markdown}" + (f"; runs in {out_root}" if out_root else ""))


if __name__ == "__main__":
    main()
