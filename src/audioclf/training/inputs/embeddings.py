"""AudioSet embeddings as a run's inputs: (10, 128) uint8 sequences per clip, 527 classes, multi-label.

The sets come from HDF5 or TFRecord files (:mod:`audioclf.data.embedding_sets`); a set larger than
``data.options.max_rows_in_memory`` is streamed. Defaults follow the AudioSet-embeddings protocol (Gemmeke et
al. 2017's release; the LSTM over the ten one-second embeddings, batch 128, at most 50 epochs, the best
epoch by validation mAP). Audio-only settings (decoding, crops, front-end, waveform and spectrogram
augmentation) are refused rather than ignored; label smoothing and MixUp (of the embedding sequences) work
as for audio.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ...config import Config
from ...data.embedding_sets import (
    EmbeddingOptions,
    Source,
    check_compatible,
    class_names_for,
    embedding_options,
    eval_loader,
    input_shape_of,
    is_embedding_data,
    open_source,
    resolve_sources,
    should_stream,
    train_loader,
    training_data,
)
from ...errors import ConfigError, DataError
from ...models.classifier import AudioClassifier
from ...models.registry import create_model, list_models, model_input_kind
from ...runs import RunDir
from ..distributed import RankSlices, epoch_batches, world
from ..evaluate import Probabilities, SplitResult, predict_batches, score
from .base import Inputs

__all__ = ["EmbeddingInputs"]

_NOT_AUDIO = "the inputs are precomputed embeddings, not audio to decode"
_NO_SPECTROGRAM = "there is no waveform or spectrogram to augment"


class EmbeddingInputs(Inputs):
    kind = "embeddings"
    description = "AudioSet embeddings"
    defaults = {"model.name": "embedding_lstm", "train.batch_size": 128, "train.epochs": 50, "train.monitor": "mAP",
                "train.optimizer": "adam", "train.weight_decay": 0.0, "train.scheduler": "cosine",
                "train.label_smoothing": 0.0, "augment.mixup_alpha": 0.0, "train.ema": 0.0}
    unsupported = {
        "data.audio_root": _NOT_AUDIO, "data.sample_rate": _NOT_AUDIO, "data.clip_seconds": _NOT_AUDIO,
        "data.pad_mode": _NOT_AUDIO, "data.train_crop": _NOT_AUDIO, "data.eval_crop": _NOT_AUDIO,
        "data.trim_silence": _NOT_AUDIO, "data.strict": _NOT_AUDIO, "data.cache_dir": _NOT_AUDIO,
        "data.max_seconds": _NOT_AUDIO,
        "data.memory_gb": "streaming is set by data.options.max_rows_in_memory",
        "data.split": "the splits are the sets and a random data.fractions share of the training rows",
        "data.group": "embedding rows carry no group columns",
        "data.group_pattern": "embedding rows carry no file paths to read groups from",
        "data.heldout": "embedding rows carry no group columns",
        "features": "there is no front-end: the inputs are embeddings",
        "augment.waveform": _NO_SPECTROGRAM, "augment.spec": _NO_SPECTROGRAM, "augment.duplicate": _NO_SPECTROGRAM,
        "augment.mixup_on": "MixUp mixes the embedding sequences themselves; leave mixup_on unset",
        "train.backbone_lr": "the embedding models have no pretrained backbone",
        "train.frozen_embeddings": "the inputs already are embeddings",
        "cv": "cross-validation needs a manifest of items; split the sets with data.fractions",
    }

    options: EmbeddingOptions
    sources: dict[str, Source | None]

    @classmethod
    def describes(cls, cfg: Config) -> bool:
        """Whether ``cfg`` is about AudioSet embeddings rather than audio files."""
        if cfg.data.format == "audioset":
            return True
        name = cfg.model.get("name")
        if name and model_input_kind(name) == "embeddings":
            return True
        return cfg.data.format == "auto" and is_embedding_data(cfg.data.path)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        super().check_config(cfg)
        if cfg.data.format not in ("auto", "audioset"):
            raise ConfigError(f"data.format={cfg.data.format}: model.name={cfg.model.get('name')} takes AudioSet "
                              "embeddings (data.format=audioset); audio datasets need a features or waveform model")
        embedding_options(cfg.data.options)
        name = cfg.model["name"]
        if model_input_kind(name) != "embeddings":
            valid = ", ".join(n for n in list_models() if model_input_kind(n) == "embeddings")
            raise ConfigError(f"model.name={name} takes {model_input_kind(name)} input; "
                              f"AudioSet embeddings need one of: {valid}")

    # --- data -------------------------------------------------------------------------------------
    def prepare(self, manifest=None, progress: bool = False) -> None:
        if manifest is not None:
            raise ConfigError("AudioSet embedding runs read their sets from data.path, not from a manifest")
        cfg = self.cfg
        self.options = embedding_options(cfg.data.options)
        train, val, test = resolve_sources(cfg.data.path, cfg.data.fractions, cfg.seed, self.options)
        self.classes = class_names_for(cfg.data.path, self.options, train)
        self.input_shape = input_shape_of(train)
        for name, source in (("val", val), ("test", test), ("train", train)):
            if source is not None:
                check_compatible(name, source, self.classes, self.input_shape)
        self.sources = {"train": train, "val": val, "test": test}
        self.task = "multi_label"

    def prepare_evaluation(self, run: RunDir, state: dict[str, Any], data: str | None = None,
                           split: str | None = None, strict: bool = False) -> None:
        self.options = embedding_options(self.cfg.data.options)
        self.classes, self.task = list(state["classes"]), state["task"]
        self.input_shape = tuple(state["input_shape"])
        if data is None:
            split = split or "test"
            train, val, test = resolve_sources(self.cfg.data.path, self.cfg.data.fractions, self.cfg.seed, self.options)
            source = {"train": train, "val": val, "test": test}.get(split)
            if source is None:
                raise DataError(f"{run.root}: the run has no {split} set; pass the data to evaluate on")
        else:
            source = open_source(data)
        check_compatible("run's", source, self.classes, self.input_shape)
        self.sources = {"train": None, "val": None, "test": source}

    def count(self, split: str) -> int:
        source = self.sources.get(split)
        return 0 if source is None else source.n_rows

    def facts(self) -> dict[str, Any]:
        described = {split: source.describe() for split, source in self.sources.items() if source is not None}
        streamed = self.sources["train"] is not None and should_stream(self.sources["train"], self.options)
        return {"input_kind": self.kind, "input_shape": list(self.input_shape), "sample_rate": None,
                "clip_samples": None, "data": described, "streamed": streamed}

    def resolved(self, model: AudioClassifier) -> dict[str, Any]:
        return {"data": {"format": "audioset", "options": dataclasses.asdict(self.options)}}

    # --- model and training -----------------------------------------------------------------------
    def build_model(self) -> AudioClassifier:
        args = dict(self.cfg.model)
        name = args.pop("name")
        return AudioClassifier(create_model(name, n_classes=len(self.classes), input_shape=self.input_shape, **args),
                               None)

    def train_set(self):
        self._train_data = training_data(self.sources["train"], len(self.classes), self.options,
                                         self.cfg.train.batch_size, self.cfg.seed)
        return self._train_data

    def train_loader(self, train_set, device):
        batch, workers, seed, current = self.cfg.train.batch_size, self.cfg.train.num_workers, self.cfg.seed, world()
        if isinstance(train_set, torch.utils.data.IterableDataset):  # a stream: under torchrun each rank keeps its piece
            loader, set_epoch = train_loader(train_set, batch, workers, seed, device)
            return (RankSlices(loader, current) if current.active else loader), set_epoch
        return train_loader(train_set, batch, workers, seed, device, batch_sampler=epoch_batches(len(train_set), batch, seed))

    def epoch_record(self) -> dict[str, Any]:
        peak = getattr(self._train_data, "peak_rows", None)
        if peak is None:
            return {}
        # With DataLoader workers each holds its own copy of the stream: the parent's count says nothing.
        return {"stream/peak_rows": peak if self.cfg.train.num_workers == 0 else None}

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, probs_fn: Probabilities, split: str, loss: str = "task") -> SplitResult | None:
        source = self.sources.get(split)
        if source is None or source.n_rows == 0:
            return None
        loader = eval_loader(source, len(self.classes), self.options, self.cfg.train.batch_size)
        probs, targets = predict_batches(probs_fn, loader)
        metrics = score(self.task, targets, probs, self.classes, loss=loss)
        return SplitResult(metrics, probs, targets, [f"{split}:{row}" for row in range(len(probs))])
