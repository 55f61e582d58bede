"""Multi-layer perceptrons, and the activation helpers every model family shares.

``mlp`` flattens whatever it gets (a feature image, a waveform, a sequence of embeddings), so the same
function serves the GTZAN waveform MLP, its random architecture search (2-15 hidden layers of
10-128 units, one activation per layer) and the AudioSet embedding MLPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ..errors import ConfigError
from ..registry import did_you_mean
from .registry import register_model

__all__ = [
    "ACTIVATIONS",
    "MIXED_CYCLE",
    "make_activation",
    "resolve_activations",
    "MLP",
    "mlp",
    "waveform_mlp",
    "embedding_mlp",
]

# Name -> constructor. Leaky ReLU keeps PyTorch's slope 0.01 (the GTZAN reference trained in PyTorch; Keras: 0.3).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,  # swish(x) = x * sigmoid(x) = SiLU
    "gelu": nn.GELU,
}
# "mixed": a reference GTZAN project's extra configuration mixed ReLU, Leaky ReLU and Sigmoid over the layers.
MIXED_CYCLE: tuple[str, ...] = ("relu", "leaky_relu", "sigmoid")


def _normalize(name: str) -> str:
    # Accept the spellings people copy from Keras/PyTorch: "LeakyReLU", "leaky-relu", "Swish".
    key = str(name).strip().lower().replace("-", "_")
    return {"leakyrelu": "leaky_relu"}.get(key, key)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (relu, leaky_relu, sigmoid, tanh, elu, silu/swish, gelu)."""
    key = _normalize(name)
    if key not in ACTIVATIONS:
        raise ConfigError(f"unknown activation '{name}'{did_you_mean(key, ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def resolve_activations(activation: str | Sequence[str], n_layers: int) -> list[str]:
    """One activation name per layer: a single name repeated, ``"mixed"`` cycled, or a list as given."""
    if isinstance(activation, str):
        if _normalize(activation) == "mixed":
            return [MIXED_CYCLE[i % len(MIXED_CYCLE)] for i in range(n_layers)]
        make_activation(activation)  # validate now, not when the first layer is built
        return [activation] * n_layers
    names = list(activation)
    if len(names) != n_layers:
        raise ConfigError(f"activation has {len(names)} entries; expected one per hidden layer ({n_layers})")
    for name in names:
        make_activation(name)
    return names


def _hidden_sizes(hidden: int | Sequence[int], depth: int) -> list[int]:
    if isinstance(hidden, int | float) and not isinstance(hidden, bool):
        if int(depth) != depth or depth < 0:
            raise ConfigError(f"depth={depth}; expected a non-negative int (number of hidden layers)")
        sizes = [int(hidden)] * int(depth)
    else:
        sizes = [int(h) for h in hidden]
    if any(s < 1 for s in sizes):
        raise ConfigError(f"hidden={hidden!r}; every hidden layer needs at least 1 unit")
    return sizes


class MLP(nn.Module):
    """Flatten -> [Linear -> (BatchNorm) -> activation -> (Dropout)] x len(hidden) -> Linear (logits)."""

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        hidden: Sequence[int],
        activations: Sequence[str],
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout}; expected 0 <= dropout < 1")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size, act in zip(hidden, activations, strict=True):
            # BN makes the preceding bias redundant (it is subtracted away), so drop it.
            layers.append(nn.Linear(width, size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(make_activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _build(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int | Sequence[int],
    depth: int,
    activation: str | Sequence[str],
    dropout: float,
    batch_norm: bool,
) -> MLP:
    sizes = _hidden_sizes(hidden, depth)
    return MLP(math.prod(input_shape), n_classes, sizes, resolve_activations(activation, len(sizes)),
               float(dropout), bool(batch_norm))


@register_model(input_kind="features")
def mlp(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int | Sequence[int] = 64,
    depth: int = 3,
    activation: str | Sequence[str] = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> MLP:
    """MLP on a flattened input. ``hidden``: units per layer (int: ``depth`` layers of that size; list: one
    entry per layer, ``depth`` ignored). ``activation``: a name, one name per layer, or ``"mixed"``."""
    return _build(n_classes, input_shape, hidden, depth, activation, dropout, batch_norm)


@register_model(input_kind="waveform")
def waveform_mlp(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int | Sequence[int] = 64,
    depth: int = 2,
    activation: str | Sequence[str] = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> MLP:
    """A reference GTZAN project's model: MLP on the raw waveform with 3 dense layers, 64 hidden units
    (samples -> 64 -> 64 -> classes, i.e. ``depth=2`` hidden layers plus the output layer)."""
    return _build(n_classes, input_shape, hidden, depth, activation, dropout, batch_norm)


@register_model(input_kind="embeddings", example_input=(10, 128))
def embedding_mlp(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int | Sequence[int] = 1500,
    depth: int = 1,
    activation: str | Sequence[str] = "relu",
    dropout: float = 0.3,
    batch_norm: bool = False,
) -> MLP:
    """AudioSet MLP of Darna Sequeiros (2018): the (T, D) = (10, 128) embeddings flattened to 1280 inputs, 1-3
    hidden layers of 1500 ReLU units each followed by dropout 0.3 (``depth`` 1, 2 or 3)."""
    return _build(n_classes, input_shape, hidden, depth, activation, dropout, batch_norm)
