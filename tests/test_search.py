"""train.time_budget: a search over the zero-config knobs that keeps the best trial, within the budget."""

from __future__ import annotations

import json
import time

import pytest

from audioclf import run
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.runs import RunDir
from audioclf.workflows.search import parse_duration

TINY = ["data.clip_seconds=1.0", "data.sample_rate=16000", "features.n_mels=32", "features.n_fft=512",
        "features.hop_length=320", "train.batch_size=16"]


@pytest.mark.parametrize("text, seconds", [("10m", 600.0), ("90s", 90.0), ("1.5h", 5400.0), (45, 45.0),
                                           (" 2 min ", 120.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "0", "10 days"])
def test_bad_durations_are_one_line_errors(text):
    with pytest.raises(ConfigError, match="train.time_budget"):
        parse_duration(text)


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_search_keeps_the_best_trial(tmp_path):
    from audioclf.config import load_config
    from audioclf.workflows.search import search

    data = make_demo_dataset(tmp_path / "data", n_per_class=6, seconds=1.0, seed=2)
    out = tmp_path / "search"
    # A budget no machine runs out of, three trials of four epochs: the trial count is the test's, not the clock's.
    cfg = load_config(None, [f"data.path={data}", f"out={out}", "train.time_budget=10m", "train.epochs=4", *TINY])
    assert search(cfg, max_trials=3) == out
    search_record = json.loads((out / "search.json").read_text())
    trials = search_record["trials"]
    assert len(trials) == 3 and search_record["trial_epochs"] == 4
    # The first trial is the zero-config run itself, so the search can only improve on it (on validation).
    probe = RunDir(out / "trials" / "probe").read_config()
    assert trials[0]["params"]["train.lr"] == probe["train"]["lr"]
    assert trials[0]["params"]["augment.mixup_alpha"] == probe["augment"]["mixup_alpha"]
    finished = [t for t in trials if t["state"] == "complete"]
    best = max(finished, key=lambda t: t["value"])  # accuracy: higher is better
    assert search_record["best_trial"] == best["number"]
    # <out> is the best trial's run: a normal run directory, with the trials listed in its report.
    summary = RunDir(out).read_summary()
    assert summary["metrics"]["val"]["accuracy"] == pytest.approx(best["value"])
    assert (out / "checkpoints" / "best.pt").is_file()
    assert "## Search:" in (out / "report.md").read_text()
    # --resume finds the study in search.db: the finished trials are not run again.
    before = (out / "trials" / "trial_000" / "metrics.jsonl").stat().st_mtime_ns
    search(cfg, resume=True, max_trials=3)
    assert len(json.loads((out / "search.json").read_text())["trials"]) == 3
    assert (out / "trials" / "trial_000" / "metrics.jsonl").stat().st_mtime_ns == before


@pytest.mark.slow
def test_search_spends_the_budget_through_audioclf_run(tmp_path):
    data = make_demo_dataset(tmp_path / "data", n_per_class=10, seconds=1.0, seed=2)
    out = tmp_path / "search"
    started = time.monotonic()
    result = run({}, overrides=[f"data.path={data}", f"out={out}", "train.time_budget=60s", *TINY])
    elapsed = time.monotonic() - started
    assert result.kind == "search" and result.runs == [out]
    assert len(json.loads((out / "search.json").read_text())["trials"]) >= 2
    # Within the budget, give or take the last trial and the copy (a trial is about a fifth of the budget).
    assert elapsed < 60 * 1.5
