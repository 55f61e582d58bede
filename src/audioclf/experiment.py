"""Train and evaluate from a :class:`~audioclf.config.Config`: the library function behind ``audioclf train``.

Steps: read the manifest -> decode every file once (bad files reported and skipped) -> splits -> infer
what the config leaves open (sample rate, clip length, task, classes) -> front-end + model -> epochs with
best/last checkpoints and early stopping -> test evaluation, plots and ``summary.json``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics as M
from .config import Config, config_from_dict
from .data.manifest import Manifest
from .data.prepare import EpochShuffle, PreparedData, default_features, make_dataset, make_loader, prepare_data
from .errors import ConfigError, DataError
from .features import FeatureConfig
from .models.classifier import AudioClassifier
from .models.freeze import parameter_groups
from .models.registry import create_model, model_input_kind
from .report import write_report
from .runs import RunDir, plot_confusion, plot_curves
from .train.callbacks import EarlyStopping
from .train.loop import augmented_step, evaluation_loss, predict_loader, predict_windows, supervised_step, train_one_epoch
from .train.losses import build_loss
from .train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# --- reproducibility and devices ----------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (CPU runs with the same seed give the same metrics)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine (use cpu or auto)")
    return device


# --- training objective -------------------------------------------------------------------------
def build_step(cfg: Config, task: str, n_classes: int):
    """The training step: plain supervised, or with on-device SpecAugment / MixUp from ``cfg.augment``."""
    loss = build_loss(task, label_smoothing=cfg.train.label_smoothing)
    aug = cfg.augment
    if aug.spec is None and not aug.mixup_alpha:
        return supervised_step(loss)
    from .augment.spectrogram import build_spec_augment

    return augmented_step(loss, task, n_classes, build_spec_augment(aug.spec), aug.mixup_alpha, aug.mixup_on)


def check_augment_config(cfg: Config) -> None:
    """Fail before any decoding when a data or augmentation setting is wrong."""
    crops = ("random", "center", "start", "max_energy")
    if cfg.data.train_crop not in crops:
        raise ConfigError(f"data.train_crop={cfg.data.train_crop!r}: expected one of {', '.join(crops)}")
    if cfg.data.eval_crop not in (*crops, "windows"):
        raise ConfigError(f"data.eval_crop={cfg.data.eval_crop!r}: expected windows or one of {', '.join(crops)}")
    aug = cfg.augment
    if aug.mixup_on not in ("features", "waveform"):
        raise ConfigError(f"augment.mixup_on={aug.mixup_on!r}: expected features or waveform")
    if aug.mixup_alpha < 0:
        raise ConfigError(f"augment.mixup_alpha={aug.mixup_alpha}: expected >= 0 (0 = off)")
    if aug.waveform:
        from .augment.waveform import build_waveform_augment

        build_waveform_augment(aug.waveform)
    if aug.spec is not None:
        from .augment.spectrogram import build_spec_augment

        build_spec_augment(aug.spec)


# --- model --------------------------------------------------------------------------------------
def build_classifier(cfg: Config, n_classes: int, sample_rate: int, n_samples: int) -> AudioClassifier:
    model_args = dict(cfg.model)
    name = model_args.pop("name", None) or "small_cnn"
    kind = model_input_kind(name)
    if kind == "waveform":
        backbone = create_model(name, n_classes=n_classes, input_shape=(n_samples,), **model_args)
        return AudioClassifier(backbone, None)
    if kind != "features":
        raise ConfigError(f"model.name={name} takes '{kind}' input; audio training needs a features or waveform model")
    feature_cfg = FeatureConfig.from_dict({**default_features(sample_rate), **cfg.features, "sample_rate": sample_rate})
    from .features import FrontEnd

    input_shape = tuple(FrontEnd(feature_cfg).output_shape(n_samples))
    backbone = create_model(name, n_classes=n_classes, input_shape=input_shape, **model_args)
    return AudioClassifier(backbone, feature_cfg)


@torch.no_grad()
def fit_standardizer(model: AudioClassifier, dataset, device: torch.device, max_items: int = 2000) -> None:
    """Per-band mean/std of the training features (centre crops, up to ``max_items`` clips)."""
    if model.frontend is None:
        return
    n = min(len(dataset), max_items)
    total = total_sq = None
    count = 0
    for start in range(0, n, 64):
        wave = torch.stack([dataset[i][0] for i in range(start, min(n, start + 64))]).to(device)
        feats = model.frontend(wave).double()  # (B, 1, F, T)
        s, sq = feats.sum(dim=(0, 1, 3)), (feats**2).sum(dim=(0, 1, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += feats.shape[0] * feats.shape[1] * feats.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-3)
    model.standardize.mean.copy_(mean.float().view_as(model.standardize.mean))
    model.standardize.std.copy_(std.float().view_as(model.standardize.std))


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


def measure_complexity(network: torch.nn.Module, cfg: Config) -> dict[str, Any]:
    """Parameters and MACs of one inference (front-end excluded, BatchNorm folded), checked against
    ``cfg.limits``: an over-limit model is refused before any training. ``network``: an AudioClassifier
    (its backbone is measured) or a registered model."""
    from .compress.complexity import check_limits, complexity_report

    params = list(network.parameters())
    counts = {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
    measured = network.backbone if isinstance(network, AudioClassifier) else network
    was_training = measured.training
    report = complexity_report(measured, tuple(measured.audioclf_spec["input_shape"]))
    measured.train(was_training)
    check_limits(report, max_params=cfg.limits.max_params, max_macs=cfg.limits.max_macs)
    return {**counts, "deployed_params": report.params_total, "macs": report.macs_total,
            "bytes_fp32": report.bytes_fp32, "bytes_int8": report.bytes_int8}


# --- evaluation ---------------------------------------------------------------------------------
def evaluate_split(model, dataset, subset: Manifest, task: str, classes: list[str], device, batch_size: int, amp: bool):
    """Metrics (incl. loss and per-group results) and raw outputs for one split."""
    if getattr(dataset, "crop", None) == "windows":  # whole files: every window, probabilities averaged
        probs, targets = predict_windows(model, dataset, task, device, amp, max_windows=max(batch_size, 64))
    else:
        probs, targets = predict_loader(model, make_loader(dataset, batch_size, 0), task, device, amp)
    if len(probs) == 0:
        return {}, probs, targets
    groups = {name: subset.group_values(name) for name in subset.group_names} or None
    values = M.compute_metrics(task, targets, probs, groups=groups, class_names=classes)
    values["loss"] = evaluation_loss(task, probs, targets)
    return values, probs, targets


# --- the run ------------------------------------------------------------------------------------
def is_embedding_config(cfg: Config) -> bool:
    """Precomputed embeddings (AudioSet HDF5/TFRecord) instead of audio."""
    if cfg.data.format == "audioset":
        return True
    name = cfg.model.get("name")
    if name and model_input_kind(name) == "embeddings":
        return True
    if cfg.data.path and cfg.data.format == "auto":
        from .embeddings_run import is_embedding_data

        return is_embedding_data(cfg.data.path)
    return False


def default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.model.get('name', 'model')}"


def train(
    cfg: Config,
    resume: bool = False,
    manifest: Manifest | None = None,
    reporter: Any = None,
    objective: Any = None,
) -> Path:
    """Train, evaluate on the test split and write the run directory; returns its path.

    ``reporter`` (optional) receives progress: ``reporter.epoch(record)`` and ``reporter.bar(...)``;
    the CLI passes a rich console reporter, notebooks can pass nothing.
    ``objective`` (optional) replaces the supervised objective, e.g. knowledge distillation: it has
    ``setup(cfg, prepared, train_set, task, classes, device) -> (train_set, step)`` and
    ``summary(cfg, prepared, task, classes, device, amp) -> dict`` (merged into summary.json).
    """
    if objective is None and is_embedding_config(cfg):
        from .embeddings_run import train_embeddings  # AudioSet embeddings (MISSION S5): no audio pipeline

        return train_embeddings(cfg, resume=resume, reporter=reporter)
    run = RunDir(cfg.out or default_run_dir(cfg))
    start_epoch, checkpoint = 1, None
    if resume:
        if not run.checkpoint("last").exists():
            raise ConfigError(f"--resume: {run.root} has no checkpoints/last.pt to continue from")
        checkpoint = run.load_checkpoint("last")
        # The run's own config, with what the user changed now (e.g. more epochs) on top.
        saved = run.read_config()
        cfg = config_from_dict(_merge(saved, _explicit(cfg)))
        manifest = Manifest.from_csv(run.manifest)
        start_epoch = checkpoint["epoch"] + 1
    seed_everything(cfg.seed)
    check_augment_config(cfg)
    prepared = prepare_data(cfg, manifest, progress=reporter is not None)
    task, classes = prepared.manifest.task, list(prepared.manifest.classes)
    if checkpoint is not None:
        task, classes = checkpoint["task"], checkpoint["classes"]
    train_set = prepared.split("train")
    if len(train_set) == 0:
        raise DataError("the train split is empty (check the split column or data.fractions)")
    if len(prepared.split("val")) == 0:
        raise DataError("the validation split is empty (add val rows or set data.split)")

    device = resolve_device(cfg.train.device)
    amp = cfg.train.amp if cfg.train.amp is not None else device.type == "cuda"
    model = build_classifier(cfg, len(classes), prepared.sample_rate, prepared.n_samples).to(device)
    complexity = measure_complexity(model, cfg)  # refuses an over-limit model before anything is written
    datasets = {s: make_dataset(prepared, s, classes, task, cfg, train=(s == "train")) for s in SPLITS}
    eval_train = make_dataset(prepared, "train", classes, task, cfg, train=False)
    monitor = cfg.train.monitor or M.primary_metric(task)

    optimizer = build_optimizer(
        parameter_groups(model, cfg.train.lr, cfg.train.backbone_lr), name=cfg.train.optimizer, lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum,
    )
    scheduler = build_scheduler(optimizer, name=cfg.train.scheduler, epochs=cfg.train.epochs, monitor=monitor,
                                **cfg.train.scheduler_args)
    stopper = EarlyStopping(monitor, patience=cfg.train.patience, min_delta=cfg.train.min_delta)
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" and not torch.cuda.is_bf16_supported() else None
    train_set = datasets["train"]
    if objective is None:
        step = build_step(cfg, task, len(classes))
    else:
        train_set, step = objective.setup(cfg, prepared, train_set, task, classes, device)

    resolved = cfg.to_dict()
    resolved["data"]["sample_rate"] = prepared.sample_rate
    resolved["data"]["clip_seconds"] = prepared.clip_seconds
    resolved["features"] = model.feature_config.to_dict() if model.feature_config else {}
    resolved["train"]["monitor"] = monitor
    resolved["out"] = str(run.root)

    extra_summary: dict[str, Any] = {}
    if checkpoint is None:
        if cfg.init_from:
            # Two-stage training (MISSION S1 §6.4): start from another run's weights, including its
            # feature standardisation, which those weights were trained with.
            report = load_matching_weights(model, RunDir(cfg.init_from).require().load_checkpoint("best")["model"])
            extra_summary["init_from"] = {"run": str(cfg.init_from), **report}
            log.info("init_from %s: loaded %d tensors, kept %d new", cfg.init_from, len(report["loaded"]), len(report["skipped"]))
        else:
            fit_standardizer(model, eval_train, device)
        run.create()
        run.write_config(resolved)
        prepared.manifest.to_csv(run.manifest)
        if run.metrics.exists():
            run.metrics.unlink()  # a fresh run in an existing directory starts a fresh log
    else:
        restore_training_state(checkpoint, run, model, optimizer, scheduler, stopper)
        run.write_config(resolved)

    sampler = EpochShuffle(len(train_set), cfg.seed)
    train_loader = make_loader(train_set, cfg.train.batch_size, cfg.train.num_workers, sampler, device)
    base_state = {"spec": model.spec(), "task": task, "classes": classes, "config": resolved,
                  "sample_rate": prepared.sample_rate, "clip_samples": prepared.n_samples}
    if checkpoint is not None:
        set_rng_state(checkpoint["rng"])  # dropout etc. continue exactly where the run stopped

    def set_epoch(epoch: int) -> None:
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)

    def validate() -> dict[str, float]:
        return evaluate_split(model, datasets["val"], prepared.split("val"), task, classes, device,
                              cfg.train.batch_size, amp)[0]

    fit = EpochFit(run, model, train_loader, step, optimizer, scheduler, stopper, scaler, device, amp, cfg, monitor,
                   base_state)
    run_epochs(fit, start_epoch, set_epoch, len(train_set), validate, reporter)

    if objective is not None:
        extra_summary.update(objective.summary(cfg, prepared, task, classes, device, amp))
    return finalize_run(run, prepared, monitor, complexity, device, amp, cfg.train.batch_size, extra_summary)


def restore_training_state(checkpoint: dict[str, Any], run: RunDir, model, optimizer, scheduler, stopper) -> None:
    """``--resume``: weights, optimizer, schedule and early-stopping state of the last finished epoch; the
    metrics log is cut back to that epoch."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    stopper.load_state_dict(checkpoint["early_stopping"])
    run.truncate_metrics(checkpoint["epoch"])


@dataclass
class EpochFit:
    """Everything one epoch of training touches (shared by audio and embedding runs)."""

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


def run_epochs(fit: EpochFit, start_epoch: int, set_epoch, n_items: int, validate, reporter=None,
               extra_record=None) -> None:
    """Epochs ``start_epoch..cfg.train.epochs``: train, validate, log, keep best/last, stop early.

    ``set_epoch(epoch)`` reseeds the data order, ``validate()`` returns the validation metrics,
    ``extra_record()`` (optional) adds entries to each metrics.jsonl line.
    """
    cfg, monitor = fit.cfg, fit.monitor
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if fit.stopper.should_stop:
            break
        set_epoch(epoch)
        started = time.perf_counter()
        bar = reporter.bar(f"epoch {epoch}/{cfg.train.epochs}", n_items) if reporter else None
        train_values = train_one_epoch(fit.model, fit.loader, fit.step, fit.optimizer, fit.device, amp=fit.amp,
                                       scaler=fit.scaler, grad_clip=cfg.train.grad_clip,
                                       progress=bar.advance if bar else None)
        if bar:
            bar.close()
        val_values = validate()
        if monitor not in val_values:
            available = ", ".join(sorted(k for k in val_values if "/" not in k))
            raise ConfigError(f"train.monitor={monitor}: not a validation metric; available: {available}")
        improved = fit.stopper.update(val_values[monitor])
        lr = fit.optimizer.param_groups[0]["lr"]
        fit.scheduler.step(val_values[monitor])
        record = {"epoch": epoch, "lr": lr, "seconds": round(time.perf_counter() - started, 3),
                  **{f"train/{k}": v for k, v in train_values.items()},
                  **{f"val/{k}": v for k, v in val_values.items()}, **(extra_record() if extra_record else {})}
        fit.run.append_metrics(record)
        state = {**fit.base_state, "epoch": epoch, "model": fit.model.state_dict(), "val": val_values}
        if improved:
            fit.run.save_checkpoint("best", state)
        fit.run.save_checkpoint("last", {**state, "optimizer": fit.optimizer.state_dict(), "rng": rng_state(),
                                         "scheduler": fit.scheduler.state_dict(),
                                         "early_stopping": fit.stopper.state_dict()})
        if reporter:
            reporter.epoch(record, monitor, improved)


def finalize_run(run: RunDir, prepared: PreparedData, monitor: str, complexity, device, amp, batch_size,
                 extra_summary: dict[str, Any] | None = None) -> Path:
    """Evaluate the best checkpoint on val and test, write plots and summary.json."""
    best = run.load_checkpoint("best")
    model = AudioClassifier.from_spec(best["spec"]).to(device)
    model.load_state_dict(best["model"])
    task, classes = best["task"], best["classes"]
    cfg = config_from_dict(best["config"])
    results: dict[str, dict[str, float]] = {}
    per_class: dict[str, dict[str, float]] = {}
    for split in ("val", "test"):
        subset = prepared.split(split)
        if len(subset) == 0:
            continue
        dataset = make_dataset(prepared, split, classes, task, cfg, train=False)
        values, probs, targets = evaluate_split(model, dataset, subset, task, classes, device, batch_size, amp)
        results[split] = values
        per_class[split] = M.per_class_metrics(task, targets, probs, classes)
        if task == "single_label":
            matrix = M.confusion_matrix(targets, probs.argmax(1), len(classes))
            plot_confusion(matrix, classes, run.plots / f"confusion_{split}.png", f"Confusion matrix ({split})")
            results[split + "_confusion"] = matrix.tolist()
    plot_curves(run.read_metrics(), run.plots, monitor)
    summary = {
        "task": task,
        "classes": classes,
        "metrics": {s: results[s] for s in ("val", "test") if s in results},
        "confusion": {s: results[f"{s}_confusion"] for s in ("val", "test") if f"{s}_confusion" in results},
        "monitor": monitor,
        "best_epoch": best["epoch"],
        "skipped": [s.to_dict() for s in prepared.skipped],
        "counts": {s: len(prepared.split(s)) for s in SPLITS},
        "model": {"name": best["spec"]["backbone"]["name"], "parameters": complexity},
        "sample_rate": prepared.sample_rate,
        "clip_seconds": prepared.clip_seconds,
        "per_class": per_class,
        **(extra_summary or {}),
    }
    run.write_summary(summary)
    write_report(run.root)
    return run.root


def _explicit(cfg: Config) -> dict[str, Any]:
    """The values of ``cfg`` that differ from the defaults (what the user actually set)."""
    default = Config().to_dict()

    def diff(a, b):
        out = {}
        for key, value in a.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict) and key not in ("model", "features"):
                sub = diff(value, b[key])
                if sub:
                    out[key] = sub
            elif value != b.get(key):
                out[key] = value
        return out

    return diff(cfg.to_dict(), default)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged

