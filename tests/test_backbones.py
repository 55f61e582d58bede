"""Transfer-learning backbones: torchvision / PANNs names and sizes, heads, input scaling, weight files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audioclf.errors import ConfigError
from audioclf.models import create_model
from audioclf.models.backbones import IMAGENET_MEAN, IMAGENET_STD, ImageInput, read_state_dict
from audioclf.models.mobilenet import MobileNetV2
from audioclf.models.panns import Cnn14
from audioclf.models.resnet import ResNet50

SMALL = (1, 64, 64)  # (C, F, T): 2 x 2 maps after the 32x downsampling of the ImageNet backbones
ARCH_KW = {"resnet50": {}, "mobilenet_v2": {}, "cnn14": {"width": 8}}  # CNN14 reduced for speed


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _running_stats(module: nn.Module) -> int:
    return sum(b.numel() for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var")))


def _randomize_bn_stats(module: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-default statistics, so a round trip that drops them is noticed."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(7)


# --- sizes and names ----------------------------------------------------------------------------
def test_parameter_counts_match_published_ones():
    with torch.device("meta"):  # counts only: no memory, no initialisation cost
        # torchvision's documented counts (weights tables of resnet50 / mobilenet_v2).
        assert _count(ResNet50(num_classes=1000)) == 25_557_032
        assert _count(MobileNetV2(num_classes=1000)) == 3_504_872
        # PANNs (Kong et al. 2020, TASLP), Table XII: CNN14 has 80,753,615 parameters (527 AudioSet classes).
        assert _count(Cnn14(classes_num=527)) == 80_753_615
        # The registered model with a linear head on the embedding is the same network.
        assert _count(create_model("cnn14", n_classes=527, input_shape=(1, 64, 1001))) == 80_753_615


def test_backbone_sizes_match_the_fsd2019_reference_keras_counts():
    """A reference FSD2019 solution's Keras counts (frozen backbones): non-trainable 23,587,712 (ResNet50) and 2,257,984
    (MobileNetV2); trainable 545,104 / 348,496 = global pooling -> Dense 256 -> Dense 80."""
    with torch.device("meta"):
        resnet = ResNet50(num_classes=None)
        mobilenet = MobileNetV2(num_classes=None)
        # Keras also counts BatchNorm moving statistics, and its ResNet50 convolutions carry biases.
        conv_biases = sum(m.out_channels for m in resnet.modules() if isinstance(m, nn.Conv2d))
        assert _count(resnet) + _running_stats(resnet) + conv_biases == 23_587_712
        assert _count(mobilenet) + _running_stats(mobilenet) == 2_257_984
        for name, trainable in (("resnet50", 545_104), ("mobilenet_v2", 348_496)):
            model = create_model(name, n_classes=80, input_shape=(1, 80, 92), head="dense", head_hidden=(256,),
                                 dropout=0.0, freeze="all")
            assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_torchvision_and_panns_key_names_and_shapes():
    with torch.device("meta"):
        resnet = {k: tuple(v.shape) for k, v in ResNet50().state_dict().items()}
        mobilenet = {k: tuple(v.shape) for k, v in MobileNetV2().state_dict().items()}
        cnn14 = {k: tuple(v.shape) for k, v in Cnn14().state_dict().items()}
    # torchvision: 53 conv + 53 BN (weight, bias, running_mean, running_var, num_batches_tracked) + fc.
    assert len(resnet) == 53 + 53 * 5 + 2
    assert resnet["conv1.weight"] == (64, 3, 7, 7)
    assert resnet["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert resnet["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # v1.5: stride in the 3x3 conv
    assert resnet["layer4.2.bn3.running_var"] == (2048,)
    assert resnet["fc.weight"] == (1000, 2048)
    assert len(mobilenet) == 52 + 52 * 5 + 2
    assert mobilenet["features.0.0.weight"] == (32, 3, 3, 3)
    assert mobilenet["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # t=1: no expansion conv
    assert mobilenet["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert mobilenet["features.2.conv.0.0.weight"] == (96, 16, 1, 1)
    assert mobilenet["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert mobilenet["features.18.0.weight"] == (1280, 320, 1, 1)
    assert mobilenet["classifier.1.weight"] == (1000, 1280)
    assert cnn14["bn0.weight"] == (64,)
    assert cnn14["conv_block1.conv1.weight"] == (64, 1, 3, 3)
    assert cnn14["conv_block6.bn2.running_mean"] == (2048,)
    assert cnn14["fc1.weight"] == (2048, 2048)
    assert cnn14["fc_audioset.weight"] == (527, 2048)


# --- forward / backward -------------------------------------------------------------------------
# Every head on the cheap backbones; ResNet-50 (the costly one on CPU) once, with the best head of a reference
# FSD2019 solution.
@pytest.mark.parametrize("arch, head", [("resnet50", "simple_cnn")] + [
    (arch, head) for arch in ("mobilenet_v2", "cnn14") for head in ("dense", "simple_cnn", "linear")])
def test_forward_backward_every_head(arch, head):
    torch.manual_seed(0)
    model = create_model(arch, n_classes=5, input_shape=SMALL, head=head, **ARCH_KW[arch])
    x = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(1))
    model.train()
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    first_layer = next(model.backbone.parameters())  # the gradient reaches the input end of the backbone
    assert first_layer.grad.abs().sum() > 0
    assert any(p.grad.abs().sum() > 0 for p in model.head.parameters())


@pytest.mark.parametrize("shape", [(1, 40, 51), (3, 32, 200), (1, 128, 33)])
def test_imagenet_backbones_take_any_feature_image(shape):
    model = create_model("mobilenet_v2", n_classes=3, input_shape=shape, head="simple_cnn").eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 3)


def test_full_networks_give_imagenet_and_audioset_outputs():
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert MobileNetV2().eval()(x).shape == (1, 1000)
        assert Cnn14(classes_num=527, width=8).eval()(torch.randn(1, 1, 64, 96)).shape == (1, 527)


def _panns_reference(model: Cnn14, logmel_tf: torch.Tensor) -> torch.Tensor:
    """The official Cnn14.forward (audioset_tagging_cnn, pytorch/models.py) after its log-mel extractor, in
    eval mode, on PANNs' (B, 1, time, mel) layout; returns logits (the official one applies a sigmoid)."""
    x = model.bn0(logmel_tf.transpose(1, 3)).transpose(1, 3)
    for i, block in enumerate(model.blocks):
        x = F.relu(block.bn1(block.conv1(x)))
        x = F.relu(block.bn2(block.conv2(x)))
        x = F.avg_pool2d(x, kernel_size=(2, 2) if i < 5 else (1, 1))
    x = torch.mean(x, dim=3)
    x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
    return model.fc_audioset(F.relu(model.fc1(x)))


def test_cnn14_matches_the_official_forward_on_mel_by_time_input():
    torch.manual_seed(0)
    model = Cnn14(classes_num=10, width=8)
    _randomize_bn_stats(model, seed=3)
    model.eval()
    logmel = torch.randn(2, 1, 64, 96)  # ours: (B, 1, mel, time); non-square so a wrong transpose shows
    with torch.no_grad():
        ours = model(logmel)
        reference = _panns_reference(model, logmel.transpose(2, 3))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


# --- input adaptation ---------------------------------------------------------------------------
def test_imagenet_input_scaling_by_hand():
    x = torch.randn(2, 1, 8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ImageInput(1, "imagenet").double()(x)
    arr = x.numpy()
    lo = arr.min(axis=(1, 2, 3), keepdims=True)
    hi = arr.max(axis=(1, 2, 3), keepdims=True)
    pixels = (arr - lo) / (hi - lo) * 255.0  # the 0-255 image of a reference FSD2019 solution
    expected = np.concatenate([(pixels / 255.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], axis=1)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)  # float32 constants
    # A silent (constant) example becomes the black image, not NaN.
    black = ImageInput(1, "imagenet")(torch.zeros(1, 1, 4, 4))
    torch.testing.assert_close(black[0, :, 0, 0], -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD))


def test_standardized_input_is_repeated_to_three_channels():
    x = torch.randn(2, 1, 6, 7)
    out = ImageInput(1, "standardized")(x)
    assert out.shape == (2, 3, 6, 7)
    for channel in range(3):
        torch.testing.assert_close(out[:, channel], x[:, 0])
    rgb = torch.randn(2, 3, 6, 7)
    torch.testing.assert_close(ImageInput(3, "standardized")(rgb), rgb)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("resnet50", {"head": "attention"}, "head='attention'"),
        ("resnet50", {"input_scaling": "raw"}, "input_scaling='raw'"),
        ("mobilenet_v2", {"dropout": 1.0}, "dropout=1.0"),
        ("mobilenet_v2", {"head": "dense", "head_hidden": (0,)}, "head_hidden"),
        ("cnn14", {"input_scaling": "imagenet"}, "input_scaling='imagenet'"),
    ],
)
def test_bad_arguments_give_config_errors(name, kwargs, message):
    with torch.device("meta"), pytest.raises(ConfigError, match=message):
        create_model(name, n_classes=3, input_shape=SMALL, **kwargs)


def test_channel_count_is_checked():
    with pytest.raises(ConfigError, match="2 channels"):
        create_model("resnet50", n_classes=3, input_shape=(2, 64, 64))
    with pytest.raises(ConfigError, match="expected 1 channel"):
        create_model("cnn14", n_classes=3, input_shape=(3, 64, 64), width=8)


# --- weight files -------------------------------------------------------------------------------
def _assert_backbone_equals(backbone: nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()):
    loaded = backbone.state_dict()
    for key, value in loaded.items():
        if not key.startswith(skip):
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("network, arch, classifier_key", [
    (ResNet50, "resnet50", "fc.weight"),
    (MobileNetV2, "mobilenet_v2", "classifier.1.weight"),
])
def test_torchvision_state_dict_round_trip(tmp_path, network, arch, classifier_key):
    torch.manual_seed(1)
    source = network(num_classes=1000)
    _randomize_bn_stats(source, seed=2)
    state = source.state_dict()
    assert state[classifier_key].shape[0] == 1000
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)  # what torch.save(torchvision.models.<arch>(weights=...).state_dict(), path) writes
    # The full network loads the file strictly (identical names and shapes; meta: no memory needed) ...
    with torch.device("meta"):
        network(num_classes=1000).load_state_dict(torch.load(path, weights_only=True), strict=True, assign=True)
    # ... and a model with a new head for 7 classes takes its backbone part.
    torch.manual_seed(5)
    model = create_model(arch, n_classes=7, input_shape=SMALL, head="simple_cnn", weights=str(path))
    _assert_backbone_equals(model.backbone, state)
    assert model.head.head[-1].out_features == 7


def test_official_panns_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    source = Cnn14(classes_num=527, width=8)
    _randomize_bn_stats(source, seed=4)
    state = source.state_dict()
    # The release wraps the state_dict in {"model": ...} next to the torchlibrosa front-end's weights.
    model_state = {"spectrogram_extractor.stft.conv_real.weight": torch.randn(9, 1, 16),
                   "logmel_extractor.melW": torch.randn(9, 64), **state}
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": model_state, "iteration": 600000}, path)
    raw = create_model("cnn14", n_classes=3, input_shape=SMALL, width=8, weights=str(path), input_scaling="raw")
    _assert_backbone_equals(raw.backbone, state)
    # "standardized" keeps bn0's learned scale/shift but resets its statistics: our inputs are standardised.
    std = create_model("cnn14", n_classes=3, input_shape=SMALL, width=8, weights=str(path))
    _assert_backbone_equals(std.backbone, state, skip=("bn0.running", "bn0.num_batches"))
    torch.testing.assert_close(std.backbone.bn0.weight, state["bn0.weight"])
    assert torch.all(std.backbone.bn0.running_mean == 0) and torch.all(std.backbone.bn0.running_var == 1)
    # A conv-map head has no use for fc1: it is left out and its weights ignored.
    conv_head = create_model("cnn14", n_classes=3, input_shape=SMALL, width=8, weights=str(path),
                             head="simple_cnn", input_scaling="raw")
    assert conv_head.backbone.fc1 is None
    _assert_backbone_equals(conv_head.backbone, state)


def test_data_parallel_and_run_checkpoint_prefixes(tmp_path):
    """Weights under ``module.`` (DataParallel) or inside an audioclf run checkpoint (stage two of the FSD2019
    two-stage training: the backbone trained on noisy data, a new head on curated data)."""
    first = create_model("mobilenet_v2", n_classes=4, input_shape=SMALL, head="dense")
    _randomize_bn_stats(first, seed=6)
    backbone_state = first.backbone.state_dict()
    parallel = tmp_path / "parallel.pth"
    torch.save({f"module.{k}": v for k, v in first.backbone.state_dict().items()}, parallel)
    loaded = create_model("mobilenet_v2", n_classes=2, input_shape=SMALL, weights=str(parallel))
    _assert_backbone_equals(loaded.backbone, backbone_state)
    # An AudioClassifier's state_dict nests the model under "backbone."; checkpoints add numpy RNG state,
    # which the tensors-only loader reads (numpy arrays are allow-listed), without a warning.
    run = tmp_path / "best.pt"
    torch.save({"model": {f"backbone.{k}": v for k, v in first.state_dict().items()},
                "rng": {"numpy": np.random.get_state(), "x": np.zeros(2), "scalar": np.float64(0.5)},
                "epoch": 3}, run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = create_model("mobilenet_v2", n_classes=9, input_shape=SMALL, head="linear", weights=str(run),
                              freeze="all")
    _assert_backbone_equals(second.backbone, backbone_state)


def test_wrong_weight_files_give_one_line_errors(tmp_path):
    mobilenet_file = tmp_path / "mobilenet.pth"
    state = MobileNetV2(num_classes=1000).state_dict()
    torch.save(state, mobilenet_file)
    # A MobileNet file for a ResNet.
    cases = [("resnet50", {}, mobilenet_file, r"resnet50 backbone: missing keys conv1\.weight, bn1\.weight")]
    # A file with a key missing and a foreign key.
    broken = tmp_path / "broken.pth"
    torch.save({**{k: v for k, v in state.items() if k != "features.18.1.weight"}, "extra.weight": torch.ones(1)},
               broken)
    cases.append(("mobilenet_v2", {}, broken, r"missing keys features\.18\.1\.weight; unexpected keys extra\.weight"))
    # PANNs weights (64 mel bands) for 80-band features.
    panns = tmp_path / "panns.pth"
    torch.save({"model": Cnn14(width=8).state_dict()}, panns)
    cases.append(("cnn14", {"width": 8}, panns, r"shape mismatch bn0\.weight \(file \(64,\), model \(80,\)\)"))
    # Not a torch file, an empty file, a file without tensors, no file at all.
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    no_tensors = tmp_path / "config.pth"
    torch.save({"lr": 0.1}, no_tensors)
    cases += [("mobilenet_v2", {}, text, "cannot read"), ("mobilenet_v2", {}, empty, "cannot read"),
              ("mobilenet_v2", {}, no_tensors, "no state_dict"),
              ("mobilenet_v2", {}, tmp_path / "nope.pth", "not found")]
    for arch, kwargs, path, message in cases:
        shape = (1, 80, 64) if arch == "cnn14" else SMALL
        with pytest.raises(ConfigError, match=message) as info:
            create_model(arch, n_classes=3, input_shape=shape, weights=str(path), **kwargs)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_state_dict_unwraps_lightning_style_checkpoints(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2)}, "epoch": 1}, path)
    assert list(read_state_dict(path)) == ["a"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", list(ARCH_KW))
def test_cuda_gives_the_cpu_logits_and_keeps_frozen_batchnorm_in_eval(arch):
    torch.manual_seed(0)
    model = create_model(arch, n_classes=3, input_shape=SMALL, head="simple_cnn", freeze="last:2",
                         **ARCH_KW[arch]).eval()
    x = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        cpu = model(x)
        gpu = model.to("cuda")(x.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
    model.train()
    first_bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.training and not first_bn.training
