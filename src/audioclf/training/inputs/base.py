"""The interface every kind of input implements (see :mod:`audioclf.training.inputs`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ...config import Config, config_value, fill_unset
from ...data.balance import class_weights
from ...data.manifest import Manifest
from ...errors import ConfigError
from ...models.classifier import AudioClassifier
from ...models.registry import check_model_args
from ...runs import RunDir
from ..decisions import choose_decisions
from ..evaluate import Probabilities, SplitResult, model_probabilities
from .zero_config import balance_for

__all__ = ["Inputs"]


class Inputs(ABC):
    """One run's inputs: built from a config; :meth:`prepare` reads the data before anything else is asked."""

    kind: ClassVar[str]  # recorded as the run's input_kind
    description: ClassVar[str]  # for messages: "audio files", "AudioSet embeddings"
    # Values for keys the config leaves None (dotted keys; "model.name" fills an empty model section).
    defaults: ClassVar[dict[str, Any]]
    # Keys this kind cannot honour -> why; a value other than the config's default is refused.
    unsupported: ClassVar[dict[str, str]] = {}

    task: str
    classes: list[str]
    balance_note: str | None = None  # the run header's line on train.balance, once resolved

    def __init__(self, cfg: Config):
        self.cfg = self.with_defaults(cfg)
        self.check_config(self.cfg)

    # --- config -----------------------------------------------------------------------------------
    @classmethod
    def with_defaults(cls, cfg: Config) -> Config:
        """A copy of ``cfg`` with this kind's defaults where it leaves a key None."""
        return fill_unset(cfg, cls.defaults)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """:class:`ConfigError` naming the first key set that this kind of input cannot honour."""
        model_args = dict(cfg.model)
        if model_args.get("name"):
            check_model_args(model_args.pop("name"), model_args)
        default = Config()
        for key, why in cls.unsupported.items():
            value = config_value(cfg, key)
            if value != config_value(default, key):
                raise ConfigError(f"{key}={value!r}: runs on {cls.description} cannot honour it ({why})")

    # --- data -------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, manifest: Manifest | None = None, progress: bool = False) -> None:
        """Read the data: sets ``task``, ``classes`` and the train/val/test splits. ``manifest`` (audio)
        replaces what ``data.*`` would import (cross-validation folds, a resumed run's snapshot)."""

    @abstractmethod
    def prepare_evaluation(self, run: RunDir, state: dict[str, Any], data: str | None = None,
                           split: str | None = None, strict: bool = False) -> None:
        """For a trained run (``state``: its checkpoint, whose classes are fixed): make the "test" split the
        items to evaluate, i.e. the run's own ``split`` (default test) or every item of ``data``."""

    @abstractmethod
    def count(self, split: str) -> int:
        """Items in ``split``."""

    def skipped(self) -> list[dict[str, str]]:
        """Files that could not be read (``{"path", "reason"}``), listed in summary.json."""
        return []

    def data_check(self) -> list[dict[str, Any]] | None:
        """The findings of the quick data checks before training (``data.doctor``), for the header and summary.json;
        None where they were not run."""
        return None

    def default_monitor(self) -> str:
        """The validation metric that picks the best epoch when ``train.monitor`` is not set."""
        return str(self.defaults["train.monitor"])

    @abstractmethod
    def facts(self) -> dict[str, Any]:
        """What a checkpoint and summary.json record about the inputs (``input_kind`` and, e.g., the sample
        rate and clip length a predictor needs)."""

    def split_groups(self) -> dict[str, Any] | None:
        """The groups kept apart across the splits, for summary.json: ``{"column": "speaker", "<split>": {"count",
        "names"}}`` (None when no group column keeps them apart)."""
        return None

    @abstractmethod
    def resolved(self, model: AudioClassifier) -> dict[str, Any]:
        """Config values inferred from the data and the model, by section (merged into the run's config.yaml)."""

    def describe(self, user: Config) -> list[tuple[str, str]]:
        """(what, value and where it came from) for the run header: what was read and inferred from the data,
        ``user`` being the config as the caller gave it (unset keys were chosen here)."""
        return []

    def groups_per_split(self) -> dict[str, dict[str, int]]:
        """Group column -> split -> distinct values in it (``train --dry-run``); {} when there are none."""
        return {}

    def snapshot(self, run_root: Path) -> None:
        """Files a new run directory keeps about its data (audio: manifest.csv with the splits used)."""

    # --- model and training -----------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> AudioClassifier:
        """The model of ``cfg.model`` for these inputs (refusing a model that takes another input)."""

    def complete_config(self, macs_per_item: int) -> None:
        """Settle what depends on the model's cost (``macs_per_item``: MACs of one inference), e.g. the
        number of epochs of a zero-config run, and ``train.patience: auto``; ``self.cfg`` is final afterwards."""
        self.resolve_balance()
        if self.cfg.train.patience == "auto":
            self.cfg.train.patience = self.auto_patience(self.cfg.train.epochs)

    def train_class_counts(self) -> np.ndarray | None:
        """(C,) training items per class, or None where they are not known before training (streams)."""
        return None

    def resolve_balance(self) -> None:
        """``train.balance: auto`` settled from the training counts (what config.yaml records); sampler or loss
        refused where the counts are unknown."""
        counts, setting = self.train_class_counts(), self.cfg.train.balance
        if counts is None and setting in ("sampler", "loss"):
            raise ConfigError(f"train.balance={setting}: runs on {self.description} do not know their class counts "
                              "before training; use train.balance=none")
        self.cfg.train.balance, self.balance_note = balance_for(setting, counts)

    def loss_class_weights(self) -> np.ndarray | None:
        """The loss's class weights with ``train.balance=loss`` (:func:`~audioclf.data.balance.class_weights`)."""
        if self.cfg.train.balance != "loss":
            return None
        train = self.cfg.train
        return class_weights(self.train_class_counts(), train.balance_weights, train.balance_beta)

    def auto_patience(self, epochs: int) -> int:
        """``train.patience: auto`` for a run of ``epochs``."""
        return 10

    def initialize(self, model: AudioClassifier, device) -> None:
        """Data-dependent set-up of a new model (audio: the feature standardisation's statistics)."""

    def ready(self, model: AudioClassifier, device) -> None:
        """Called once the weights that training starts from are in place (new, ``init_from`` or resumed),
        before the first epoch (frozen embeddings: extract them now)."""

    def trained_part(self, model: AudioClassifier) -> torch.nn.Module:
        """The module a training step runs on a training batch (the whole model, or only its head)."""
        return model

    @abstractmethod
    def train_set(self) -> Any:
        """The training items (a Dataset, or a stream)."""

    @abstractmethod
    def train_loader(self, train_set: Any, device) -> tuple[Any, Callable[[int], None]]:
        """A loader over ``train_set`` and ``set_epoch(epoch)``, which fixes that epoch's order and crops."""

    def epoch_record(self) -> dict[str, Any]:
        """Extra entries for each metrics.jsonl line (streams: the most rows held in memory)."""
        return {}

    # --- evaluation -------------------------------------------------------------------------------
    def validate(self, model: AudioClassifier, device, amp: bool, loss: str = "task") -> dict[str, float]:
        """The validation metrics of ``model`` after an epoch (see :meth:`monitored`)."""
        return self.monitored(self.evaluate(model_probabilities(model, self.task, device, amp), "val", loss), loss)

    def monitored(self, val: SplitResult, loss: str = "task") -> dict[str, float]:
        """An epoch's validation metrics as the best epoch is chosen on them. Multi-label decision metrics
        (macro_f1, micro_f1, pSR, mAP_per_example) at thresholds chosen on this very pass by ``train.threshold``:
        the run's decisions are chosen that way on the kept epoch's validation, so monitoring F1 at a fixed 0.5
        would pick the epoch by decisions predict never makes. (Temperature scaling is monotone per class, so
        thresholds chosen before it make the same decisions as those chosen after.) A fixed rule keeps its
        threshold: the audioset_embeddings recipe monitors mAP_per_example at 0.5, as its thesis rounded outputs.
        The ranking metrics (lwlrap, mAP: the default monitors) have no threshold and do not change."""
        if self.task != "multi_label":
            return val.metrics
        rescored, _ = choose_decisions(self.task, self.classes, {"val": val}, False, self.cfg.train.threshold, loss)
        return rescored["val"].metrics

    @abstractmethod
    def evaluate(self, probs_fn: Probabilities, split: str, loss: str = "task") -> SplitResult | None:
        """``split`` scored with ``probs_fn`` (None when the split is empty); ``loss`` names the model's loss."""

