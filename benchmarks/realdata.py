"""Zero-config audioclf against the classical baseline a practitioner writes in an hour, on real recordings.

For every ``labels*.csv`` (``fname,labels,split[,...]``) under ``--root`` (default ``../shared/realdata``
beside the checkout), or the CSV files given as arguments, one run measures both sides on the same split:

* **audioclf**: ``audioclf train --data labels.csv`` with nothing else set (a fresh run directory);
* **peer**: librosa MFCC(40) + deltas + delta-deltas, mean and std over time (240 numbers per clip),
  ``StandardScaler``, RBF SVM with C picked on the validation split, trained on the train split.

It prints one table (dataset, audioclf test accuracy and macro-F1, peer test accuracy and macro-F1, the
accuracy ratio, audioclf's wall time) and writes it as markdown (``--markdown``)::

    python benchmarks/realdata.py [CSV ...] [--root DIR] [--out DIR] [--markdown FILE] [key=value ...]

``key=value`` overrides go to every audioclf run (e.g. ``train.epochs=5`` for a quick look); the table then
says so. Not part of ``make test``: a full pass takes several minutes per dataset on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _common import print_table  # benchmarks/ is on sys.path when run as a script

C_GRID = (0.1, 1.0, 10.0, 100.0)
PEER_RATE = 16000  # the peer resamples everything to 16 kHz (librosa.load), the common choice


@dataclass
class Result:
    dataset: str
    n_train: int
    ours_accuracy: float
    ours_macro_f1: float
    peer_accuracy: float
    peer_macro_f1: float
    seconds: float
    peer_seconds: float

    @property
    def ratio(self) -> float:
        return self.ours_accuracy / self.peer_accuracy if self.peer_accuracy else float("nan")


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def mfcc_stats(path: Path) -> np.ndarray:
    """MFCC(40) with deltas and delta-deltas, mean and std over time: the classical clip descriptor."""
    import librosa

    wave, sr = librosa.load(path, sr=PEER_RATE, mono=True)
    mfcc = librosa.feature.mfcc(y=wave, sr=sr, n_mfcc=40)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # delta needs an odd width <= frames
    stacked = [mfcc]
    if width >= 3:
        stacked += [librosa.feature.delta(mfcc, width=width), librosa.feature.delta(mfcc, order=2, width=width)]
    else:
        stacked += [np.zeros_like(mfcc)] * 2
    feats = np.concatenate(stacked)
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)])


def peer(csv_path: Path) -> tuple[float, float]:
    """Test accuracy and macro-F1 of the MFCC + SVM baseline, C chosen on the validation split."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rows = read_rows(csv_path)
    root = csv_path.parent
    data: dict[str, tuple[list[np.ndarray], list[str]]] = {s: ([], []) for s in ("train", "val", "test")}
    for row in rows:
        features, labels = data[row["split"]]
        features.append(mfcc_stats(root / row["fname"]))
        labels.append(row["labels"])

    def fit(c: float):
        model = make_pipeline(StandardScaler(), SVC(C=c, kernel="rbf", gamma="scale"))
        return model.fit(np.stack(data["train"][0]), data["train"][1])

    best_c = max(C_GRID, key=lambda c: accuracy_score(data["val"][1], fit(c).predict(np.stack(data["val"][0]))))
    predicted = fit(best_c).predict(np.stack(data["test"][0]))
    truth = data["test"][1]
    return accuracy_score(truth, predicted), f1_score(truth, predicted, average="macro")


def ours(csv_path: Path, out_dir: Path, overrides: list[str]) -> tuple[float, float]:
    """Test accuracy and macro-F1 of a zero-config audioclf run (plus any benchmark-wide overrides)."""
    import audioclf
    from audioclf.runs import RunDir

    result = audioclf.run({}, overrides=[f"data.path={csv_path}", f"out={out_dir}", *overrides])
    test = RunDir(result.runs[-1]).read_summary()["metrics"]["test"]
    return test["accuracy"], test["macro_f1"]


def dataset_name(csv_path: Path) -> str:
    variant = csv_path.stem.removeprefix("labels").lstrip("_")
    return csv_path.parent.name + (f" ({variant})" if variant else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="*", help="labels CSV files, then key=value overrides for audioclf")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "realdata"),
                        help="folder searched for labels*.csv when no CSV is given")
    parser.add_argument("--out", help="where the audioclf runs go (default: a temporary folder)")
    parser.add_argument("--markdown", default="realdata_results.md", help="the table as markdown")
    args = parser.parse_args()
    csvs = [Path(item) for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    if not csvs:
        csvs = sorted(Path(args.root).glob("*/labels*.csv"))
    if not csvs:
        raise SystemExit(f"no labels*.csv under {args.root}; give CSV files or --root")
    out_root = Path(args.out or tempfile.mkdtemp(prefix="audioclf-realdata-"))

    results = []
    for csv_path in csvs:
        name = dataset_name(csv_path)
        started = time.perf_counter()
        peer_accuracy, peer_f1 = peer(csv_path)
        peer_seconds = time.perf_counter() - started
        started = time.perf_counter()
        accuracy, macro_f1 = ours(csv_path, out_root / name.replace(" ", "_").strip("()"), overrides)
        seconds = time.perf_counter() - started
        n_train = sum(row["split"] == "train" for row in read_rows(csv_path))
        results.append(Result(name, n_train, accuracy, macro_f1, peer_accuracy, peer_f1, seconds, peer_seconds))
        print(f"{name}: audioclf {accuracy:.3f} ({seconds:.0f} s), peer {peer_accuracy:.3f} ({peer_seconds:.0f} s)",
              flush=True)

    header = ["dataset", "train clips", "audioclf acc", "audioclf macro-F1", "peer acc", "peer macro-F1",
              "acc ratio", "audioclf wall s"]
    rows = [[r.dataset, str(r.n_train), f"{r.ours_accuracy:.3f}", f"{r.ours_macro_f1:.3f}", f"{r.peer_accuracy:.3f}",
             f"{r.peer_macro_f1:.3f}", f"{r.ratio:.2f}", f"{r.seconds:.0f}"] for r in results]
    title = "Zero-config audioclf vs MFCC + SVM (test split)" + (f", overrides: {' '.join(overrides)}" if overrides else "")
    print_table(title, header, rows)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    Path(args.markdown).write_text("\n".join(lines) + "\n")
    print(f"\nwrote {args.markdown}; runs in {out_root}")


if __name__ == "__main__":
    main()
