"""``audioclf train --gpus N``: the same training in N processes on this machine, started by torchrun.

This is a convenience over ``torchrun --standalone --nproc-per-node N -m audioclf train ...`` (which is what it
runs); across machines, start torchrun on each node with ``--nnodes`` and ``--rdzv-endpoint`` instead. The
processes train together through :mod:`audioclf.training.distributed`. When one of them fails (killed, out of
memory), torchrun stops the others and this says, in one line, what happened and how to continue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import AudioclfError, ConfigError

__all__ = ["DistributedRunFailed", "launch", "check_gpus"]


class DistributedRunFailed(AudioclfError):
    """A process of a multi-process run failed; the run keeps its last finished epoch."""


def check_gpus(n: int) -> None:
    """``--gpus N`` needs N GPUs on this machine."""
    import torch

    if n < 1:
        raise ConfigError(f"--gpus {n}: expected at least 1")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < n:
        raise ConfigError(f"--gpus {n}: this machine has {available} CUDA GPU(s); on CPUs start processes with "
                          "torchrun --nproc-per-node N -m audioclf train ... (gloo)")


def launch(argv: list[str], processes: int, out: str | None = None) -> None:
    """Run ``audioclf <argv>`` in ``processes`` processes through torchrun on this machine (a rendezvous on
    loopback; each process takes the GPU of its local rank when there are GPUs, gloo on CPUs otherwise).

    Raises :class:`DistributedRunFailed` when a process fails; ``out`` (the run directory, if known) lets the
    message say which epoch the run keeps."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "audioclf", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(_threads_per_process(processes)))}
    code = subprocess.run(command, env=env).returncode
    if code == 0:
        return
    kept = _last_epoch(out)
    where = f"{out} keeps epoch {kept}" if kept else "the run keeps its last finished epoch"
    again = f"audioclf {' '.join(a for a in argv if a not in ('--overwrite', '--resume'))} --gpus {processes} --resume"
    raise DistributedRunFailed(f"a training process failed ({_describe(code)}); torchrun stopped the others; "
                               f"{where}: continue with `{again}`")


def _threads_per_process(processes: int) -> int:
    """Each process's share of the CPU cores (torch would otherwise start a thread per core in every process)."""
    return max(1, (os.cpu_count() or 1) // processes)


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _last_epoch(out: str | None) -> int | None:
    """The last epoch in ``out``'s metrics.jsonl (what ``--resume`` continues after), if readable."""
    if not out:
        return None
    try:
        lines = (Path(out) / "metrics.jsonl").read_text().strip().splitlines()
        return int(json.loads(lines[-1])["epoch"]) if lines else None
    except (OSError, ValueError, KeyError):
        return None
