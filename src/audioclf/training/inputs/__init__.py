"""What differs between kinds of input — decoded audio files, precomputed embeddings — behind one interface.

The trainer (:mod:`audioclf.training.trainer`) is the same for every kind; an :class:`Inputs` implementation
reads the data, builds a model that takes it, serves the training batches and scores a split. Each kind also
declares its defaults for the config keys left open (``model.name``, ``train.batch_size`` ...) and the keys it
cannot honour: setting one of those is a one-line :class:`~audioclf.errors.ConfigError` before anything is
read, never a silently ignored setting.

* :class:`AudioInputs`: audio files through a manifest, decoded once; the model has the feature front-end
  inside.
* :class:`EmbeddingInputs`: AudioSet-style embedding sets (HDF5 or TFRecord), in memory or streamed.
* :class:`FrozenEmbeddingInputs`: audio files through a frozen pretrained backbone whose embeddings are
  extracted once; only the head trains (``train.frozen_embeddings``).
* :class:`ShardInputs`: decoded audio in WebDataset tar shards (``audioclf shard``), the training split streamed.

:func:`inputs_for` picks the kind a config describes.
"""

from __future__ import annotations

from ...config import Config
from .audio import AudioInputs
from .base import Inputs
from .embeddings import EmbeddingInputs
from .frozen import FrozenEmbeddingInputs
from .shards import ShardInputs

__all__ = ["AudioInputs", "EmbeddingInputs", "FrozenEmbeddingInputs", "Inputs", "ShardInputs", "inputs_for"]


def inputs_for(cfg: Config) -> Inputs:
    """The inputs ``cfg`` describes (with that kind's defaults applied and its unsupported keys refused):
    AudioSet embeddings when ``data.format`` is ``audioset``, the model takes embeddings, or ``data.path``
    holds embedding files; audio shards when ``data.format`` is ``shards`` or ``data.path`` is a shard set; audio
    files through a frozen backbone when ``train.frozen_embeddings``; audio files otherwise."""
    if ShardInputs.describes(cfg):
        return ShardInputs(cfg)
    if EmbeddingInputs.describes(cfg):
        return EmbeddingInputs(cfg)
    return (FrozenEmbeddingInputs if cfg.train.frozen_embeddings else AudioInputs)(cfg)
