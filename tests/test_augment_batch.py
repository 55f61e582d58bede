import numpy as np
import pytest
import torch

from audioclf.augment.batch import DuplicateAugmented, mix, mixup, sample_mixup
from audioclf.errors import ConfigError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_mix_hand_computed_single_label():
    inputs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    targets = torch.tensor([0, 2, 1])
    lam = torch.tensor([0.75, 0.75, 0.75])
    perm = torch.tensor([1, 2, 0])
    x, y = mix(inputs, targets, lam, perm, "single_label", n_classes=3)
    torch.testing.assert_close(x, torch.tensor([[0.75, 0.5], [1.0, 2.5], [3.25, 3.0]]))
    torch.testing.assert_close(y, torch.tensor([[0.75, 0.0, 0.25], [0.0, 0.25, 0.75], [0.25, 0.75, 0.0]]))


def test_mix_hand_computed_multi_label_per_example():
    inputs = torch.zeros(2, 1, 2, 3)
    inputs[1] = 1.0
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    x, y = mix(inputs, targets, torch.tensor([0.9, 0.2]), torch.tensor([1, 0]), "multi_label", n_classes=3)
    torch.testing.assert_close(x[0], torch.full((1, 2, 3), 0.1))
    torch.testing.assert_close(x[1], torch.full((1, 2, 3), 0.2))
    torch.testing.assert_close(y, torch.tensor([[0.9, 1.0, 0.1], [0.8, 1.0, 0.2]]))


def test_mixup_single_label_rows_sum_to_one_and_lambda_is_exact():
    gen = torch.Generator().manual_seed(11)
    inputs = torch.randn(16, 8000)  # waveforms (B, N)
    targets = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(0))
    state = gen.get_state()
    x, y = mixup(inputs, targets, alpha=0.4, task="single_label", n_classes=5, generator=gen)
    # the same generator state gives the same lam and perm, drawn as documented
    gen.set_state(state)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
    perm = torch.randperm(16, generator=gen)
    lam = float(np.random.default_rng(seed).beta(0.4, 0.4))
    onehot = torch.nn.functional.one_hot(targets, 5).float()
    torch.testing.assert_close(x, lam * inputs + (1 - lam) * inputs[perm])
    torch.testing.assert_close(y, lam * onehot + (1 - lam) * onehot[perm])
    torch.testing.assert_close(y.sum(dim=1), torch.ones(16))
    assert y.shape == (16, 5) and y.dtype == torch.float32


def test_mixup_multi_label_features_are_mixed_linearly():
    gen = torch.Generator().manual_seed(3)
    inputs = torch.randn(8, 1, 80, 92)
    targets = (torch.rand(8, 80, generator=gen) < 0.05).float()
    lam, perm = sample_mixup(8, 1.0, per_example=True, generator=torch.Generator().manual_seed(3).manual_seed(4))
    x, y = mixup(inputs, targets, 1.0, "multi_label", 80, generator=torch.Generator().manual_seed(4),
                 per_example=True)
    assert lam.unique().numel() == 8  # one lam per example
    torch.testing.assert_close(x, lam.reshape(8, 1, 1, 1) * inputs + (1 - lam.reshape(8, 1, 1, 1)) * inputs[perm])
    torch.testing.assert_close(y, lam[:, None] * targets + (1 - lam[:, None]) * targets[perm])
    assert ((y >= 0) & (y <= 1)).all()


def test_lambda_follows_beta_alpha_alpha():
    alpha = 0.4
    lam, perm = sample_mixup(20000, alpha, per_example=True, generator=torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(20000))
    assert ((lam >= 0) & (lam <= 1)).all()
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); 20000 draws give ~0.002 standard error on the mean
    assert abs(lam.mean().item() - 0.5) < 0.01
    assert abs(lam.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.005
    batch_lam, _ = sample_mixup(32, alpha, generator=torch.Generator().manual_seed(0))
    assert batch_lam.unique().numel() == 1  # per batch by default


def test_mixup_apply_to_keeps_unflagged_rows():
    inputs = torch.randn(6, 100)
    targets = torch.arange(6) % 3
    flags = torch.tensor([True, False, True, False, True, False])
    x, y = mixup(inputs, targets, 0.5, "single_label", 3, generator=torch.Generator().manual_seed(1),
                 apply_to=flags)
    torch.testing.assert_close(x[~flags], inputs[~flags])
    torch.testing.assert_close(y[~flags], torch.nn.functional.one_hot(targets[~flags], 3).float())


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, "alpha"),
    ({"targets": torch.tensor([0, 5])}, "class indices"),
    ({"targets": torch.zeros(2, 4), "task": "multi_label"}, "targets"),
])
def test_mixup_rejects_bad_arguments(kwargs, message):
    args = {"inputs": torch.randn(2, 10), "targets": torch.tensor([0, 1]), "alpha": 0.2, "task": "single_label",
            "n_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        mixup(**args)


def test_mixup_rejects_an_unknown_task():
    with pytest.raises(ConfigError, match="task 'regression': expected one of single_label, multi_label"):
        mixup(torch.randn(2, 10), torch.tensor([0, 1]), 0.2, "regression", 3)


class _Clips(torch.utils.data.Dataset):
    def __init__(self, n=4):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return self.get(index, augment=False)

    def get(self, index, augment):
        return torch.full((3,), float(index)) + (100.0 if augment else 0.0), torch.tensor(index)

    def set_epoch(self, epoch):
        self.epoch = epoch


def test_duplicate_augmented_uses_get_for_the_second_half():
    base = _Clips()
    doubled = DuplicateAugmented(base)
    assert len(doubled) == 8
    values = [doubled[i][0][0].item() for i in range(8)]
    assert values == [0, 1, 2, 3, 100, 101, 102, 103]
    assert doubled[-1][1].item() == 3
    doubled.set_epoch(5)
    assert base.epoch == 5
    with pytest.raises(IndexError):
        doubled[8]
    batches = list(torch.utils.data.DataLoader(doubled, batch_size=8))
    assert batches[0][0][:, 0].tolist() == values


def test_duplicate_augmented_flag_for_on_device_augmentation():
    data = torch.utils.data.TensorDataset(torch.arange(3.0), torch.tensor([0, 1, 2]))
    doubled = DuplicateAugmented(data, flag=True)
    x, y, augmented = next(iter(torch.utils.data.DataLoader(doubled, batch_size=6)))
    assert x.tolist() == [0, 1, 2, 0, 1, 2]
    assert augmented.tolist() == [False, False, False, True, True, True]
    with pytest.raises(ValueError, match="get\\(index, augment\\)"):
        DuplicateAugmented(data)


def test_duplicate_augmented_copies_only_the_items_named():
    """FSD2019's solution augmented the curated clips only while training on curated and noisy ones."""
    data = torch.utils.data.TensorDataset(torch.arange(4.0), torch.tensor([0, 1, 2, 3]))
    doubled = DuplicateAugmented(data, flag=True, only=[1, 3])
    assert len(doubled) == 6
    x, _, augmented = next(iter(torch.utils.data.DataLoader(doubled, batch_size=6)))
    assert x.tolist() == [0, 1, 2, 3, 1, 3] and augmented.tolist() == [False] * 4 + [True] * 2
    assert doubled[-1][0].item() == 3
    with pytest.raises(IndexError):
        doubled[6]


@cuda
def test_mixup_on_cuda_matches_cpu():
    inputs = torch.randn(8, 1, 20, 30)
    targets = torch.randint(0, 4, (8,))
    cpu = mixup(inputs, targets, 0.4, "single_label", 4, generator=torch.Generator().manual_seed(2))
    gpu = mixup(inputs.cuda(), targets.cuda(), 0.4, "single_label", 4, generator=torch.Generator().manual_seed(2))
    assert gpu[0].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0])
    torch.testing.assert_close(gpu[1].cpu(), cpu[1])
