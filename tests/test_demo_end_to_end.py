"""The demo as the README promises it (`make demo`: 100 clips per class, the demo recipe), end to end.

Slow (about a minute on 2 cores): run by `make test-slow`, which CI runs after `make test`.
"""

from __future__ import annotations

import pytest

from audioclf.deploy.predictor import Predictor
from audioclf.runs import RunDir
from audioclf.workflows.demo import demo_test_files, run_demo

pytestmark = pytest.mark.slow


def test_the_demo_recipe_separates_the_eight_classes(tmp_path):
    run_dir = run_demo(tmp_path / "demo")
    summary = RunDir(run_dir).read_summary()
    # Measured 0.9875 test accuracy (80 test clips) with the recipe's seed; chance is 0.125.
    assert summary["metrics"]["test"]["accuracy"] >= 0.95
    assert summary["counts"] == {"train": 640, "val": 80, "test": 80}
    picked = demo_test_files(run_dir)
    predictor = Predictor.from_run(run_dir)
    predictions = predictor.predict_files([path for path, _ in picked])
    right = sum(predictor.top_k(p.probs, 1)[0][0] == labels[0] for p, (_, labels) in zip(predictions, picked))
    assert right >= len(picked) - 1
