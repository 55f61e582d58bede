"""``audioclf sweep`` and ``audioclf compare``: trials as run directories in an Optuna study, resumed after a
kill without rerunning finished trials, shared by parallel workers without running a trial twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import optuna
import pytest
import torch

from audioclf.cli import main
from audioclf.data.synth.demo import make_demo_dataset
from audioclf.errors import ConfigError
from audioclf.files import CRASH_ENV
from audioclf.runs import RunDir
from audioclf.workflows.sweep import load_sweep, sweep

TINY = ["data.clip_seconds=1.0", "features.n_mels=32", "features.n_fft=512", "features.hop_length=320",
        "train.epochs=2", "train.num_workers=0"]
GRID = ["--grid", "train.batch_size=8,16", "--grid", "train.lr=0.001,0.003"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("sweep") / "data", n_per_class=3, seconds=1.0, seed=4)


def trials_of(root) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="audioclf-sweep", storage=f"sqlite:///{root / 'sweep.db'}").trials


def complete(root) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials_of(root) if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_grid_sweep_runs_every_combination_once_and_compares_them(data, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", *GRID, "--out", str(out), f"data.path={data}", *TINY]) == 0
    done = complete(out)
    assert sorted((t.params["train.batch_size"], t.params["train.lr"]) for t in done) == [
        (8, 0.001), (8, 0.003), (16, 0.001), (16, 0.003)]
    for trial in done:  # each trial an ordinary run with its values, judged on validation
        run = RunDir(trial.user_attrs["run_dir"])
        assert run.read_config()["train"]["batch_size"] == trial.params["train.batch_size"]
        assert trial.value == run.read_summary()["metrics"]["val"]["accuracy"]
    record = json.loads((out / "sweep.json").read_text())
    assert record["metric"] == "accuracy" and len(record["trials"]) == 4 and record["best_trial"] is not None
    table = (out / "comparison.md").read_text()
    assert "| train.batch_size | train.lr |" in table and table.count("| sweep/trial_") == 4
    assert "### train.batch_size" in table and "### train.lr" in table  # the effect of each swept key
    for picture in ("curves.png", "effects.png"):
        assert (out / picture).stat().st_size > 10_000
    rows = (out / "comparison.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("run,train.batch_size,train.lr,val accuracy,test accuracy")
    printed = capsys.readouterr().out
    assert f"wrote {out / 'comparison.md'}" in printed


@pytest.mark.slow  # worker processes
def test_a_killed_sweep_resumes_without_rerunning_finished_trials(data, tmp_path):
    out = tmp_path / "sweep"
    env = {**os.environ, CRASH_ENV: "write:summary.json@2", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run([sys.executable, "-m", "audioclf", "sweep", *GRID, "--out", str(out),
                             f"data.path={data}", *TINY], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # Killed after the second trial's summary, before Optuna heard of it: one finished, one left RUNNING.
    states = sorted(t.state.name for t in trials_of(out))
    assert states == ["COMPLETE", "RUNNING", "WAITING", "WAITING"]
    first = next(t for t in trials_of(out) if t.state.name == "COMPLETE")
    first_run = RunDir(first.user_attrs["run_dir"])
    first_id, first_log = first_run.run_id(), first_run.metrics.read_text()
    interrupted = next(t for t in trials_of(out) if t.state.name == "RUNNING")
    interrupted_id = RunDir(interrupted.user_attrs["run_dir"]).run_id()

    assert main(["sweep", "--out", str(out), "--resume"]) == 0
    done = complete(out)
    assert len(done) == 4 and len({tuple(sorted(t.params.items())) for t in done}) == 4
    assert first_run.run_id() == first_id and first_run.metrics.read_text() == first_log  # not rerun
    retried = next(t for t in done if t.user_attrs.get("retry_of") == interrupted.number)
    assert retried.user_attrs["run_dir"] == interrupted.user_attrs["run_dir"]  # continued in its own folder
    assert RunDir(retried.user_attrs["run_dir"]).run_id() == interrupted_id
    assert [t.state.name for t in trials_of(out)].count("FAIL") == 1  # the dead attempt, kept as a record


@pytest.mark.slow  # worker processes
def test_two_workers_never_run_the_same_trial(data, tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", *GRID, "--jobs", "2", "--out", str(out), f"data.path={data}", *TINY]) == 0
    done = complete(out)
    assert len(trials_of(out)) == len(done) == 4  # no extra or duplicated trial
    assert len({t.user_attrs["run_dir"] for t in done}) == 4
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4
    assert len({t.user_attrs["worker"]["pid"] for t in done}) == 2  # both workers took trials
    for trial in done:
        assert [r["epoch"] for r in RunDir(trial.user_attrs["run_dir"]).read_metrics()] == [1, 2]
    assert sorted(p.name for p in (out / "workers").iterdir()) == ["worker_0.log", "worker_1.log"]


def test_random_trials_are_drawn_up_front_from_the_seed():
    from audioclf.workflows.sweep import SweepSpec, _planned

    spec = SweepSpec(base={"data": {"path": "x"}}, sampler="random", trials=5,
                     params={"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "train.batch_size": [16, 32]})
    first, second = _planned(spec), _planned(spec)
    assert first == second and len(first) == 5 and all(1e-4 <= p["train.lr"] <= 1e-2 for p in first)


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.nope=1,2"], "unknown config key 'train.nope'"),
    (["--grid", "train.batch_size"], "expected key=v1,v2"),
    (["--grid", "train.batch_size=abc,16"], "train.batch_size"),
    ([], "a sweep needs parameters"),
    (["--grid", "train.lr=0.1,0.2", "--sampler", "random"], "needs a number of trials"),
    (["--grid", "distill.T=2,3"], "need --teacher"),
    (["nosuch_protocol", "--grid", "train.lr=0.1,0.2"], "no sweep file, bundled protocol or recipe named"),
])
def test_bad_sweeps_are_one_line_before_any_trial(tmp_path, capsys, args, message):
    out = tmp_path / "sweep"
    code = main(["sweep", *args, "--out", str(out), "data.path=x"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_range_cannot_be_a_grid_axis():
    with pytest.raises(ConfigError, match="a grid needs a list of values"):
        from audioclf.workflows.sweep import SweepSpec, _grid

        _grid(SweepSpec(base={}, params={"train.lr": {"low": 0.1, "high": 0.2}}))


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_compare_puts_runs_side_by_side_and_ranks_on_validation(data, tmp_path, capsys):
    runs = []
    for seed in (1, 2):
        out = tmp_path / f"run{seed}"
        assert main(["train", "--data", str(data), "--out", str(out), *TINY, f"seed={seed}"]) == 0
        runs.append(out)
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp"), "--metrics", "log_loss,accuracy"]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| run | seed | val log_loss | test log_loss | val accuracy | test accuracy |" in table
    losses = [RunDir(r).read_summary()["metrics"]["val"]["log_loss"] for r in runs]
    best = runs[losses.index(min(losses))].name  # log loss: lower is better
    assert f"- best: **{best}**" in table
    assert "## Effect of each swept key" not in table and not (tmp_path / "cmp" / "effects.png").exists()
    assert capsys.readouterr().out.startswith("# Comparison")
    assert main(["compare", str(tmp_path / "nothing")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    # Its own folder is written again; a folder of the user's with a comparison.md of theirs is not touched.
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "cmp"), "--metrics", "log_loss"]) == 0
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "comparison.md").write_text("my own notes")
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"--out={mine} holds files audioclf did not write" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in mine.iterdir()] == ["comparison.md"] and (mine / "comparison.md").read_text() == "my own notes"


@pytest.mark.slow  # worker processes
def test_a_worker_on_another_machine_joins_through_the_shared_storage(data, tmp_path):
    first, second = tmp_path / "machine_a", tmp_path / "machine_b"
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, CRASH_ENV: "write:summary.json@1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    started = subprocess.run([sys.executable, "-m", "audioclf", "sweep", *GRID, "--storage", url, "--out",
                              str(first), f"data.path={data}", *TINY], env=env, capture_output=True, text=True,
                             timeout=300)
    assert started.returncode == -signal.SIGKILL, started.stderr[-2000:]
    # The second machine has only the storage URL: the sweep's spec comes from the study itself.
    assert main(["sweep", "--join", "--storage", url, "--out", str(second)]) == 0
    study = optuna.load_study(study_name="audioclf-sweep", storage=url)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "RUNNING"]  # machine A's trial is A's to resume
    assert sorted(p.name for p in (second / "trials").iterdir()) == ["trial_001", "trial_002", "trial_003"]
    assert (second / "sweep.yaml").exists() and json.loads((second / "sweep.json").read_text())["trials"]


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_a_trial_that_cannot_run_is_recorded_and_the_sweep_goes_on(data, tmp_path):
    out = tmp_path / "sweep"
    # small_cnn with 1000 channels is over the parameter limit: refused before training, the other trial runs.
    assert main(["sweep", "--grid", "model.channels=[8,16],[1000,1000]", "--out", str(out), f"data.path={data}",
                 *TINY, "limits.max_params=50000"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    states = sorted((t["state"], "error" in t) for t in record["trials"])
    assert states == [("complete", False), ("fail", True)]
    failed = next(t for t in record["trials"] if t["state"] == "fail")
    assert "max_params" in failed["error"] or "parameters" in failed["error"]
    assert f"trial {failed['number']} failed" in (out / "comparison.md").read_text()


@pytest.mark.parametrize("damage", ["torn sweep.json", "summary not json", "trials not a list"])
def test_compare_on_damaged_files_is_one_line(data, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY]) == 0
    target = run
    if damage == "torn sweep.json":
        target = tmp_path / "sweep"
        target.mkdir()
        (target / "sweep.json").write_text('{"trials": [')
    elif damage == "summary not json":
        (run / "summary.json").write_text("not json")
    else:
        target = tmp_path / "sweep"
        target.mkdir()
        (target / "sweep.json").write_text('{"trials": 3}')
    capsys.readouterr()
    code = main(["compare", str(target), "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_sweep_key_can_set_one_stage_of_a_staged_recipe():
    from pathlib import Path

    from audioclf.workflows.sweep import SweepSpec, _check_trials, trial_config

    spec = load_sweep("fsd2019", grids=["stages.curated.train.lr=0.001,0.0001"], overrides=["data.path=x"])
    cfg, _ = trial_config(spec, {"stages.curated.train.lr": 0.0001}, Path("/s/trials/trial_000"))
    stages = {stage["name"]: stage for stage in cfg["stages"]}
    assert stages["curated"]["train"]["lr"] == 0.0001 and stages["noisy"]["train"]["lr"] == 0.001  # its own rate
    assert spec.base["stages"][1].get("train", {}).get("lr") is None  # the spec itself is untouched
    bad = SweepSpec(base=spec.base, params={"stages.nope.train.lr": [0.1]})
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        _check_trials(bad, [{"stages.nope.train.lr": 0.1}])


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_tpe_with_pruning_stops_trials_that_fall_behind(data, tmp_path, monkeypatch):
    # Which trials the median pruner stops depends on the curves; here it stops every trial after the second,
    # at its first report, so what the sweep does with a pruned trial is what is tested.
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: trial.number >= 2)
    sweep_file = tmp_path / "tpe.yaml"
    sweep_file.write_text("base: demo\nsweep:\n  sampler: tpe\n  trials: 4\n  metric: accuracy\n  prune: true\n"
                          "  params:\n    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                          "    train.batch_size: [8, 16]\n")
    out = tmp_path / "sweep"
    assert main(["sweep", str(sweep_file), "--out", str(out), f"data.path={data}", *TINY, "train.epochs=3"]) == 0
    record = json.loads((out / "sweep.json").read_text())
    states = [t["state"] for t in record["trials"]]
    assert states == ["complete", "complete", "pruned", "pruned"]
    for trial in record["trials"]:  # a pruned trial stopped before its planned epochs
        epochs = [r["epoch"] for r in RunDir(trial["run_dir"]).read_metrics()]
        assert (epochs == [1, 2, 3]) == (trial["state"] == "complete")


def _take_all(url: str, out) -> None:
    from audioclf.workflows import sweep as sweep_module

    study = optuna.load_study(study_name=sweep_module.STUDY_NAME, storage=url)
    taken = []
    while (trial := sweep_module._pop_queued(study, url)) is not None:
        taken.append(trial.number)
    out.put(taken)


@pytest.mark.slow  # an end-to-end run of several seconds: make test-slow (CI runs it)
def test_workers_racing_for_queued_trials_on_sqlite_take_each_once(tmp_path):
    """Python's sqlite3 reads a trial's state outside a transaction: without the claim lock 4 processes took 72-77
    trials of 60 here (the CI failure: two workers both ran trial 0)."""
    import multiprocessing

    from audioclf.workflows import sweep as sweep_module

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    study = optuna.create_study(study_name=sweep_module.STUDY_NAME, storage=url)
    for i in range(60):
        study.enqueue_trial({"x": i})
    context = multiprocessing.get_context("fork")  # the children open their own connections
    out = context.Queue()
    workers = [context.Process(target=_take_all, args=(url, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    taken = [number for _ in workers for number in out.get(timeout=120)]
    for worker in workers:
        worker.join()
    assert sorted(taken) == list(range(60))
