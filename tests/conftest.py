"""Set before any test module imports torch (libgomp reads it once): idle OpenMP threads sleep instead of
spinning, as in the CLI (`audioclf.cli._idle_threads_sleep`). On a busy CI runner spinning threads doubled the
CPU time of a training step (benchmarks/threads.py)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
