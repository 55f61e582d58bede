import copy
import math

import pytest
import torch

from audioclf.augment.spectrogram import (
    POLICIES,
    MelBandShift,
    SpecAugment,
    SpecAugmentChain,
    build_spec_augment,
    mask_along_axis,
    shift_frequency_axis,
    time_warp,
)
from audioclf.errors import ConfigError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _runs(flags: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D bool tensor."""
    runs, length = [], 0
    for flag in flags.tolist() + [False]:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_policies_match_park_et_al_table_1():
    # Park et al. 2019, Table 1: (W, F, m_F, T, p, m_T)
    table = {"LB": (80, 27, 1, 100, 1.0, 1), "LD": (80, 27, 2, 100, 1.0, 2),
             "SM": (40, 15, 2, 70, 0.2, 2), "SS": (40, 27, 2, 70, 0.2, 2)}
    for name, (w, f, m_f, t, p, m_t) in table.items():
        module = SpecAugment.from_policy(name)
        got = (module.time_warp, module.freq_width, module.freq_masks, module.time_width,
               module.time_width_ratio, module.time_masks)
        assert got == (w, f, m_f, t, p, m_t), name
    assert set(POLICIES) == set(table)
    assert SpecAugment.from_policy("LD", mask_value=0.0).mask_value == 0.0


def test_mask_along_axis_exact():
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).reshape(2, 1, 4, 6)
    starts = torch.tensor([[1, 4], [0, 0]])
    widths = torch.tensor([[2, 1], [0, 3]])
    out = mask_along_axis(x, starts, widths, axis=-1, value=-1.0)
    expected = x.clone()
    expected[0, :, :, 1:3] = -1
    expected[0, :, :, 4:5] = -1
    expected[1, :, :, 0:3] = -1
    assert torch.equal(out, expected)
    out = mask_along_axis(x, torch.tensor([[3], [1]]), torch.tensor([[1], [2]]), axis=-2, value=0.0)
    expected = x.clone()
    expected[0, :, 3] = 0
    expected[1, :, 1:3] = 0
    assert torch.equal(out, expected)


def test_time_warp_on_a_ramp_is_the_piecewise_linear_map():
    n = 50
    x = torch.arange(n, dtype=torch.float64).expand(3, 1, 4, n).clone()
    centers = torch.tensor([20.0, 10.0, 30.0])
    warps = torch.tensor([5.0, -4.0, 0.0])
    out = time_warp(x, centers, warps)
    assert out.shape == x.shape
    last = n - 1
    for b, (c, w) in enumerate(zip(centers.tolist(), warps.tolist())):
        d = c + w
        t = torch.arange(n, dtype=torch.float64)
        expected = torch.where(t <= d, t * c / d, c + (t - d) * (last - c) / (last - d))
        torch.testing.assert_close(out[b, 0, 2], expected)
    assert out[0, 0, 0, 25].item() == pytest.approx(20.0)  # frame 20 moved to 25
    assert torch.equal(out[:, :, :, 0], x[:, :, :, 0]) and torch.equal(out[:, :, :, -1], x[:, :, :, -1])
    torch.testing.assert_close(out[2], x[2])  # zero warp = identity


def test_shift_frequency_axis_exact():
    f = 8
    x = torch.arange(f, dtype=torch.float32).reshape(1, 1, f, 1).expand(3, 1, f, 5).clone()
    out = shift_frequency_axis(x, torch.tensor([1.0, -0.5, 0.0]), torch.tensor([1.0, 1.0, 1.1]))
    bins = torch.arange(f, dtype=torch.float32)
    torch.testing.assert_close(out[0, 0, :, 0], (bins + 1).clamp(max=f - 1))  # content moves one bin down
    torch.testing.assert_close(out[1, 0, :, 3], (bins - 0.5).clamp(min=0))
    mid = (f - 1) / 2
    torch.testing.assert_close(out[2, 0, :, 2], (mid + (bins - mid) * 1.1).clamp(0, f - 1))


def test_eval_mode_is_identity():
    x = torch.randn(4, 1, 40, 51)
    for module in (SpecAugment.from_policy("LD"), MelBandShift(), build_spec_augment({"policy": "SM",
                                                                                        "band_shift": True})):
        module.eval()
        assert torch.equal(module(x), x)
        module.train()
        assert not torch.equal(module(x), x)


def test_mask_counts_and_widths_stay_within_bounds():
    torch.manual_seed(0)
    batch, n_freq, n_time = 64, 40, 120
    module = SpecAugment(time_warp=0, freq_masks=2, freq_width=8, time_masks=3, time_width=100,
                         time_width_ratio=0.1, mask_value=0.0)
    out = module(torch.ones(batch, 1, n_freq, n_time))
    max_t = math.floor(0.1 * n_time)  # the ratio bound (12) is tighter than time_width
    assert module.max_widths(n_freq, n_time) == (0, 8, max_t)
    zero_rows = (out[:, 0] == 0).all(dim=-1)   # (B, F): frequency-masked bins
    zero_cols = (out[:, 0] == 0).all(dim=-2)   # (B, T): time-masked frames
    for b in range(batch):
        freq_runs, time_runs = _runs(zero_rows[b]), _runs(zero_cols[b])
        assert len(freq_runs) <= 2 and sum(freq_runs) <= 2 * 8
        assert len(time_runs) <= 3 and sum(time_runs) <= 3 * max_t
        # every zero is explained by a masked row or column
        assert torch.equal(out[b, 0] == 0, zero_rows[b][:, None] | zero_cols[b][None, :])
    # masks are drawn per example, and widths cover their range
    assert len({tuple(zero_cols[b].tolist()) for b in range(batch)}) > batch // 2
    assert zero_cols.sum(dim=1).max() > max_t


def test_mean_mask_value_is_each_examples_mean():
    x = torch.randn(3, 2, 10, 30) + torch.arange(3.0).reshape(3, 1, 1, 1) * 10
    module = SpecAugment(time_warp=0, freq_masks=0, time_masks=1, time_width=30)
    gen = torch.Generator().manual_seed(1)
    module.generator = gen
    out = module(x)
    means = x.mean(dim=(-2, -1), keepdim=True)
    changed = out != x
    assert changed.any()
    torch.testing.assert_close(out[changed], means.expand_as(x)[changed])


def test_widths_are_clamped_to_small_inputs():
    module = SpecAugment.from_policy("LD", mask_value=0.0)
    assert module.max_widths(40, 51) == (24, 27, 51)  # DCASE 40 x 51: W=80 cannot fit
    assert module.max_widths(10, 4) == (0, 10, 4)
    torch.manual_seed(3)
    for shape in ((8, 1, 40, 51), (8, 1, 10, 4), (8, 1, 3, 2), (8, 40, 51)):
        assert module(torch.randn(shape)).shape == shape


def test_time_warp_keeps_shape_and_values_range():
    module = SpecAugment(time_warp=10, freq_masks=0, time_masks=0, generator=torch.Generator().manual_seed(0))
    x = torch.arange(60.0).expand(5, 1, 16, 60).clone()
    out = module(x)
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    # a monotone ramp stays monotone with fixed end points: the map only moves frames along time
    assert (out.diff(dim=-1) >= 0).all()
    assert torch.equal(out[..., 0], x[..., 0]) and torch.equal(out[..., -1], x[..., -1])
    # the middle knot moves by at most W frames
    assert (out - x).abs().max() <= 10 + 1e-4


def test_generator_makes_it_reproducible_and_global_rng_follows_manual_seed():
    x = torch.randn(6, 1, 40, 80)
    a = SpecAugment.from_policy("LD", generator=torch.Generator().manual_seed(7))(x)
    b = SpecAugment.from_policy("LD", generator=torch.Generator().manual_seed(7))(x)
    c = SpecAugment.from_policy("LD", generator=torch.Generator().manual_seed(8))(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    module = SpecAugment.from_policy("SS")
    torch.manual_seed(5)
    first = module(x)
    torch.manual_seed(5)
    assert torch.equal(module(x), first)
    assert copy.deepcopy(SpecAugment(generator=torch.Generator())).generator is not None


def test_apply_to_leaves_other_examples_unchanged():
    x = torch.randn(4, 1, 20, 40)
    flags = torch.tensor([True, False, True, False])
    for module in (SpecAugment.from_policy("LB"), MelBandShift(max_shift=3.0)):
        out = module(x, apply_to=flags)
        assert torch.equal(out[~flags], x[~flags])
        assert not torch.equal(out[flags], x[flags])
    with pytest.raises(ValueError, match="apply_to"):
        SpecAugment()(x, apply_to=torch.tensor([True]))


def test_mel_band_shift_draws_within_bounds():
    x = torch.arange(20.0).reshape(1, 1, 20, 1).expand(32, 1, 20, 3).clone()
    out = MelBandShift(max_shift=2.0, max_stretch=0.0, generator=torch.Generator().manual_seed(0))(x)
    offsets = (out - x)[:, 0, 5:15, 0]  # away from the clamped edges: a pure shift
    assert offsets.abs().max() <= 2.0 + 1e-5
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets))  # one shift per example
    assert offsets[:, 0].unique().numel() > 16
    assert torch.equal(MelBandShift(p=0.0)(x), x)


@pytest.mark.parametrize("kwargs, arg", [
    ({"freq_masks": -1}, "freq_masks"), ({"time_width": 2.5}, "time_width"),
    ({"time_width_ratio": 1.5}, "time_width_ratio"), ({"mask_value": "max"}, "mask_value"),
    ({"generator": 3}, "generator"),
])
def test_invalid_arguments_name_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg}"):
        SpecAugment(**kwargs)


def test_build_spec_augment_forms():
    assert build_spec_augment(None) is None and build_spec_augment("none") is None
    for spec in ("LD", {"policy": "LD"}):
        module = build_spec_augment(spec)
        assert isinstance(module, SpecAugment) and (module.freq_masks, module.time_masks) == (2, 2)
    module = build_spec_augment({"policy": "SM", "time_masks": 1, "mask_value": 0.0})
    assert (module.time_warp, module.time_masks, module.mask_value) == (40, 1, 0.0)
    module = build_spec_augment({"freq_masks": 1, "freq_width": 5, "time_masks": 0})
    assert (module.freq_width, module.time_masks) == (5, 0)
    chain = build_spec_augment({"policy": "LB", "band_shift": {"max_shift": 1.5}})
    assert isinstance(chain, SpecAugmentChain) and chain[1].max_shift == 1.5
    with pytest.raises(ConfigError, match="unknown policy 'LX'; did you mean"):
        build_spec_augment("LX")
    with pytest.raises(ConfigError, match="unknown key 'freq_mask'; did you mean freq_masks"):
        build_spec_augment({"freq_mask": 2})
    with pytest.raises(ConfigError, match="spec_augment: time_width_ratio"):
        build_spec_augment({"policy": "LD", "time_width_ratio": 2})
    with pytest.raises(ConfigError, match="band_shift: unknown key 'shift'"):
        build_spec_augment({"band_shift": {"shift": 1}})


@cuda
def test_cuda_matches_cpu_with_a_cpu_generator():
    x = torch.randn(8, 1, 80, 92)
    for build in (lambda g: SpecAugment.from_policy("LD", generator=g), lambda g: MelBandShift(generator=g)):
        cpu = build(torch.Generator().manual_seed(0))(x)
        gpu = build(torch.Generator().manual_seed(0))(x.cuda())
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    module = SpecAugment.from_policy("LD")  # global CUDA RNG
    assert module(x.cuda()).device.type == "cuda"


def test_fixed_per_item_keeps_each_clips_masks_across_epochs_batches_and_order():
    """González Poy (2022) §4.2.3 / §5.3 (1): the LD-masked spectrograms were made once and replaced the base data,
    so each clip trains on one mask; the default redraws them every time (Park et al.)."""
    torch.manual_seed(0)
    waves = torch.randn(6, 400)
    images = torch.randn(6, 1, 40, 51)
    fixed = build_spec_augment({"policy": "LD", "time_warp": 0, "fixed_per_item": True}, seed=3)
    first = fixed(images, source=waves)
    # another epoch, another order, another batch: the same clip gets the same masks
    order = torch.tensor([4, 1, 5, 0])
    torch.testing.assert_close(fixed(images[order], source=waves[order]), first[order], rtol=0, atol=0)
    torch.testing.assert_close(fixed(images[:1], source=waves[:1]), first[:1], rtol=0, atol=0)
    masked = first != images  # every clip is masked somewhere, and not all alike
    assert all(masked[i].any() for i in range(6)) and not all(torch.equal(masked[0], m) for m in masked[1:])
    # the run's seed and the clip itself choose the masks
    other_seed = build_spec_augment({"policy": "LD", "time_warp": 0, "fixed_per_item": True}, seed=4)
    assert not torch.equal(other_seed(images, source=waves), first)
    assert not torch.equal(fixed(images, source=waves + 1e-3), first)
    # per-epoch redraw (the default): two passes differ
    redraw = build_spec_augment({"policy": "LD", "time_warp": 0})
    assert not torch.equal(redraw(images, source=waves), redraw(images, source=waves))
    with pytest.raises(ConfigError, match="fixed_per_item: expected true or false"):
        build_spec_augment({"policy": "LD", "fixed_per_item": "yes"})


def test_the_training_step_keys_fixed_masks_on_each_clips_waveform():
    from audioclf.config import config_from_dict
    from audioclf.training.loop import build_step

    seen = []

    class Net(torch.nn.Module):
        def features(self, wave):  # a (B, 1, 8, 10) "spectrogram" of the waveform
            return wave.reshape(wave.shape[0], 1, 8, 10).clone()

        def backbone(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1)[:, :3]

    cfg = config_from_dict({"data": {"path": "/data"}, "seed": 1,
                            "augment": {"spec": {"policy": "LD", "time_warp": 0, "freq_width": 4, "time_width": 5,
                                                 "fixed_per_item": True}, "mixup_alpha": 0.0}})
    step = build_step(cfg, "single_label", 3)
    wave, targets = torch.randn(4, 80), torch.tensor([0, 1, 2, 0])
    step(Net(), wave, targets)
    step(Net(), wave[[3, 2, 1, 0]], targets[[3, 2, 1, 0]])
    torch.testing.assert_close(seen[1], seen[0][[3, 2, 1, 0]], rtol=0, atol=0)
    assert not torch.equal(seen[0], wave.reshape(4, 1, 8, 10))  # masked


@cuda
def test_fixed_per_item_masks_are_the_same_on_cuda_as_on_cpu():
    """The key is read from the clip's bytes on the CPU: a run on the GPU masks each clip as one on the CPU does."""
    waves, images = torch.randn(5, 400), torch.randn(5, 1, 40, 51)
    module = SpecAugment.from_policy("LD", time_warp=0, fixed_per_item=True, seed=2)
    gpu = module(images.cuda(), source=waves.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), module(images, source=waves), rtol=0, atol=0)
