"""Spinning against sleeping OpenMP threads, on an idle and on a busy machine.

`audioclf` (the CLI) sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it: idle OpenMP threads then sleep
instead of spinning. This script measures what that buys and costs. Each policy runs in its own process
(libgomp reads the variable once, when torch is imported) doing the demo's training step (``small_cnn`` on a
batch of 32 log-mel clips of 2 s, AdamW), with torch's default thread count; the policies alternate, so
a burst of load hits both alike. ``--load N`` first starts N busy processes (pure Python loops that end by
themselves with the script), the way a CI runner or a laptop shares its cores::

    python benchmarks/threads.py               # idle machine
    python benchmarks/threads.py --load 4      # 4 other busy processes

It prints, per policy, the median wall and CPU seconds per step, and the ratio ACTIVE / PASSIVE.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from _common import print_table  # benchmarks/ is on sys.path when run as a script

STEP = r"""
import json, time, torch
from audioclf.models.registry import create_model
torch.manual_seed(0)
model = create_model("small_cnn", 8, (1, 64, 201))
opt = torch.optim.AdamW(model.parameters(), 3e-3)
x, y = torch.randn(32, 1, 64, 201), torch.randint(0, 8, (32,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
step()
wall, cpu = time.perf_counter(), time.process_time()
for _ in range({steps}):
    step()
print(json.dumps({{"wall": (time.perf_counter() - wall) / {steps}, "cpu": (time.process_time() - cpu) / {steps},
                   "threads": torch.get_num_threads()}}))
"""


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _measure(policy: str, steps: int) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    done = subprocess.run([sys.executable, "-c", STEP.format(steps=steps)], env=env, capture_output=True,
                          text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", type=int, default=0, help="busy processes started beside the measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    busy = [multiprocessing.Process(target=_busy, args=(900.0,), daemon=True) for _ in range(args.load)]
    for proc in busy:
        proc.start()
    try:
        results: dict[str, list[dict]] = {"ACTIVE": [], "PASSIVE": []}
        for _ in range(args.repeats):
            for policy in results:
                results[policy].append(_measure(policy, args.steps))
    finally:
        for proc in busy:
            proc.terminate()
    median = {p: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for p, rs in results.items()}
    rows = [[p, f"{m['wall']:.3f}", f"{m['cpu']:.3f}"] for p, m in median.items()]
    threads = results["ACTIVE"][0]["threads"]
    print_table(f"demo training step, {threads} torch threads, {args.load} busy processes beside it "
                f"(load average now {os.getloadavg()[0]:.1f}), median of {args.repeats}",
                ["OMP_WAIT_POLICY", "wall s/step", "CPU s/step"], rows)
    print(f"\nACTIVE / PASSIVE: wall {median['ACTIVE']['wall'] / median['PASSIVE']['wall']:.2f}x, "
          f"CPU {median['ACTIVE']['cpu'] / median['PASSIVE']['cpu']:.2f}x")


if __name__ == "__main__":
    main()
