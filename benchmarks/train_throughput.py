"""Training throughput end to end against compute alone, and its scaling over processes (DDP on torchrun).

For each system, the trainer's own pieces (``training.loop.train_one_epoch``, ``build_step`` with the recipes'
SpecAugment and MixUp, AdamW, mixed precision on GPUs) run twice in this process:

* **end to end**: decoded audio in memory -> the training data path the trainer picks (on a GPU: the audio held on
  the device and cropped there, ``data.device_clips``; on CPUs: a DataLoader with ``--workers``) -> front-end ->
  augmentation -> network -> optimizer;
* **compute only**: the same model, step and optimizer on one batch already on the device, over and over.

The ratio says how much of the device's time the data path costs (1.0: none). ``--ddp N`` runs the end-to-end
measure again in N processes started by torchrun (NCCL on GPUs, gloo on CPUs), each with the per-process batch
of the single-process run, and prints the scaling efficiency: clips/s on N processes / (N x clips/s on 1).

Systems (their recipes' front-ends and batch sizes): the FSD2019 simple CNN (``configs/fsd2019.yaml``, 3-s clips at
16 kHz, 80 mels), the DCASE 2022 Task 1 baseline and the ASC teacher (``configs/dcase2022_task1.yaml``, 1-s clips
at 44.1 kHz, 40 / 80 mels) and PANNs' CNN14 (Kong et al. 2020: 10-s clips at 32 kHz, 64 mels). On CPUs they run
small (short clips, small batches, few steps) so the script ends in a few minutes; on a GPU at their real sizes::

    python benchmarks/train_throughput.py [--systems s1_simple_cnn dcase2022_baseline] [--steps 30] [--ddp 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import limit_thread_env, print_table  # benchmarks/ is on sys.path when run as a script

# name -> (model arguments, front-end, sample rate, clip seconds, batch): the recipes' settings on a GPU.
SYSTEMS = {
    "s1_simple_cnn": ({"name": "fsd_simple_cnn"}, {"n_fft": 1024, "hop_length": 512, "n_mels": 80}, 16000, 3.0, 32),
    "dcase2022_baseline": ({"name": "dcase2022_baseline"}, {"n_fft": 1764, "hop_length": 882, "n_mels": 40},
                           44100, 1.0, 16),
    "asc_teacher": ({"name": "asc_teacher", "activation": "elu"}, {"n_fft": 1764, "hop_length": 882, "n_mels": 80},
                    44100, 1.0, 64),
    "cnn14": ({"name": "cnn14"}, {"n_fft": 1024, "hop_length": 320, "n_mels": 64}, 32000, 10.0, 32),
}
# Small on CPUs, so the script ends in minutes: name -> (clip seconds, batch, steps).
CPU_SIZES = {"s1_simple_cnn": (1.0, 8, 8), "dcase2022_baseline": (1.0, 8, 8), "asc_teacher": (1.0, 4, 3),
             "cnn14": (1.0, 4, 3)}
N_CLASSES = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measure (default 40 GPU, 3-8 CPU)")
    parser.add_argument("--clips", type=int, default=None, help="clips in memory (default 20 batches' worth)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader workers when the audio is not on the GPU (train.num_workers; default 0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: cores / processes)")
    parser.add_argument("--ddp", type=int, default=0, help="also measure on this many processes (torchrun)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one torchrun process
    return parser.parse_args(argv)


def sizes(name: str, on_gpu: bool) -> tuple[float, int, int]:
    """(clip seconds, batch, default timed steps)."""
    _, _, _, seconds, batch = SYSTEMS[name]
    return (seconds, batch, 40) if on_gpu else CPU_SIZES[name]


def build(name: str, device, on_gpu: bool, clips: int | None, seed: int = 0):
    """The model, task step, optimizer and in-memory training set of one system, as the trainer builds them."""
    import numpy as np
    import torch

    from audioclf.config import Config
    from audioclf.data.dataset import WaveformDataset
    from audioclf.features import FeatureConfig
    from audioclf.training.inputs.audio import build_classifier
    from audioclf.training.loop import build_step

    model_args, features, rate, _, _ = SYSTEMS[name]
    seconds, batch, _ = sizes(name, on_gpu)
    n = int(rate * seconds)
    cfg = Config()
    cfg.model = dict(model_args)
    cfg.augment.spec = {"freq_masks": 2, "freq_width": 8, "time_masks": 2, "time_width": 10}
    cfg.augment.mixup_alpha = 0.2
    feature_cfg = FeatureConfig.from_dict({"kind": "logmel", "sample_rate": rate, **features})
    torch.manual_seed(seed)
    model = build_classifier(cfg, N_CLASSES, rate, n, feature_cfg).to(device)
    step = build_step(cfg, "single_label", N_CLASSES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    count = clips or 20 * batch
    # 1.5 clip lengths each, so every epoch draws random crops, as from longer recordings.
    waves = [rng.standard_normal(int(1.5 * n)).astype(np.float32) * 0.1 for _ in range(count)]
    dataset = WaveformDataset(waves, rng.integers(0, N_CLASSES, count), n, "tile", "random", seed=seed)
    return model, step, optimizer, dataset, batch


def loader_for(dataset, batch: int, workers: int, device, on_gpu: bool):
    """The training data path the trainer takes (training.inputs.audio.AudioInputs.train_loader)."""
    from audioclf.data.device_clips import DeviceClips, device_clips_fit
    from audioclf.data.prepare import make_loader
    from audioclf.training.distributed import epoch_batches

    sampler = epoch_batches(len(dataset), batch, seed=0)
    if device_clips_fit(dataset, device, None):
        return DeviceClips(dataset, sampler, device), sampler, "audio on the GPU"
    return make_loader(dataset, batch, workers, device=device, batch_sampler=sampler), sampler, f"{workers} workers"


def limited(loader, steps: int):
    for i, batch in enumerate(loader):
        if i == steps:
            return
        yield batch


def measure(name: str, args, device, current=None) -> dict:
    """clips/s end to end and compute only for one system (under torchrun: this rank's DDP step, global clips/s)."""
    import torch

    from audioclf.training.distributed import World, parallel_step, step_weights
    from audioclf.training.loop import train_one_epoch
    from audioclf.training.state import use_amp

    on_gpu = device.type == "cuda"
    steps = args.steps or sizes(name, on_gpu)[2]
    current = current or World()
    model, step, optimizer, dataset, batch = build(name, device, on_gpu, args.clips)
    global_batch = batch * current.size  # each process keeps the single-process batch (weak scaling)
    amp = use_amp(None, device)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    if current.active:
        step = parallel_step(model, step, device, current)
    loader, sampler, path = loader_for(dataset, global_batch, args.workers, device, on_gpu)
    weight = step_weights(loader, current)

    def epoch(batches, n_steps: int) -> float:
        sync()
        start = time.perf_counter()
        train_one_epoch(model, batches, step, optimizer, device, amp=amp, weight=weight)
        sync()
        return n_steps * global_batch / (time.perf_counter() - start)

    def end_to_end(epoch_number: int) -> float:
        sampler.set_epoch(epoch_number)
        dataset.set_epoch(epoch_number)
        return epoch(limited(loader, steps), steps)

    fixed = next(iter(loader))
    fixed = tuple(t.to(device) for t in fixed)
    end_to_end(0)  # warm-up: kernels chosen, memory allocated, workers started once
    epoch([fixed] * 2, 2)
    e2e, compute = [], []
    for k in range(3):  # interleaved, so a burst of load elsewhere hits both alike; best of three
        e2e.append(end_to_end(k + 1))
        compute.append(epoch([fixed] * steps, steps))
    return {"system": name, "path": path, "batch": global_batch, "clip_s": sizes(name, on_gpu)[0],
            "end_to_end": max(e2e), "compute": max(compute)}


def run_worker(args) -> None:
    """One torchrun process: the end-to-end measure with the DDP step; rank 0 prints the results as JSON."""
    import torch

    from audioclf.training.distributed import init_distributed, rank_device
    from audioclf.training.state import resolve_device

    current = init_distributed(args.device)
    device = rank_device(resolve_device(args.device), current)
    results = [measure(name, args, device, current) for name in args.systems]
    if current.main:
        print("RESULTS " + json.dumps(results), flush=True)
    torch.distributed.destroy_process_group()


def main(argv=None) -> None:
    args = parse_args(argv)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
    limit_thread_env(threads)
    import torch

    torch.set_num_threads(threads)
    if args.worker:
        run_worker(args)
        return
    from audioclf.training.state import resolve_device

    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} threads"
    single = [measure(name, args, device) for name in args.systems]
    rows = [[r["system"], f"{r['batch']} x {r['clip_s']:g} s", r["path"], f"{r['end_to_end']:.1f}",
             f"{r['compute']:.1f}", f"{r['end_to_end'] / r['compute']:.2f}"] for r in single]
    print_table(f"Training clips/s on {where} (best of 3 interleaved rounds)",
                ["system", "batch", "data path", "end to end", "compute only", "ratio"], rows)
    if args.ddp > 1:
        scaled = launch(args)
        rows = [[one["system"], f"{one['end_to_end']:.1f}", f"{many['end_to_end']:.1f}",
                 f"{many['end_to_end'] / one['end_to_end']:.2f}x",
                 f"{many['end_to_end'] / (args.ddp * one['end_to_end']):.2f}"] for one, many in zip(single, scaled)]
        print_table(f"Scaling from 1 to {args.ddp} processes (each with the 1-process batch; "
                    f"{'NCCL' if device.type == 'cuda' else 'gloo'})",
                    ["system", "1 process", f"{args.ddp} processes", "speed-up", "efficiency"], rows)


def launch(args) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.ddp}",
               os.path.abspath(__file__), "--worker", "--systems", *args.systems, "--workers", str(args.workers),
               "--device", args.device, *(["--steps", str(args.steps)] if args.steps else []),
               *(["--clips", str(args.clips)] if args.clips else [])]
    threads = max(1, (os.cpu_count() or 1) // args.ddp)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in result.stdout.splitlines():
        if line.startswith("RESULTS "):
            return json.loads(line[len("RESULTS "):])
    raise SystemExit(f"the {args.ddp}-process run failed:\n{result.stderr[-3000:]}")


if __name__ == "__main__":
    main()
