"""Embedding-sequence models on AudioSet embeddings (Gemmeke et al. 2017): shapes, the layer sizes of
Darna Sequeiros (2018, bachelor's thesis, Universidad Autónoma de Madrid), bipolar loss, attention pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from audioclf.errors import ConfigError
from audioclf.models import create_model, model_input_kind, model_loss
from audioclf.models.classifier import AudioClassifier
from audioclf.training.losses import BipolarMSELoss, MultiLabelLoss, build_loss


def loss_for(model: nn.Module) -> nn.Module:
    """The loss the model's registration asks for, on the multi-label task of these models."""
    return build_loss("multi_label", kind=model_loss(model))

SEQUENCE_MODELS = ["embedding_mlp_s5", "embedding_cnn1d", "embedding_lstm", "attention_pooling"]
VARIANTS = [
    ("embedding_mlp_s5", {}),
    ("embedding_mlp_s5", {"depth": 3, "hidden": 32, "output": "bipolar"}),
    ("embedding_cnn1d", {}),
    ("embedding_cnn1d", {"per_dimension": False, "channels": 8}),
    ("embedding_lstm", {"hidden": 24, "dense": 16}),
    ("embedding_lstm", {"hidden": 24, "layers": 2, "bidirectional": True}),
    ("attention_pooling", {"hidden": 32}),
    ("attention_pooling", {"hidden": 32, "layers": 1, "attention": "sigmoid"}),
]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _x(batch: int = 4, steps: int = 10, dim: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, steps, dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("name,kwargs", VARIANTS)
def test_forward_backward_shapes_and_rebuild(name, kwargs):
    assert model_input_kind(name) == "embeddings"
    torch.manual_seed(0)
    model = create_model(name, n_classes=527, input_shape=(10, 128), **kwargs)
    x = _x()
    logits = model(x)
    assert logits.shape == (4, 527) and torch.isfinite(logits).all()
    loss_for(model)(logits, (torch.rand(4, 527) < 0.02).float()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # every parameter takes part
    rebuilt = create_model(**{k: v for k, v in model.audioclf_spec.items() if k != "kwargs"},
                           **model.audioclf_spec["kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert model_loss(rebuilt) == model_loss(model)


def test_mlp_sizes_match_darna_sequeiros_2018():
    # Darna Sequeiros (2018)'s MLP: 1280 inputs, hidden layers of 1500 with dropout 0.3, 527 outputs.
    for depth in (1, 2, 3):
        model = create_model("embedding_mlp_s5", 527, (10, 128), depth=depth)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == \
            [(1280, 1500)] + [(1500, 1500)] * (depth - 1) + [(1500, 527)]
        assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3] * depth
        assert _count(model) == 1280 * 1500 + 1500 + (depth - 1) * (1500 * 1500 + 1500) + 1500 * 527 + 527


def test_cnn_matches_keras_conv2d_3x1_maxpool_dense600():
    # CNNAudioSet.py: Conv2D(16, (3, 1)) on (10, 128, 1) -> (8, 128, 16); MaxPooling2D -> (4, 64, 16);
    # Flatten 4096 -> Dense 600 -> Dense 527. Keras counts: 64 + 2,458,200 + 316,727.
    model = create_model("embedding_cnn1d", 527, (10, 128))
    assert _count(model) == (3 * 16 + 16) + (4 * 64 * 16 * 600 + 600) + (600 * 527 + 527) == 2_774_991
    # The convolution runs along time only, with the same filter for every embedding dimension.
    model.eval()
    x = _x(batch=1)
    shifted = x.clone()
    shifted[0, :, 5] += 0.7  # change dimension 5 only
    with torch.no_grad():
        a, b = torch.relu(model.conv(x.unsqueeze(1))), torch.relu(model.conv(shifted.unsqueeze(1)))
    changed = (a - b).abs().sum(dim=(0, 1, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [5]
    with pytest.raises(ConfigError, match="2 time steps < kernel_size=3"):
        create_model("embedding_cnn1d", 5, (2, 16))


def test_lstm_is_keras_lstm600_dense600_with_forget_bias_one():
    model = create_model("embedding_lstm", 527, (10, 128))
    keras = 4 * (128 * 600 + 600 * 600 + 600) + (600 * 600 + 600) + (600 * 527 + 527)
    assert keras == 2_426_927
    assert _count(model) == keras + 4 * 600  # torch keeps two bias vectors per gate (bias_ih + bias_hh)
    bias = model.lstm.bias_ih_l0 + model.lstm.bias_hh_l0
    assert bias[600:1200].eq(1).all() and bias[:600].eq(0).all() and bias[1200:].eq(0).all()
    # The classifier sees the LSTM's last output only (return_sequences=False).
    model.eval()
    x = _x()
    with torch.no_grad():
        out, _ = model.lstm(x)
        torch.testing.assert_close(model(x), model.head(out[:, -1]))


def test_bipolar_output_tanh_mse_and_probabilities():
    torch.manual_seed(1)
    model = create_model("embedding_mlp_s5", 6, (10, 8), hidden=16, output="bipolar").eval()
    assert model_loss(model) == "bipolar_mse" and isinstance(loss_for(model), BipolarMSELoss)
    assert isinstance(loss_for(create_model("embedding_mlp_s5", 6, (10, 8))), MultiLabelLoss)
    assert isinstance(loss_for(AudioClassifier(model, None)), BipolarMSELoss)  # looks through the wrapper
    x = _x(batch=3, dim=8)
    with torch.no_grad():
        z = model.mlp(x)  # pre-tanh activation
        logits = model(x)
    # sigmoid(logits) is the (tanh + 1) / 2 mapping of bipolar outputs in Darna Sequeiros (2018), Annex A
    # (its mavprbip).
    torch.testing.assert_close(torch.sigmoid(logits), (torch.tanh(z) + 1) / 2)
    targets = torch.tensor([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.float32)
    expected = ((torch.tanh(z) - (2 * targets - 1)) ** 2).mean()
    torch.testing.assert_close(BipolarMSELoss()(logits, targets), expected)
    # hand case: output tanh = 0 everywhere -> every error is 1
    assert BipolarMSELoss()(torch.zeros(2, 3), torch.tensor([[1.0, 0, 1], [0, 0, 0]])).item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="output='ternary'"):
        create_model("embedding_mlp_s5", 6, (10, 8), output="ternary")


@pytest.mark.parametrize("attention", ["softmax", "sigmoid"])
def test_attention_pooling_is_the_attention_weighted_mean_of_step_probabilities(attention):
    torch.manual_seed(2)
    model = create_model("attention_pooling", 7, (10, 16), hidden=12, layers=2, attention=attention).eval()
    x = _x(batch=3, dim=16)
    with torch.no_grad():
        h = model.embedding(model.input_norm(x.transpose(1, 2))).double()
        z = nn.functional.conv1d(h, model.classifier.weight.double(), model.classifier.bias.double())
        a = nn.functional.conv1d(h, model.attend.weight.double(), model.attend.bias.double())
        v = torch.exp(a) if attention == "softmax" else torch.sigmoid(a).clamp(1e-7, 1 - 1e-7)
        weights = v / v.sum(dim=-1, keepdim=True)
        y = (weights * torch.sigmoid(z)).sum(dim=-1)  # Kong et al. 2018: sum_t p(x_t) f(x_t)
        logits = model(x)
    torch.testing.assert_close(torch.sigmoid(logits).double(), y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.attention_weights(x).double(), weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.attention_weights(x).sum(-1), torch.ones(3, 7))


def test_attention_pooling_logit_is_finite_for_saturated_steps():
    model = create_model("attention_pooling", 2, (4, 8), hidden=8, layers=1).eval()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([60.0, -60.0]))  # sigmoid 1 - 1e-26 and 1e-26
        model.classifier.weight.zero_()
        model.attend.weight.zero_()  # uniform attention
    x = _x(batch=2, steps=4, dim=8).requires_grad_()
    logits = model(x)
    torch.testing.assert_close(logits, torch.tensor([[60.0, -60.0], [60.0, -60.0]]), atol=1e-4, rtol=0)
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ConfigError, match="attention='max'"):
        create_model("attention_pooling", 2, (4, 8), attention="max")


def test_short_training_reduces_the_loss_of_every_model():
    """A few Adam steps on a learnable toy problem: the loss each model asks for goes down."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(64, 10, 16, generator=generator) * 2 - 1
    targets = (x[:, :, :4].amax(dim=1) > 0.9).float()  # class c: some step has a high value in dimension c
    extra = {"embedding_lstm": {"dense": 32}, "attention_pooling": {"dropout": 0.0},
             "embedding_mlp_s5": {"output": "bipolar"}}
    for name in SEQUENCE_MODELS:
        torch.manual_seed(0)
        model = create_model(name, 4, (10, 16), hidden=32, **extra.get(name, {}))
        loss_fn = loss_for(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            loss = loss_fn(model(x), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.6 * losses[0], (name, losses[0], losses[-1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_cuda_matches_cpu(name):
    torch.manual_seed(0)
    model = create_model(name, 527, (10, 128)).eval()
    x = _x()
    with torch.no_grad():
        expected = model(x)
        got = model.to("cuda")(x.to("cuda")).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
