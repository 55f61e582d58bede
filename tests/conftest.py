"""Set before any test module imports torch (libgomp reads it once): idle OpenMP threads sleep instead of
spinning, as in the CLI (`audioclf.cli._idle_threads_sleep`). On a busy CI runner spinning threads doubled the
CPU time of a training step (benchmarks/threads.py)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The tests' own cache (prepared data, generated rooms, pretrained weights), removed at exit: a user's
# ~/.cache/audioclf must not change what a test sees (a cached AudioSet checkpoint turns on the ensemble's probe
# member in zero-config), and the tests must not fill it. A caller's AUDIOCLF_CACHE is kept.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if not os.environ.get("AUDIOCLF_CACHE"):
    os.environ["AUDIOCLF_CACHE"] = tempfile.mkdtemp(prefix="audioclf-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AUDIOCLF_CACHE"], ignore_errors=True)
