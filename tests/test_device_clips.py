"""The GPU data path: training audio held on the device and cropped there gives the loader's batches exactly;
train.compile trains as the plain modules do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audioclf.cli import main
from audioclf.data.dataset import WaveformDataset
from audioclf.data.device_clips import DeviceClips, device_clips_fit
from audioclf.data.prepare import EpochShuffle, RankBatches, make_loader
from audioclf.data.synth.demo import make_demo_dataset

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def dataset(crop: str, pad_mode: str = "tile", multi_label: bool = False) -> WaveformDataset:
    rng = np.random.default_rng(0)
    lengths = [400, 1000, 1000, 2500, 37, 999, 1800, 640, 1001, 3000, 120]  # short, exact and long clips
    waves = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    targets = (rng.random((len(waves), 4)) < 0.4).astype(np.float32) if multi_label else np.arange(len(waves)) % 3
    return WaveformDataset(waves, targets, 1000, pad_mode, crop, seed=7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("crop, pad_mode, multi_label", [("random", "tile", False), ("random", "pad", True),
                                                         ("center", "pad", False), ("start", "tile", False)])
def test_device_clips_are_the_loaders_batches(device, crop, pad_mode, multi_label):
    data = dataset(crop, pad_mode, multi_label)
    for world in (1, 2):
        for epoch in (1, 2, 5):
            sampler = RankBatches(EpochShuffle(len(data), 3), 4, world - 1, world)
            clips = DeviceClips(data, sampler, torch.device(device))
            sampler.set_epoch(epoch)
            data.set_epoch(epoch)
            expected = list(make_loader(data, 4, 0, batch_sampler=sampler))
            got = list(clips)
            assert len(got) == len(expected) == len(clips)
            for (wave, target), (want_wave, want_target) in zip(got, expected):
                assert wave.device.type == device
                torch.testing.assert_close(wave.cpu(), want_wave, rtol=0, atol=0)
                torch.testing.assert_close(target.cpu(), want_target, rtol=0, atol=0)


def test_audio_copied_in_chunks_is_the_same(monkeypatch):
    import audioclf.data.device_clips as device_clips

    data = dataset("random")
    whole = DeviceClips(data, RankBatches(EpochShuffle(len(data), 3), 4), torch.device("cpu")).audio
    monkeypatch.setattr(device_clips, "COPY_CHUNK", 1500)  # a few clips per copy
    chunked = DeviceClips(data, RankBatches(EpochShuffle(len(data), 3), 4), torch.device("cpu")).audio
    torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
    assert len(whole) == sum(max(len(w), data.n_samples) for w in data.waves)


def test_only_what_the_device_path_reproduces_is_cached():
    cpu = torch.device("cpu")
    assert device_clips_fit(dataset("random"), cpu, True)
    assert not device_clips_fit(dataset("random"), cpu, None)  # auto: on GPUs only
    assert not device_clips_fit(dataset("random"), cpu, False)
    assert not device_clips_fit(dataset("max_energy"), cpu, True)  # its crop looks at the audio: the loader's
    augmented = dataset("random")
    augmented.augment = lambda wave, rate, rng: wave
    assert not device_clips_fit(augmented, cpu, True)  # waveform augmentation runs on NumPy arrays


@pytest.mark.slow  # end to end (2-4 s): make test-slow, to keep make test under five minutes
def test_a_run_with_the_audio_on_the_device_equals_one_with_the_loader(tmp_path):
    data = make_demo_dataset(tmp_path / "data", n_per_class=4, seconds=1.0, seed=2)
    common = ["train", "--data", str(data), "train.epochs=2", "train.batch_size=8", "data.sample_rate=16000",
              "data.clip_seconds=0.7", "augment.waveform=[]", "features.n_mels=32"]
    for cache in ("true", "false"):
        assert main([*common, "--out", str(tmp_path / cache), f"data.device_cache={cache}"]) == 0
    rows = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (tmp_path / cache / "metrics.jsonl").read_text().splitlines()] for cache in ("true", "false")]
    assert rows[0] == rows[1]  # SpecAugment and MixUp on: the random draws line up too


@pytest.mark.slow
def test_compiled_training_matches_the_plain_modules(tmp_path):
    data = make_demo_dataset(tmp_path / "data", n_per_class=4, seconds=1.0, seed=2)
    common = ["train", "--data", str(data), "train.epochs=2", "train.batch_size=8", "data.sample_rate=16000",
              "data.clip_seconds=0.7", "model.name=mlp", "augment.waveform=[]", "augment.spec=none",
              "augment.mixup_alpha=0", "features.n_mels=32"]
    for compiled in ("true", "false"):
        assert main([*common, "--out", str(tmp_path / compiled), f"train.compile={compiled}"]) == 0
    a, b = (torch.load(tmp_path / name / "checkpoints/last.pt", weights_only=False)["train_model"]
            for name in ("true", "false"))
    assert a.keys() == b.keys()  # Module.compile keeps the parameter names: checkpoints load as before
    for name in a:  # fused kernels add in another order: float32 rounding only
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3)
