"""The one trainer: a config in, a complete run directory out, whatever the inputs are.

Steps: pick the inputs the config describes (:mod:`audioclf.training.inputs`; their defaults filled in, the keys
they cannot honour refused) -> read the data -> build the model (refused before anything is written when
over ``limits``) -> epochs with best/last checkpoints and early stopping (:func:`run_epochs`) -> the best
checkpoint scored on val and test, plots, ``summary.json`` and ``report.md`` (:func:`finalize_run`).

``--resume`` continues a run from ``checkpoints/last.pt``: weights, optimizer, schedule, early stopping and
random state, with the run's saved config under what the caller sets now (e.g. more epochs).

Under ``torchrun`` the same function runs in every process (:mod:`audioclf.training.distributed`): each rank
trains on its share of every batch through ``DistributedDataParallel``; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from .. import metrics as M
from ..calibration import write_decisions
from ..config import Config, LimitsConfig, config_from_dict, explicit_values, merge_dicts
from ..data.manifest import Manifest
from ..errors import ConfigError, DataError, NonFiniteOutputs, TrainingDiverged
from ..models.classifier import AudioClassifier
from ..models.complexity import check_limits, complexity_report
from ..models.freeze import parameter_groups
from ..models.registry import model_loss
from ..runs import RunDir, default_run_dir, load_model, write_report
from ..runs.plots import plot_confusion, plot_curves
from .callbacks import EarlyStopping
from .evaluate import model_probabilities
from .inputs import Inputs, inputs_for
from .averaging import moving_average
from .distributed import (World, all_gather, barrier, broadcast, init_distributed, mean_over_ranks, parallel_step,
                          peers_watched, rank_device, sharded, step_weights, sync_state, uneven_steps,
                          use_sync_batchnorm)
from .decisions import choose_decisions, plot_run_reliability
from .members import add_members, check_ensemble, check_probe, drop_members, resolve_ensemble, resolve_probe
from .loop import build_step, compile_for_training, train_loss_inflation, train_one_epoch
from .losses import check_training_loss
from .noisy import check_noisy, handle_noisy_labels
from .optim import build_optimizer, build_scheduler, check_training_settings
from .resume import check_resume_changes, check_resume_epochs
from .tracking import Trackers, check_tracking
from .wall_time import Deadline, FirstSteps, time_first_steps
from .state import resolve_device, rng_state, seed_everything, set_rng_state, use_amp

log = logging.getLogger(__name__)

__all__ = ["Reporter", "Objective", "train", "run_epochs", "finalize_run", "load_matching_weights",
           "measure_complexity"]

SPLITS = ("train", "val", "test")


class Reporter(Protocol):
    """What the trainer tells a caller while it works (the CLI's rich console implements it)."""

    def bar(self, description: str, total: int) -> Any: ...  # .advance(n), .close()

    def epoch(self, record: dict[str, Any], monitor: str, improved: bool) -> None: ...

    def message(self, text: str) -> None: ...


class Objective(Protocol):
    """Replaces the supervised objective (e.g. knowledge distillation, :mod:`audioclf.compress.distill`)."""

    def setup(self, cfg: Config, inputs: Inputs, train_set: Any, device: torch.device) -> tuple[Any, Any]:
        """-> (training set, task step)."""

    def summary(self, cfg: Config, inputs: Inputs, device: torch.device, amp: bool) -> dict[str, Any]:
        """Entries merged into summary.json."""


def load_matching_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match; the rest (e.g. a head for other classes) stays new."""
    own = model.state_dict()
    loaded, skipped = [], []
    for name, tensor in own.items():
        if name in state and state[name].shape == tensor.shape:
            own[name] = state[name]
            loaded.append(name)
        else:
            skipped.append(name)
    if not loaded:
        raise ConfigError("init_from: no tensor of that run fits this model (different architecture?)")
    model.load_state_dict(own)
    return {"loaded": loaded, "skipped": skipped}


def measure_complexity(model: AudioClassifier, limits: LimitsConfig) -> dict[str, Any]:
    """Parameters and MACs of one inference of the network (front-end excluded, BatchNorm folded), checked
    against ``limits``: an over-limit model is refused before any training."""
    params = list(model.parameters())
    counts = {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
    network = model.backbone
    was_training = network.training
    report = complexity_report(network, tuple(network.audioclf_spec["input_shape"]))
    network.train(was_training)
    check_limits(report, max_params=limits.max_params, max_macs=limits.max_macs)
    return {**counts, "deployed_params": report.params_total, "macs": report.macs_total,
            "bytes_fp32": report.bytes_fp32, "bytes_int8": report.bytes_int8}


def _resumed(cfg: Config, run: RunDir) -> tuple[Config, dict[str, Any] | None, Manifest | None]:
    """The run's saved config with what the caller set now on top, its last checkpoint and its manifest.

    A run stopped before its first epoch ended (config.yaml written, no last.pt) has nothing to continue:
    it starts again from the beginning, with its saved config (checkpoint None)."""
    if not run.checkpoint("last").exists():
        if not run.config.exists():
            raise ConfigError(f"--resume: {run.root} has no checkpoints/last.pt to continue from")
        log.warning("--resume: %s stopped before its first epoch ended; starting it again from the beginning",
                    run.root)
        checkpoint = None
    else:
        checkpoint = run.load_checkpoint("last")
    stored, given = run.read_config(), explicit_values(cfg)
    stored.setdefault("train", {}).setdefault("balance", "none")  # runs from before train.balance had none
    check_resume_changes(stored, given, run.root)  # config.yaml must keep saying what the run trained on
    # A run folder can come from anyone: the cache folder its config.yaml names is written to only when the
    # caller names it again (cross-validation, searches and sweeps do, for their own <out>/.cache).
    cache_dir = (stored.get("data") or {}).get("cache_dir")
    if cache_dir and "cache_dir" not in given.get("data", {}):
        log.warning("--resume: %s names data.cache_dir=%s; not used (a run folder may come from elsewhere): "
                    "add data.cache_dir=%s to use it", run.config, cache_dir, cache_dir)
        stored["data"]["cache_dir"] = None
    cfg = config_from_dict(merge_dicts(stored, given))
    if checkpoint is not None:
        check_resume_epochs(cfg.train.epochs, checkpoint["epoch"], run.root)
    manifest = Manifest.from_csv(run.manifest) if run.manifest.exists() else None
    return cfg, checkpoint, manifest


def train(cfg: Config, resume: bool = False, manifest: Manifest | None = None, reporter: Reporter | None = None,
          objective: Objective | None = None, dry_run: bool = False) -> Path:
    """Train, evaluate on the test split and write the run directory; returns its path.

    ``manifest`` (audio) replaces what ``data.*`` would import (cross-validation folds, distillation's
    teacher split). ``reporter`` (optional) shows progress; notebooks can pass nothing. ``objective``
    (optional) replaces the supervised objective, e.g. knowledge distillation. ``dry_run``: read the data,
    build the model, time a few steps and tell ``reporter`` the plan (header, groups per split, wall-time
    estimate); nothing is trained and nothing written (the path returned does not exist for a new run).
    Most callers want :func:`audioclf.run`, which also runs stages and cross-validation.
    """
    if resume and not cfg.out:
        raise ConfigError("--resume: name the run directory to continue (--out DIR or out=DIR)")
    if objective is not None and cfg.train.frozen_embeddings:
        raise ConfigError("train.frozen_embeddings trains only a head on fixed embeddings; distillation trains "
                          "the whole student: unset one of them")
    check_training_settings(cfg.train)  # optimizer and scheduler names, before any data is read
    check_training_loss(cfg.train.loss)
    check_noisy(cfg.train)
    check_ensemble(cfg.train.ensemble)
    check_probe(cfg.train.probe, cfg.train.probe_download)
    check_tracking(cfg.train.track)
    resolve_device(cfg.train.device)
    current = init_distributed(cfg.train.device)  # a single process unless started by torchrun
    inputs = inputs_for(cfg)  # the input's defaults filled in; a key it cannot honour is refused here
    if cfg.train.noisy != "none" and inputs.kind != "audio":  # before a run folder is claimed
        raise ConfigError(f"train.noisy={cfg.train.noisy}: audio runs only (the inputs are {inputs.kind})")
    cfg = copy.copy(cfg)
    # One folder and one decision for all ranks (a default name has the time in it; files may differ by node).
    cfg.out, resume = broadcast((str(cfg.out or default_run_dir(inputs.cfg.model["name"])), resume), current)
    run = RunDir(cfg.out)
    if dry_run:  # reads only: no folder claimed, nothing locked
        if current.active:
            raise ConfigError("--dry-run plans one process's run; start it without torchrun / --gpus")
        return _train(cfg, run, inputs, resume, manifest, reporter, objective, current, dry_run=True)
    if not current.main:  # ranks > 0 neither write nor show progress
        result = _train(cfg, run, inputs, resume, manifest, None, objective, current)
        barrier(current)  # rank 0 has written the summary: files a caller reads next are there
        return result
    with run.claim(resume).lock():  # a second writer into this folder is refused, not mixed in
        result = _train(cfg, run, inputs, resume, manifest, reporter, objective, current)
    barrier(current)
    return result


def _train(cfg: Config, run: RunDir, inputs: Inputs, resume: bool, manifest: Manifest | None,
           reporter: Reporter | None, objective: Objective | None, current: World, dry_run: bool = False) -> Path:
    started = time.perf_counter()
    checkpoint = None
    if resume:  # rank 0 reads the run; the others get what it read
        cfg, checkpoint, manifest = broadcast(_resumed(cfg, run) if current.main else None, current)
        inputs = inputs_for(cfg)
    else:
        inputs.cfg.out = cfg.out
    deadline = Deadline(cfg.train.max_minutes)  # this invocation's wall-clock cap, data preparation included
    user_cfg = cfg  # as given: what the header reports as set rather than chosen
    cfg = inputs.cfg
    seed_everything(cfg.seed)
    inputs.prepare(manifest, progress=reporter is not None)
    cfg = inputs.cfg  # with the choices made from the data
    if inputs.count("train") == 0:
        raise DataError("the train split is empty (check the split column or data.fractions)")
    if inputs.count("val") == 0:
        raise DataError("the validation split is empty (add val rows or set data.split)")
    # A resumed drop/relabel run's snapshot is already the changed manifest: flagging it again would flag others.
    if checkpoint is not None and cfg.train.noisy in ("drop", "relabel"):
        noisy = checkpoint.get("noisy_labels")
    else:
        noisy = handle_noisy_labels(inputs, cfg.train, cfg.seed)
    task, classes = inputs.task, inputs.classes

    device = rank_device(resolve_device(cfg.train.device), current)
    amp = use_amp(cfg.train.amp, device)
    model = inputs.build_model().to(device)
    complexity = measure_complexity(model, cfg.limits)  # refuses an over-limit model before anything is written
    if cfg.train.sync_batchnorm:
        model = use_sync_batchnorm(model, device, current)
    inputs.complete_config(complexity["macs"])
    cfg = inputs.cfg
    cfg.train.ensemble = resolve_ensemble(cfg, user_cfg, inputs.kind, task)
    cfg.train.probe = resolve_probe(cfg, cfg.train.ensemble)  # a backbone name or none: what config.yaml keeps
    monitor = cfg.train.monitor or inputs.default_monitor()
    optimizer = build_optimizer(
        parameter_groups(model, cfg.train.lr, cfg.train.backbone_lr), name=cfg.train.optimizer, lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum,
    )
    scheduler = build_scheduler(optimizer, name=cfg.train.scheduler, epochs=cfg.train.epochs, monitor=monitor,
                                **cfg.train.scheduler_args)
    stopper = EarlyStopping(monitor, patience=cfg.train.patience, min_delta=cfg.train.min_delta)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" and not bf16 else None
    train_set = inputs.train_set()
    if objective is None:
        step = build_step(cfg, task, len(classes), model_loss(model), inputs.loss_class_weights())
    elif cfg.train.balance == "loss":  # the objective brings its own loss
        raise ConfigError("train.balance=loss weights the supervised loss; this objective has its own (distillation): "
                          "use train.balance=sampler or none")
    else:
        train_set, step = objective.setup(cfg, inputs, train_set, device)

    resolved = merge_dicts(cfg.to_dict(), inputs.resolved(model))
    resolved["train"]["monitor"] = monitor
    resolved["out"] = str(run.root)
    extra_summary: dict[str, Any] = {}
    if checkpoint is None and dry_run:
        inputs.initialize(model, device)  # what the timed steps need; init_from's weights would time the same
    elif checkpoint is None and current.main:
        if cfg.init_from:
            # Two-stage training: start from another run's weights, including its feature standardisation,
            # which those weights were trained with.
            report = load_matching_weights(model, RunDir(cfg.init_from).require().load_checkpoint("best")["model"])
            extra_summary["init_from"] = {"run": str(cfg.init_from), **report}
            log.info("init_from %s: loaded %d tensors, kept %d new", cfg.init_from, len(report["loaded"]),
                     len(report["skipped"]))
        else:
            inputs.initialize(model, device)
        run.reset()  # nothing an earlier run left here can pass for this one's (even if this one is killed)
        run.create()
        run.write_config(resolved)
        inputs.snapshot(run.root)
    elif checkpoint is not None:
        writer = run if current.main and not dry_run else None  # the metrics log is cut back by rank 0 only
        _restore_training_state(checkpoint, writer, model, optimizer, scheduler, stopper)
        if writer is not None:
            run.write_config(resolved)
    sync_state(model, current)  # every rank starts from rank 0's weights and feature statistics
    # Once the starting weights are in place (a refused init_from file says so alone); a dry run's comes with
    # its estimate, after the timed steps.
    if reporter is not None and not dry_run:
        reporter.message(_header(user_cfg, cfg, inputs, model, complexity, device, run, checkpoint, noisy=noisy))
    trackers = Trackers(cfg.train.track, run.root, resolved, resumed=checkpoint is not None, inner=reporter) \
        if cfg.train.track and current.main and not dry_run else None
    reporter = trackers or reporter
    inputs.ready(model, device)
    ema = moving_average(model, cfg.train.ema)
    if ema is not None and checkpoint is not None:
        ema.load_state_dict(checkpoint["ema"])
    evaluated = ema.module if ema is not None else model  # what is validated, kept and deployed

    loader, set_epoch = inputs.train_loader(train_set, device)
    start_epoch = checkpoint["epoch"] + 1 if checkpoint is not None else 1
    if dry_run:
        set_epoch(start_epoch)
        clock = _first_steps(cfg, inputs, start_epoch)
        estimate = time_first_steps(inputs.trained_part(model), loader, step, optimizer, device, clock, amp=amp,
                                    scaler=scaler, grad_clip=cfg.train.grad_clip)
        if reporter is not None:
            reporter.message(_header(user_cfg, cfg, inputs, model, complexity, device, run, checkpoint, estimate,
                                     noisy=noisy))
            reporter.message(_groups_per_split(inputs))
            reporter.message(f"dry run: nothing trained, nothing written (the run would write {run.root})")
        return run.root
    # Files skipped when the data was first read: a resumed run reads the usable ones only, so it carries the list.
    skipped = checkpoint.get("skipped", []) if checkpoint is not None else inputs.skipped()
    extra_summary["skipped"] = skipped
    if inputs.data_check() is not None:
        extra_summary["data_check"] = inputs.data_check()
    # Stamped into every checkpoint, the summary and what is derived from them (exports, quantization), so a
    # reader can tell an artifact of an earlier run in the same folder from this one's.
    run_id = checkpoint.get("run_id", "unknown") if checkpoint is not None else uuid.uuid4().hex[:12]
    extra_summary["run_id"] = run_id
    base_state = {"spec": model.spec(), "task": task, "classes": classes, "config": resolved, "skipped": skipped,
                  "run_id": run_id, **inputs.facts()}
    if noisy is not None:
        extra_summary["noisy_labels"] = base_state["noisy_labels"] = noisy
    if current.active:  # each rank its own dropout / SpecAugment draws (the same ones for the same world size)
        torch.manual_seed(cfg.seed * 1000 + current.rank)
    if checkpoint is not None:
        _restore_rng(checkpoint, current)  # dropout etc. continue exactly where the run stopped
    loss = model_loss(model)

    def validate() -> dict[str, float]:
        sync_state(model, current, buffers_only=True)  # rank 0's BatchNorm statistics, the ones it keeps
        if ema is not None:
            sync_state(ema.module, current, buffers_only=True)
        with sharded(current):
            return inputs.validate(evaluated, device, amp, loss)

    def epoch_record() -> dict[str, Any]:
        """What each metrics.jsonl line adds: the input's entries, and with train.score_train the training split
        scored like validation (after validate(), so with the same synced BatchNorm statistics)."""
        record = inputs.epoch_record()
        if cfg.train.score_train:
            with sharded(current):
                result = inputs.evaluate(model_probabilities(evaluated, inputs.task, device, amp), "train", loss)
            if result is not None:  # a streamed training set is not held: nothing to score
                record.update({f"train_eval/{k}": v for k, v in result.metrics.items() if "/" not in k})
        return record

    trained = inputs.trained_part(model)
    if cfg.train.compile:
        compile_for_training(trained)
    if current.active:
        step = parallel_step(trained, step, device, current)
    fit = EpochFit(run, model, loader, step, optimizer, scheduler, stopper, scaler, device, amp, cfg, monitor,
                   base_state, ema, trained=trained, world=current, deadline=deadline,
                   first_steps=_first_steps(cfg, inputs, start_epoch) if reporter is not None else None)
    try:
        with peers_watched(current):
            run_epochs(fit, start_epoch, set_epoch, inputs.count("train"), validate, reporter, epoch_record)
        if reporter is not None:
            reporter.message(_stop_reason(stopper, cfg, monitor, deadline))
    except TrainingDiverged as diverged:
        if not current.main:
            raise
        if not run.checkpoint("best").exists():
            if trackers:
                trackers.finish({}, failed=True)
            raise
        # The epochs before it are good: score and report the best of them, then say what went wrong.
        finalize_run(run, inputs, monitor, complexity, device, amp, {**extra_summary, "stopped": str(diverged)})
        if trackers:
            trackers.finish(run.read_summary(), failed=True)
        best = run.read_summary().get("best_epoch")
        raise TrainingDiverged(diverged.epoch, diverged.lr, f"{run.root} keeps epoch {best}, the best before it") from None

    if not current.main:
        return run.root
    if objective is not None:
        extra_summary.update(objective.summary(cfg, inputs, device, amp))
    if deadline.stopped is not None:
        extra_summary.update(time_cap=deadline.stopped, stopped=deadline.reason())
    # Data found unusable while training (a damaged shard met while streaming) joins the files skipped up front.
    extra_summary["skipped"] = skipped + [entry for entry in inputs.skipped() if entry not in skipped]
    # Wall time of this invocation's data preparation and training (a resumed run: since it resumed).
    extra_summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    result = finalize_run(run, inputs, monitor, complexity, device, amp, extra_summary, reporter)
    if trackers:
        trackers.finish(run.read_summary())
    return result


def _header(user: Config, cfg: Config, inputs: Inputs, model: AudioClassifier, complexity: dict[str, Any],
            device: torch.device, run: RunDir, checkpoint: dict[str, Any] | None, estimate: str | None = None,
            noisy: dict[str, Any] | None = None) -> str:
    """What this run will do and where each value came from ("set" by the config, or chosen from the data)."""
    train, plain = cfg.train, user.train
    rows = inputs.describe(user)
    rows += [
        ("model", f"{cfg.model['name']} ({'set' if user.model.get('name') else 'default'}): "
                  f"{complexity['total']:,} parameters, {complexity['macs'] / 1e6:.1f} MMACs per clip"),
        ("device", f"{device} ({'set' if plain.device != 'auto' else 'auto'})"),
        ("epochs", f"{train.epochs} ({'set' if plain.epochs is not None else 'chosen from the data size and a compute budget'}), "
                   f"batch {train.batch_size}, {train.optimizer} lr {train.lr:g}, {train.scheduler}, "
                   f"early stopping after {train.patience} epochs without a better val {cfg.train.monitor or inputs.default_monitor()}"),
    ]
    if train.loss == "gce":
        rows.append(("loss", f"generalised cross-entropy, q={train.gce_q:g} (set): for noisy labels"))
    if noisy is not None:
        rows.append(("noisy labels", noisy["message"].removeprefix("noisy labels: ")))
    if inputs.balance_note:
        rows.append(("balance", inputs.balance_note))
    if train.ensemble == "classical":
        rows.append(("ensemble", f"+ a classical member (utterance statistics + SVM), kept alone or mixed only if "
                                 f"validation prefers it ({'set' if plain.ensemble != 'auto' else 'auto'})"))
    if train.ensemble == "classical" and train.probe != "none":
        rows.append(("probe", f"+ a linear probe on {train.probe}'s frozen AudioSet embeddings, weighed with the "
                              f"others on validation ({'set' if plain.probe != 'auto' else 'auto: in the weights cache'})"))
    if checkpoint is not None:
        rows.append(("resume", f"continues after epoch {checkpoint['epoch']} (checkpoints/last.pt); the schedule, "
                               "optimizer and random state go on from there"))
    if estimate is not None:
        rows.append(("estimate", estimate))
    width = max(len(what) for what, _ in rows)
    lines = [f"  {what:<{width}}  {text}" for what, text in rows]
    return "\n".join([f"run {run.root} (every value below is recorded in config.yaml)", *lines])


def _first_steps(cfg: Config, inputs: Inputs, start_epoch: int) -> FirstSteps:
    """The clock of the first steps, for the epochs this invocation trains."""
    return FirstSteps(inputs.count("train"), inputs.count("val"), cfg.train.epochs - start_epoch + 1,
                      resumed=start_epoch > 1, max_minutes=cfg.train.max_minutes)


def _groups_per_split(inputs: Inputs) -> str:
    """``--dry-run``: how many values of each group column (speakers, devices ...) each split holds."""
    rows = [f"  {name}: " + " / ".join(f"{split} {n}" for split, n in counts.items())
            for name, counts in inputs.groups_per_split().items()]
    return "\n".join(["groups per split (distinct values)", *rows]) if rows else "groups per split: no group columns"


def _stop_reason(stopper: EarlyStopping, cfg: Config, monitor: str, deadline: Deadline) -> str:
    """Why training ended, and where the best epoch was (the stopper counts epochs from 1, resumes included)."""
    best = "no epoch" if stopper.best is None else f"best epoch {stopper.best_epoch} (val {monitor} {stopper.best:.4f})"
    if deadline.stopped is not None:
        return f"{deadline.reason()}; {best}"
    if stopper.should_stop:
        return (f"stopped early at epoch {stopper.epochs} of {cfg.train.epochs}: val {monitor} did not improve for "
                f"{cfg.train.patience} epochs; {best}")
    return f"trained all {cfg.train.epochs} epochs; {best}"


def _restore_training_state(checkpoint: dict[str, Any], run: RunDir | None, model, optimizer, scheduler,
                            stopper) -> None:
    """``--resume``: weights, optimizer, schedule and early-stopping state of the last finished epoch; the
    metrics log (``run``: rank 0's) is cut back to that epoch."""
    model.load_state_dict(checkpoint.get("train_model", checkpoint["model"]))  # raw weights, when averaged
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    stopper.load_state_dict(checkpoint["early_stopping"])
    if run is not None:
        run.truncate_metrics(checkpoint["epoch"])


def _restore_rng(checkpoint: dict[str, Any], current: World) -> None:
    """Each rank's random state as the checkpoint kept it. Resumed on another number of processes, the ranks
    keep the fresh states they were seeded with (the data order and crops do not depend on them)."""
    states = checkpoint.get("rng_ranks")
    if states is not None and len(states) == current.size:
        set_rng_state(states[current.rank])
    elif not current.active:
        set_rng_state(checkpoint["rng"])
    else:
        log.warning("--resume on %d processes, the run was saved by %s: dropout and augmentation draws start "
                    "afresh", current.size, len(states) if states else 1)


@dataclass
class EpochFit:
    """Everything one epoch of training touches."""

    run: RunDir
    model: torch.nn.Module
    loader: Any
    step: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stopper: EarlyStopping
    scaler: Any
    device: torch.device
    amp: bool
    cfg: Config
    monitor: str
    base_state: dict[str, Any]
    ema: Any = None  # the weights' moving average (training.averaging), or None
    trained: torch.nn.Module | None = None  # what a step runs on a batch (default: model; frozen embeddings: its head)
    world: World = World()  # the processes training together (torchrun), or this one alone
    deadline: Deadline | None = None  # train.max_minutes
    first_steps: FirstSteps | None = None  # times the first epoch's first steps for the wall-time estimate


def run_epochs(fit: EpochFit, start_epoch: int, set_epoch, n_items: int, validate, reporter=None,
               extra_record=None) -> None:
    """Epochs ``start_epoch..cfg.train.epochs``: train, validate, log, keep best/last, stop early or on
    ``fit.deadline`` (after at least one batch; the epoch it cuts short is validated and kept).

    ``set_epoch(epoch)`` reseeds the data order, ``validate()`` returns the validation metrics,
    ``extra_record()`` (optional) adds entries to each metrics.jsonl line.
    """
    cfg, monitor, current = fit.cfg, fit.monitor, fit.world
    weight = step_weights(fit.loader, current)
    deadline = fit.deadline or Deadline(None)
    cut = [False]  # whether the cap ended the epoch being trained

    def stop() -> bool:
        cut[0] = deadline.passed()
        return cut[0]

    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if fit.stopper.should_stop:
            break
        if epoch > start_epoch and broadcast(deadline.passed(), current):
            deadline.stop(epoch - 1, None, n_items)
            break
        set_epoch(epoch)
        started = time.perf_counter()
        bar = reporter.bar(f"epoch {epoch}/{cfg.train.epochs}", n_items) if reporter else None
        average = (lambda: fit.ema.update_parameters(fit.model)) if fit.ema is not None else None
        seen = [0]  # this rank's items, to weigh its mean values among the ranks'
        clock = fit.first_steps if epoch == start_epoch else None

        def progress(n: int) -> None:
            seen[0] += n
            if bar:
                bar.advance(n * current.size)  # the bar counts all ranks' items: about this share times the ranks
            estimate = clock.batch_done(n * current.size) if clock is not None else None
            if estimate is not None and reporter is not None and current.main:
                reporter.message(_estimate_row(estimate))

        with uneven_steps(fit.step, fit.loader, current):
            train_values = train_one_epoch(fit.trained or fit.model, fit.loader, fit.step, fit.optimizer, fit.device,
                                           amp=fit.amp, scaler=fit.scaler, grad_clip=cfg.train.grad_clip,
                                           progress=progress, after_step=average, weight=weight,
                                           # under torchrun every rank must take the same steps: there rank 0's
                                           # clock decides between epochs only
                                           stop=stop if not current.active else None)
        train_values = mean_over_ranks(train_values, seen[0], current)
        if cut[0]:  # the cap's check after the epoch's last batch did not cut it short
            deadline.stop(epoch, seen[0] if seen[0] * current.size < n_items else None, n_items)
        if bar:
            bar.close()
        if not _finite(train_values.get("loss", 0.0), fit.model):
            # Nothing of this epoch is kept: last.pt stays at the last good epoch.
            raise TrainingDiverged(epoch, cfg.train.lr)
        try:
            val_values = validate()
        except NonFiniteOutputs:  # finite weights whose outputs overflow: diverged all the same
            raise TrainingDiverged(epoch, cfg.train.lr) from None
        if monitor not in val_values:
            available = ", ".join(sorted(k for k in val_values if "/" not in k))
            raise ConfigError(f"train.monitor={monitor}: not a validation metric; available: {available}")
        improved = fit.stopper.update(val_values[monitor])
        lr = fit.optimizer.param_groups[0]["lr"]
        fit.scheduler.step(val_values[monitor])
        record = {"epoch": epoch, "lr": lr, "seconds": round(time.perf_counter() - started, 3),
                  **{f"train/{k}": v for k, v in train_values.items()},
                  **{f"val/{k}": v for k, v in val_values.items()}, **(extra_record() if extra_record else {})}
        rng_ranks = all_gather(rng_state(), current) if current.active else None
        if not current.main:
            continue
        fit.run.append_metrics(record)
        evaluated = fit.ema.module if fit.ema is not None else fit.model
        state = {**fit.base_state, "epoch": epoch, "model": evaluated.state_dict(), "val": val_values}
        if improved or cfg.train.keep == "last":  # keep=last: the kept ("best") checkpoint follows every epoch
            fit.run.save_checkpoint("best", state)
        resume_state = {"optimizer": fit.optimizer.state_dict(), "rng": rng_state(),
                        "scheduler": fit.scheduler.state_dict(), "early_stopping": fit.stopper.state_dict()}
        if rng_ranks is not None:
            resume_state["rng_ranks"] = rng_ranks
        if fit.ema is not None:  # the raw weights keep training; the average restarts from its own state
            resume_state.update(train_model=fit.model.state_dict(), ema=fit.ema.state_dict())
        fit.run.save_checkpoint("last", {**state, **resume_state})
        if reporter:
            reporter.epoch(record, monitor, improved)
            estimate = clock.epoch_done(record["seconds"]) if clock is not None and not cut[0] else None
            if estimate is not None:  # an epoch of too few batches to estimate from: its own time
                reporter.message(_estimate_row(estimate))
        if deadline.stopped is not None:
            break


def _estimate_row(estimate: str) -> str:
    """The estimate as the header would show it (it comes once the first steps are timed)."""
    return f"  estimate  {estimate}"


def _finite(loss: float, model: torch.nn.Module) -> bool:
    """Whether the epoch's mean loss and every weight and statistic (BatchNorm's running ones) are finite."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return math.isfinite(loss) and all(bool(torch.isfinite(t).all()) for t in tensors)


def finalize_run(run: RunDir, inputs: Inputs, monitor: str, complexity: dict[str, Any], device: torch.device,
                 amp: bool, extra_summary: dict[str, Any] | None = None, reporter: Reporter | None = None) -> Path:
    """Score the best checkpoint on val and test (with the ensemble's members, when the run has them: the chosen
    predictor's scores); write plots, summary.json and report.md."""
    model, best = load_model(run.root, "best", device)
    task, classes = best["task"], best["classes"]
    probs_fn = model_probabilities(model, task, device, amp)
    metrics: dict[str, dict[str, float]] = {}
    per_class: dict[str, dict[str, float]] = {}
    confusion: dict[str, list[list[int]]] = {}
    results = {split: inputs.evaluate(probs_fn, split, model_loss(model)) for split in SPLITS}
    results = {split: result for split, result in results.items() if result is not None}
    members = None
    if inputs.cfg.train.ensemble == "classical":
        results, members = add_members(run, inputs, results, monitor, model_loss(model), inputs.cfg.seed,
                                       reporter.message if reporter is not None else None, inputs.cfg.train.probe)
    else:  # a resumed run whose ensemble was turned off (none): no earlier member may still mix into predictions
        drop_members(run.root)
    uncalibrated = results
    results, decisions = choose_decisions(task, classes, results, inputs.cfg.train.calibrate,
                                          inputs.cfg.train.threshold, model_loss(model))
    write_decisions(run.root, decisions, classes)
    plot_run_reliability(task, uncalibrated, results, decisions, run.plots)
    for split, result in results.items():
        metrics[split] = result.metrics  # train: the same clips as training, without augmentation (overfitting)
        if split == "train":
            continue
        per_class[split] = M.per_class_metrics(task, result.targets, result.probs, classes, decisions.thresholds)
        if task == "single_label":
            matrix = M.confusion_matrix(result.targets, result.probs.argmax(1), len(classes))
            plot_confusion(matrix, classes, run.plots / f"confusion_{split}.png", f"Confusion matrix ({split})")
            confusion[split] = matrix.tolist()
    plot_curves(run.read_metrics(), run.plots, monitor, best_epoch=best["epoch"], planned_epochs=inputs.cfg.train.epochs,
                train_inflated_by=train_loss_inflation(inputs.cfg))
    split_groups = inputs.split_groups()  # the speakers (devices ...) each split holds, when kept apart
    summary = {
        "task": task,
        "classes": classes,
        "metrics": metrics,
        "confusion": confusion,
        "monitor": monitor,
        "best_epoch": best["epoch"],  # the kept epoch: with train.keep=last, the last one
        "kept": inputs.cfg.train.keep,
        "planned_epochs": inputs.cfg.train.epochs,
        "skipped": inputs.skipped(),
        "counts": {split: inputs.count(split) for split in SPLITS},
        "model": {"name": best["spec"]["backbone"]["name"], "parameters": complexity},
        "per_class": per_class,
        **({"split_groups": split_groups} if split_groups else {}),
        **({"members": members} if members else {}),
        "decisions": decisions.to_dict(classes),
        **inputs.facts(),
        **(extra_summary or {}),
    }
    run.write_summary(summary)
    write_report(run.root)
    return run.root
