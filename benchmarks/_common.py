"""Shared by the benchmark scripts: thread limits, interleaved timing, plain-text tables."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def limit_thread_env(threads: int) -> None:
    """Cap OpenMP/MKL/OpenBLAS pools; call before numpy/torch create them so later pools respect it."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def best_times(fns: list[Callable[[], object]], repeats: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Minimum wall time of each function over ``repeats`` rounds, after a warm-up call.

    The functions alternate within a round, so a burst of load from other processes hits all of them
    alike instead of skewing one side of a ratio; the minimum is the least disturbed run.
    """
    for fn in fns:
        fn()
    sync()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
