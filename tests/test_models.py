"""Model registry and the first model families (mlp, cnn)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from audioclf.errors import ConfigError
from audioclf.models import create_model, list_models, make_activation, model_input_kind, model_kwargs
from audioclf.models import registry
from audioclf.models.mlp import MIXED_CYCLE, resolve_activations

# A small input of each kind (batch excluded); small enough that every model runs in milliseconds.
SMALL_INPUTS = {"features": (1, 40, 51), "waveform": (4000,), "embeddings": (10, 16)}
N_CLASSES = 5
# Reduced widths keep the suite fast; full-size counts are asserted in test_backbones.py.
SMALL_KWARGS = {"cnn14": {"width": 8}, "mobilenet_v2": {"width_mult": 0.25}}


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name):
    """timm-style contract for every registered model: shape, logits, gradients, rebuild from spec."""
    torch.manual_seed(0)
    shape = SMALL_INPUTS[model_input_kind(name)]
    kwargs = SMALL_KWARGS.get(name, {})
    model = create_model(name, n_classes=N_CLASSES, input_shape=shape, **kwargs)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))

    model.train()
    out = model(x)
    assert out.shape == (3, N_CLASSES)
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    spec = model.audioclf_spec
    assert spec == {"name": name, "n_classes": N_CLASSES, "input_shape": shape, "kwargs": kwargs}
    rebuilt = create_model(spec["name"], spec["n_classes"], spec["input_shape"], **spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))


def test_fsd_simple_cnn_matches_report_parameter_counts():
    # A reference FSD2019 solution's Keras summary: 37,844 = 37,650 trainable + 194 non-trainable. The 194 are the
    # BatchNorm moving mean/variance (1 + 32 + 64 channels, x2); in PyTorch they are buffers, not parameters.
    model = create_model("fsd_simple_cnn", n_classes=80, input_shape=(1, 80, 92))
    assert _count(model) == 37_650
    running = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert running == 194
    assert _count(model) + running == 37_844
    model.eval()
    assert model(torch.randn(2, 1, 80, 92)).shape == (2, 80)


def test_fsd_simple_cnn_layer_order():
    model = create_model("fsd_simple_cnn", n_classes=10, input_shape=(1, 16, 16), hidden=8, dropout=0.25)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["BatchNorm2d", "Conv2d", "ReLU", "SafeMaxPool2d"] * 2
    head = [type(m).__name__ for m in model.head]
    assert head == ["BatchNorm1d", "Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[3].p == 0.25
    assert model.features[1].padding == (1, 1)  # "same" for 3x3


@pytest.mark.parametrize("shape", [(1, 40, 51), (1, 64, 101), (1, 80, 1000), (1, 3, 2), (2, 13, 7)])
def test_small_cnn_accepts_short_long_and_tiny_inputs(shape):
    model = create_model("small_cnn", n_classes=4, input_shape=shape).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 4)
    # Global pooling: a model built for one length also runs on another.
    with torch.no_grad():
        assert model(torch.randn(1, shape[0], shape[1], shape[2] * 3 + 1)).shape == (1, 4)


def test_small_cnn_parameter_count_by_hand():
    model = create_model("small_cnn", n_classes=10, input_shape=(1, 64, 101))
    convs = 1 * 16 * 9 + 16 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9  # bias-free 3x3 convs
    bns = 2 * (16 + 32 + 64 + 128)
    head = 2 * 128 * 10 + 10  # avg + max pooled features -> linear
    assert _count(model) == convs + bns + head


def test_mlp_parameter_count_and_structure():
    model = create_model("mlp", n_classes=10, input_shape=(1, 4, 5))
    assert _count(model) == (20 * 64 + 64) + 2 * (64 * 64 + 64) + (64 * 10 + 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 64), (64, 64), (64, 64), (64, 10)]


def test_mlp_list_hidden_activations_dropout_batchnorm():
    model = create_model(
        "mlp", n_classes=3, input_shape=(1, 6, 2), hidden=[10, 20], activation=["tanh", "gelu"],
        dropout=0.5, batch_norm=True,
    )
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Flatten", "Linear", "BatchNorm1d", "Tanh", "Dropout",
                     "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear"]
    assert model.layers[1].bias is None  # redundant before BatchNorm


def test_mixed_activation_cycles_relu_leaky_sigmoid():
    assert resolve_activations("mixed", 5) == ["relu", "leaky_relu", "sigmoid", "relu", "leaky_relu"]
    model = create_model("mlp", n_classes=2, input_shape=(1, 2, 2), depth=3, activation="mixed")
    acts = [m for m in model.layers if not isinstance(m, (nn.Linear, nn.Flatten))]
    assert [type(a) for a in acts] == [type(make_activation(n)) for n in MIXED_CYCLE]


def test_embedding_mlp_matches_darna_sequeiros_2018_design():
    model = create_model("embedding_mlp", n_classes=527, input_shape=(10, 128), depth=2)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1280, 1500), (1500, 1500), (1500, 527)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert model_input_kind("embedding_mlp") == "embeddings"


def test_waveform_mlp_is_three_dense_layers_of_64():
    model = create_model("waveform_mlp", n_classes=10, input_shape=(1000,))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1000, 64), (64, 64), (64, 10)]
    assert model_input_kind("waveform_mlp") == "waveform"


@pytest.mark.parametrize(
    "name, reference",
    [("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
     ("leaky_relu", lambda x: torch.where(x > 0, x, 0.01 * x)),
     ("elu", lambda x: torch.where(x > 0, x, torch.expm1(x))),
     ("silu", lambda x: x * torch.sigmoid(x)), ("Swish", lambda x: x * torch.sigmoid(x)),
     ("gelu", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
     ("LeakyReLU", lambda x: torch.where(x > 0, x, 0.01 * x))],
)
def test_activations_match_their_formulas(name, reference):
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    torch.testing.assert_close(make_activation(name)(x), reference(x))


def test_activation_errors_name_the_closest():
    with pytest.raises(ConfigError, match="'rleu'.*relu"):
        make_activation("rleu")
    with pytest.raises(ConfigError, match="2 entries; expected one per hidden layer \\(3\\)"):
        create_model("mlp", n_classes=2, input_shape=(1, 2, 2), activation=["relu", "tanh"])


def test_unknown_model_and_kwarg_errors_suggest_names():
    with pytest.raises(ConfigError, match="unknown model 'smal_cnn'.*small_cnn"):
        create_model("smal_cnn", n_classes=2, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="model 'mlp' has no argument 'hiden'.*hidden"):
        create_model("mlp", n_classes=2, input_shape=(1, 8, 8), hiden=3)
    with pytest.raises(ConfigError, match="unknown model"):
        model_input_kind("nope")


def test_bad_shapes_and_values_are_config_errors():
    with pytest.raises(ConfigError, match="waveform input: input_shape=\\(1, 8, 8\\)"):
        create_model("waveform_mlp", n_classes=2, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="n_classes=0"):
        create_model("mlp", n_classes=0, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="kernel_size=4"):
        create_model("small_cnn", n_classes=2, input_shape=(1, 8, 8), kernel_size=4)
    with pytest.raises(ConfigError, match="dropout=1.0"):
        create_model("fsd_simple_cnn", n_classes=2, input_shape=(1, 8, 8), dropout=1.0)


def test_model_kwargs_lists_defaults():
    assert model_kwargs("mlp") == {"hidden": 64, "depth": 3, "activation": "relu", "dropout": 0.0,
                                   "batch_norm": False}
    assert model_kwargs("fsd_simple_cnn") == {"channels": (32, 64), "hidden": 128, "dropout": 0.5,
                                              "kernel_size": 3, "activation": "relu"}


def test_register_model_new_family():
    @registry.register_model(input_kind="embeddings", example_input=(10, 16))
    def mean_pool_linear(n_classes, input_shape, scale: float = 1.0):
        return nn.Sequential(nn.Flatten(1), nn.Linear(math.prod(input_shape), n_classes))

    try:
        assert "mean_pool_linear" in registry.list_models()
        assert registry.model_kwargs("mean_pool_linear") == {"scale": 1.0}
        assert registry.model_entry("mean_pool_linear").example_input == (10, 16)
        model = registry.create_model("mean_pool_linear", 3, (10, 16), scale=2.0)
        assert model.audioclf_spec["kwargs"] == {"scale": 2.0} and registry.model_loss(model) == "task"
        assert model(torch.randn(2, 10, 16)).shape == (2, 3)
        with pytest.raises(ConfigError, match="already registered"):
            registry.register_model("mlp")(mean_pool_linear)
    finally:
        registry.MODELS.remove("mean_pool_linear")
    assert "mean_pool_linear" not in registry.list_models()
    with pytest.raises(TypeError, match="needs a default"):
        registry.register_model("bad")(lambda n_classes, input_shape, width: nn.Identity())
