"""`audioclf demo`: generate the synthetic dataset, train, evaluate and predict — no download."""

from __future__ import annotations

from pathlib import Path

from ..data.manifest import Manifest
from ..data.synth.demo import make_demo_dataset
from ..ownership import claim_folder
from .run import run


def run_demo(out: str | Path = "demo_run", multi_label: bool = False, n_per_class: int = 100,
             overrides: list[str] | None = None, reporter=None) -> Path:
    """Write ``out/data`` (generated audio) and ``out/run`` (the trained run); returns the run dir."""
    out = Path(out)
    # The demo's folders are its own: running it again replaces them (never a folder it did not make).
    claim_folder(out / "data", "synth", overwrite=True)
    source = make_demo_dataset(out / "data", n_per_class=n_per_class, sample_rate=16000, seconds=2.0,
                               multi_label=multi_label, seed=0)
    result = run("demo", reporter=reporter, overrides=[f"data.path={source}", f"out={out / 'run'}", *(overrides or [])],
                 overwrite=True)
    return result.runs[-1]


def demo_test_files(run_dir: Path, n: int = 4) -> list[tuple[str, tuple[str, ...]]]:
    """A few (path, true labels) from the run's test split, one per class where possible."""
    manifest = Manifest.from_csv(Path(run_dir) / "manifest.csv").subset("test")
    picked, seen = [], set()
    for item in manifest:
        if item.labels and item.labels[0] not in seen:
            seen.add(item.labels[0])
            picked.append((item.path, item.labels))
        if len(picked) == n:
            break
    return picked
