"""Freezing policies: which parameters train, frozen BatchNorm statistics, optimizer parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from audioclf.errors import ConfigError
from audioclf.models import create_model
from audioclf.models.classifier import AudioClassifier
from audioclf.models.freeze import (
    apply_freeze_policy,
    frozen_parameter_names,
    parameter_groups,
    parse_freeze_policy,
    transfer_modules,
)
from audioclf.training.optim import build_optimizer, build_scheduler

SMALL = (1, 64, 64)


def _meta_model(name: str, **kwargs) -> nn.Module:
    """requires_grad checks need no real tensors: build on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return create_model(name, n_classes=4, input_shape=SMALL, **kwargs)


def _backbone_names(model: nn.Module) -> list[str]:
    return [f"backbone.{n}" for n, _ in model.backbone.named_parameters()]


def _trainable_backbone(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")}


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "cnn14"])
def test_none_and_all(name):
    model = _meta_model(name)
    assert frozen_parameter_names(model) == []
    apply_freeze_policy(model, "all")
    assert frozen_parameter_names(model) == _backbone_names(model)
    assert all(p.requires_grad for p in model.head.parameters())
    apply_freeze_policy(model, "none")  # and back
    assert frozen_parameter_names(model) == []


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "cnn14"])
def test_blocks_cover_every_backbone_parameter_once(name):
    model = _meta_model(name)
    seen: list[str] = []
    for children in model.freeze_blocks().values():
        for child in children:
            seen += [f"{child}.{n}" for n, _ in model.backbone.get_submodule(child).named_parameters()]
    assert sorted(seen) == sorted(n for n, _ in model.backbone.named_parameters())


def test_resnet50_last_2_is_the_blocks_4_5_preset():
    model = _meta_model("resnet50", freeze="last:2")
    trainable = _trainable_backbone(model)
    assert trainable == {n for n in _backbone_names(model) if n.startswith(("backbone.layer3.", "backbone.layer4."))}
    frozen = set(frozen_parameter_names(model))
    assert {"backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias",
            "backbone.layer1.0.conv1.weight", "backbone.layer2.3.bn3.bias"} <= frozen
    assert "backbone.layer3.0.downsample.0.weight" in trainable
    preset = _meta_model("resnet50", freeze="resnet50_blocks_4_5")
    assert frozen_parameter_names(preset) == frozen_parameter_names(model)


def test_mobilenet_stages_11_17_preset():
    model = _meta_model("mobilenet_v2", freeze="mobilenet_stages_11_17")
    index = {n: int(n.split(".")[2]) for n in _backbone_names(model)}  # backbone.features.<i>....
    assert set(frozen_parameter_names(model)) == {n for n, i in index.items() if i <= 10}
    assert _trainable_backbone(model) == {n for n, i in index.items() if i >= 11}
    assert {i for n, i in index.items() if n in _trainable_backbone(model)} == set(range(11, 19))
    same = _meta_model("mobilenet_v2", freeze="last:8")
    assert frozen_parameter_names(same) == frozen_parameter_names(model)


def test_cnn14_last_2_and_last_0():
    model = _meta_model("cnn14", freeze="last:2")
    assert _trainable_backbone(model) == {
        n for n in _backbone_names(model) if n.startswith(("backbone.conv_block6.", "backbone.fc1."))}
    assert "backbone.bn0.weight" in frozen_parameter_names(model)
    everything = _meta_model("cnn14", freeze="last:0")
    assert frozen_parameter_names(everything) == _backbone_names(everything)


@pytest.mark.parametrize("policy, message", [
    ("some", "freeze='some'"),
    ("last:x", "freeze='last:x'"),
    ("last:-1", "freeze='last:-1'"),
    ("last:6", r"resnet50 has 5 blocks \(stem, layer1, layer2, layer3, layer4\); expected 0 <= N <= 5"),
    ("mobilenet_stages_11_17", "is the preset for mobilenet_v2, but the model is resnet50"),
])
def test_bad_policies(policy, message):
    with pytest.raises(ConfigError, match=message):
        _meta_model("resnet50", freeze=policy)


def test_models_without_a_pretrained_backbone():
    plain = create_model("small_cnn", n_classes=3, input_shape=(1, 16, 16))
    assert apply_freeze_policy(plain, "none") is plain
    with pytest.raises(ConfigError, match="needs a pretrained backbone"):
        apply_freeze_policy(plain, "all")
    assert transfer_modules(plain) == []
    assert parse_freeze_policy(" last:3 ") == 3


def test_policy_reaches_a_backbone_inside_an_audio_classifier():
    classifier = AudioClassifier(_meta_model("cnn14", width=8), feature_config=None)
    apply_freeze_policy(classifier, "all")
    frozen = frozen_parameter_names(classifier)
    assert frozen and all(n.startswith("backbone.backbone.") for n in frozen)
    assert all(p.requires_grad for p in classifier.backbone.head.parameters())


def _bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers()
            if n.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_frozen_batchnorm_statistics_stay_while_the_head_trains():
    torch.manual_seed(0)
    # CNN14 (reduced width) has BatchNorm in every block; the simple CNN head has its own (trainable) ones.
    model = create_model("cnn14", n_classes=3, input_shape=SMALL, width=8, head="simple_cnn", freeze="all")
    model.eval().train()  # toggling modes must not wake frozen BatchNorm up
    assert model.training and model.head.training
    frozen_bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bns and not any(m.training for m in frozen_bns)
    before_bn = _bn_state(model.backbone)
    before_backbone = {n: p.clone() for n, p in model.backbone.named_parameters()}
    before_head = {n: p.clone() for n, p in model.head.named_parameters()}
    before_head_bn = _bn_state(model.head)

    optimizer = build_optimizer(parameter_groups(model, lr=1e-2), name="adam", lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, *SMALL, generator=gen) * 3 + 1  # statistics far from the running ones
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for name, value in _bn_state(model.backbone).items():
        torch.testing.assert_close(value, before_bn[name], rtol=0, atol=0, msg=name)
    for name, value in model.backbone.named_parameters():
        torch.testing.assert_close(value, before_backbone[name], rtol=0, atol=0, msg=name)
    assert all(not torch.equal(p, before_head[n]) for n, p in model.head.named_parameters() if p.dim() > 1)
    # The head's own (trainable) BatchNorm did update: train mode really was on.
    assert any(not torch.equal(v, before_head_bn[n]) for n, v in _bn_state(model.head).items())


def test_frozen_backbone_gives_eval_features_in_train_mode():
    """MobileNetV2's features have no dropout: with frozen BN, train and eval mode compute the same map."""
    torch.manual_seed(0)
    model = create_model("mobilenet_v2", n_classes=3, input_shape=SMALL, freeze="all")
    for m in model.backbone.modules():  # non-default statistics, so batch vs running statistics differ
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        train_map = model.train().backbone.forward_features(model.adapter(x))
        eval_map = model.eval().backbone.forward_features(model.adapter(x))
    torch.testing.assert_close(train_map, eval_map)
    # Unfreezing puts BatchNorm back on batch statistics.
    apply_freeze_policy(model.train(), "none")
    assert all(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        assert not torch.allclose(model.backbone.forward_features(model.adapter(x)), eval_map)


def test_parameter_groups_split_backbone_and_head():
    model = _meta_model("resnet50", freeze="last:2", head="dense")
    groups = parameter_groups(model, lr=1e-3, backbone_lr=1e-5)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    by_id = {id(p): n for n, p in model.named_parameters()}
    head = {by_id[id(p)] for p in groups[0]["params"]}
    backbone = {by_id[id(p)] for p in groups[1]["params"]}
    assert head == {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert backbone == _trainable_backbone(model)  # frozen parameters are left out
    assert not set(frozen_parameter_names(model)) & (head | backbone)
    # Without a backbone_lr both groups use lr; with the backbone frozen only the head group is left.
    assert [g["lr"] for g in parameter_groups(model, lr=3e-4)] == [3e-4, 3e-4]
    apply_freeze_policy(model, "all")
    assert [g["name"] for g in parameter_groups(model, lr=3e-4)] == ["head"]


def test_parameter_groups_drive_the_optimizer_and_scheduler():
    model = create_model("cnn14", n_classes=3, input_shape=SMALL, width=8, head="linear", freeze="last:1")
    optimizer = build_optimizer(parameter_groups(model, lr=1e-3, backbone_lr=1e-4), name="adamw", lr=1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-4]
    scheduler = build_scheduler(optimizer, name="exponential", epochs=3, gamma=0.5)
    scheduler.step()
    assert scheduler.lr == pytest.approx(5e-4)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(5e-5)


def test_parameter_groups_errors():
    model = _meta_model("mobilenet_v2")
    with pytest.raises(ConfigError, match="train.backbone_lr=0"):
        parameter_groups(model, lr=1e-3, backbone_lr=0)
    plain = create_model("small_cnn", n_classes=3, input_shape=(1, 16, 16))
    assert [g["name"] for g in parameter_groups(plain, lr=0.1)] == ["head"]
    for p in plain.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        parameter_groups(plain, lr=0.1)
