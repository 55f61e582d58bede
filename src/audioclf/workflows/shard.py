"""``audioclf shard``: a dataset decoded once into WebDataset tar shards that training streams
(:mod:`audioclf.data.shards`, :mod:`audioclf.training.inputs.shards`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from ..data.shards import shard_data
from ..training.inputs import AudioInputs

__all__ = ["shard"]


def shard(cfg: Config, out: str | Path, items_per_shard: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Write the data of ``cfg.data`` as shards in ``out``, decoded, trimmed and split as ``audioclf train`` would
    read it (its zero-config defaults, e.g. silence trimming at the edges); returns the shard index."""
    return shard_data(AudioInputs.with_defaults(cfg), out, max_items=items_per_shard, progress=progress)
