"""Distributed data parallel training on the engine users already run: ``torchrun`` (PyTorch's elastic launcher).

``torchrun --nproc-per-node N -m audioclf train ...`` starts N processes; each finds its rank in the environment
torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) and :func:`init_distributed` joins
them into one process group (NCCL on GPUs, gloo on CPUs). What the trainer does with it:

* ``train.batch_size`` stays the *global* batch: each step's batch is cut into one contiguous piece per rank
  (:class:`~audioclf.data.prepare.RankBatches`), so a recipe's learning rate means the same on 1 or N processes;
* each rank's loss is weighted by its share of the global batch (:func:`loss_weight`), so the averaged gradient
  is the gradient of the global batch's mean loss, exactly as one process would compute it;
* validation is split over the ranks and the probabilities gathered (:func:`sharded`), so every rank computes
  the same metrics and takes the same early-stopping decision;
* only rank 0 writes the run directory; it reads a resumed run and :func:`broadcast` hands it to the others.

Nothing here runs when ``WORLD_SIZE`` is unset or 1: a single process trains exactly as before.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..data.balance import ClassBalancedOrder
from ..data.prepare import EpochShuffle, RankBatches
from ..errors import AudioclfError, ConfigError

log = logging.getLogger(__name__)

__all__ = ["World", "PeerLost", "world", "init_distributed", "rank_device", "broadcast", "sync_state",
           "mean_over_ranks", "all_gather", "barrier", "loss_weight", "epoch_batches", "step_weights", "parallel_step", "use_sync_batchnorm",
           "RankSlices", "uneven_steps", "peers_watched", "sharded", "shard"]

# How long a collective waits for the other ranks. Long enough for rank 0 to score the test split and write the
# plots while the others wait at the last barrier; a dead rank is normally noticed much sooner (its sockets close).
TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("AUDIOCLF_DIST_TIMEOUT_MIN", "30")))


class PeerLost(AudioclfError):
    """Another rank stopped (killed, out of memory, a node lost) while this one waited for it."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run directory, logs and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """The current process group's view of this process (a single process when none was started)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_setting: str = "auto") -> World:
    """Join the process group torchrun described in the environment (once per process; idempotent).

    The backend follows the device: NCCL when this process trains on a GPU, gloo on CPUs. Each rank takes the GPU
    of its local rank. Ranks other than 0 log errors only, so a run's warnings are printed once."""
    if not launched_by_torchrun() or not dist.is_available():
        return World()
    if dist.is_initialized():
        return world()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:  # WORLD_SIZE left in the environment by something else: init_process_group would fail deep inside
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {missing[0]} is not: start the processes "
                          "with torchrun (which sets both), or unset WORLD_SIZE to train in one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = torch.cuda.is_available() and device_setting != "cpu"
    if on_gpu:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank}: this machine has {torch.cuda.device_count()} GPU(s); "
                              "start at most that many processes per node (--nproc-per-node)")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=TIMEOUT)
    current = world()
    if not current.main:
        logging.getLogger("audioclf").setLevel(logging.ERROR)
    return current


def rank_device(device: torch.device, current: World) -> torch.device:
    """``cuda`` means this rank's own GPU (its local rank) under torchrun."""
    if current.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", current.local_rank)
    return device


# Words in the errors gloo and NCCL raise when a peer process is gone (often as a plain RuntimeError).
_PEER_ERRORS = ("connection closed", "connection reset", "broken pipe", "gloo", "nccl", "timed out", "processgroup")


@contextlib.contextmanager
def peers_watched(current: World) -> Iterator[None]:
    """Within this block a collective that fails because another rank stopped (killed, out of memory, its node
    lost) raises one line that says what to do, not the backend's message from deep inside a backward pass."""
    if not current.active:
        yield
        return
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        text = " ".join(str(exc).split())
        if not isinstance(exc, dist.DistError) and not any(word in text.lower() for word in _PEER_ERRORS):
            raise
        first = text.split(". ")[0][:160]  # gloo appends advice and an emoji; its first sentence says what happened
        raise PeerLost(f"rank {current.rank}: another training process stopped ({first}); the run keeps its "
                       "last finished epoch: start the job again with --resume") from None


def _collective(fn, *args, **kwargs):
    with peers_watched(world()):
        return fn(*args, **kwargs)


def broadcast(value: Any, current: World) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object: a config, a checkpoint)."""
    if not current.active:
        return value
    box = [value if current.main else None]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]


def sync_state(module: torch.nn.Module, current: World, buffers_only: bool = False) -> None:
    """Rank 0's parameters (unless ``buffers_only``) and buffers on every rank.

    Buffers drift apart during an epoch: each rank's BatchNorm running statistics follow its own batches (without
    SyncBatchNorm), so they are taken from rank 0, whose checkpoint is the one kept, before every validation."""
    if not current.active:
        return
    tensors = [] if buffers_only else [p.data for p in module.parameters()]
    tensors += [b for b in module.buffers()]
    for tensor in tensors:
        _collective(dist.broadcast, tensor, src=0)


def mean_over_ranks(means: dict[str, float], count: int, current: World) -> dict[str, float]:
    """Means over every rank's items, from each rank's means over its ``count`` items."""
    if not current.active:
        return means
    keys = sorted(means)
    packed = torch.tensor([means[k] * count for k in keys] + [float(count)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        packed = packed.cuda()
    _collective(dist.all_reduce, packed)
    *sums, total = packed.cpu().tolist()
    return {key: value / max(total, 1.0) for key, value in zip(keys, sums)}


def all_gather(value: Any, current: World) -> list[Any]:
    """Every rank's ``value``, in rank order."""
    if not current.active:
        return [value]
    gathered: list[Any] = [None] * current.size
    _collective(dist.all_gather_object, gathered, value)
    return gathered


def barrier(current: World) -> None:
    if current.active:
        _collective(dist.barrier)


def loss_weight(local_items: int, global_items: int, current: World) -> float:
    """The factor on a rank's mean loss that makes DDP's gradient average the global batch's mean gradient:
    DDP averages the ranks' gradients (divides by the world size), so rank r weighs ``size * n_r / N``."""
    if not current.active or global_items == 0:
        return 1.0
    return current.size * local_items / global_items


def epoch_batches(n_items: int, batch_size: int, seed: int, weights=None) -> RankBatches:
    """This process's batches of an epoch over ``n_items`` in a fresh order per epoch (``set_epoch``): the whole
    batches for a single process, its share of each under torchrun. ``weights`` (one per item): the order is
    drawn with replacement in proportion to them instead (``train.balance=sampler``)."""
    current = world()
    order = EpochShuffle(n_items, seed) if weights is None else ClassBalancedOrder(weights, seed)
    return RankBatches(order, batch_size, current.rank, current.size)


def step_weights(loader, current: World):
    """``weight(step, local_items)`` for the training loop (:func:`loss_weight` with the step's global batch size,
    which the loader's batch sampler or :class:`RankSlices` knows), or None for a single process."""
    if not current.active:
        return None
    sizes = getattr(loader, "global_size", None) or getattr(getattr(loader, "batch_sampler", None), "global_size", None)
    if sizes is None:
        raise ConfigError("this training data cannot be split over processes (its loader does not cut global "
                          "batches); train it in one process")
    return lambda step, local_items: loss_weight(local_items, sizes(step), current)


class RankSlices:
    """This rank's contiguous piece of every global batch a stream yields (the same batches on every rank: same
    seed). For streams that cut their own batches (AudioSet embedding files), whose items cannot be dealt out by
    index: each rank reads the stream and keeps its piece, so every item is trained on once per epoch, except
    those of a last batch of fewer items than ranks (at most ranks - 1 items; left out to keep the ranks in step)."""

    def __init__(self, loader, current: World):
        self.loader, self.world, self._last = loader, current, 0

    def global_size(self, step: int) -> int:
        return self._last  # the batch just handed out (the loop asks right after receiving it)

    def __iter__(self):
        for batch in self.loader:
            size = len(batch[0])
            if size < self.world.size:  # a last batch too small to give every rank an item
                continue
            self._last = size
            pieces = np.array_split(np.arange(size), self.world.size)
            mine = torch.as_tensor(pieces[self.world.rank])
            yield tuple(part[mine] for part in batch)


class _StepModule(torch.nn.Module):
    """A training step as one module call, so DistributedDataParallel sees every use of the parameters (augmented
    steps call the front-end and the network separately) and exchanges all their gradients."""

    def __init__(self, model: torch.nn.Module, step):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, inputs, targets, *extra):
        return self.step(self.model, inputs, targets, *extra)


def parallel_step(model: torch.nn.Module, step, device: torch.device, current: World):
    """``step`` (a task step) run through DistributedDataParallel around ``model``: the same signature, with the
    gradients averaged over the ranks in the backward pass."""
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(_StepModule(model, step),
                                      device_ids=[device.index] if device.type == "cuda" else None)

    def run(_model, inputs, targets, *extra):
        return wrapped(inputs, targets, *extra)

    run.ddp = wrapped
    return run


def uneven_steps(step, loader, current: World):
    """Around an epoch whose ranks may take different numbers of steps (``loader.uneven``: shard streams):
    PyTorch's ``Join`` lets the ranks that ran out shadow the gradient exchanges of those still training."""
    if not current.active or not getattr(loader, "uneven", False):
        return contextlib.nullcontext()
    from torch.distributed.algorithms.join import Join

    return Join([step.ddp])


def use_sync_batchnorm(model: torch.nn.Module, device: torch.device, current: World) -> torch.nn.Module:
    """``train.sync_batchnorm``: BatchNorm layers that normalise with the statistics of the whole global batch."""
    if current.active and device.type != "cuda":
        raise ConfigError("train.sync_batchnorm=true: PyTorch synchronises BatchNorm across processes on GPUs only; "
                          "unset it for CPU training")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


# --- evaluation split over the ranks -------------------------------------------------------------------
_shard: World | None = None


@contextlib.contextmanager
def sharded(current: World) -> Iterator[None]:
    """Within this block, :func:`~audioclf.training.evaluate.predict_batches` and ``predict_whole_files`` run the
    model on this rank's share of the batches only and gather the rest from the other ranks."""
    global _shard
    previous, _shard = _shard, (current if current.active else None)
    try:
        yield
    finally:
        _shard = previous


def shard() -> World | None:
    """The world evaluation is split over now (None: this process evaluates everything)."""
    return _shard


def gather_batches(mine: dict[int, np.ndarray], current: World) -> dict[int, np.ndarray]:
    """Each rank's {batch number: probabilities}, merged."""
    merged: dict[int, np.ndarray] = {}
    for part in all_gather(mine, current):
        merged.update(part)
    return merged
