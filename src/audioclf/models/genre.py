"""Music-genre models after a reference GTZAN project: spectrogram CNN1 / CNN2 and the waveform-MLP search space.

CNN1 (its section 4, "Ejercicio 3"): conv 1->32 9x9 (padding 4) -> act -> maxpool 2 -> conv 32->64 3x3
(padding 1) -> act -> maxpool 2 -> flatten -> FC 128 -> act -> FC 128 -> act -> FC n_classes. On that project's
201 x 552 spectrograms (``n_fft=400`` -> 201 bins) the flattened size is 64 x 50 x 138 = 441,600 (the section's
own number), so the first FC alone holds 56.5M weights; here it is computed from ``input_shape``, so the same
model serves any spectrogram size. The head: "una única hidden layer con una entrada de 128 nodos y una salida
del mismo tamaño", a 128 -> 128 layer after the flatten -> 128 one, and the section's figures name both runs
"[128,128]" (read as its waveform MLP's "hidden de 64 nodos de entrada y de salida": samples -> 64 -> 64 -> out).
The project states no parameter count: 56,563,850 for 10 genres by our count.

CNN2: "3 conv layers: max pooling after the first two, average pooling after the last", then the same
FC head. The project gives no channel counts or kernel sizes for it; we keep CNN1's first two layers and
continue its doubling (32, 64, 128) with a 3x3 kernel.

``activation`` (the project's activation sweep): one name for every layer, ``"mixed"`` (ReLU, Leaky ReLU,
Sigmoid cycled over the layers) or a list with one name per layer (conv layers first, then the hidden FC layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .mlp import make_activation, resolve_activations
from .registry import register_model

__all__ = ["GenreCNN", "genre_cnn1", "genre_cnn2", "sample_mlp_architecture", "mlp_search_trials"]

# (out_channels, kernel, pool) per conv layer; "max"/"avg" 2x2 pooling after it.
_CNN1 = ((32, 9, "max"), (64, 3, "max"))
_CNN2 = ((32, 9, "max"), (64, 3, "max"), (128, 3, "avg"))


class GenreCNN(nn.Module):
    """[Conv k x k (same) -> act -> 2x2 pool] per layer -> flatten -> [FC -> act -> dropout] -> FC (logits)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        n_classes: int,
        convs: Sequence[tuple[int, int, str]],
        hidden: Sequence[int],
        activations: Sequence[str],
        dropout: float = 0.0,
    ):
        super().__init__()
        channels, height, width = input_shape
        acts = iter(activations)
        layers: list[nn.Module] = []
        for out, kernel, pool in convs:
            layers += [nn.Conv2d(channels, out, kernel, padding=kernel // 2), make_activation(next(acts)),
                       nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)]
            # Floor pooling (PyTorch's and Keras' default): an odd row/column is dropped.
            channels, height, width = out, height // 2, width // 2
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        size = channels * height * width
        for units in hidden:
            head += [nn.Linear(size, units), make_activation(next(acts))]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            size = units
        head.append(nn.Linear(size, n_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _hidden_list(name: str, hidden: int | Sequence[int]) -> list[int]:
    sizes = [int(hidden)] if isinstance(hidden, int | np.integer) else [int(h) for h in hidden]
    if any(s < 1 for s in sizes):
        raise ConfigError(f"{name}: hidden={hidden!r}; expected positive ints (units per hidden FC layer)")
    return sizes


def _build(name: str, convs: tuple, n_classes: int, input_shape: tuple[int, ...], hidden: int | Sequence[int],
           activation: str | Sequence[str], dropout: float) -> GenreCNN:
    smallest = 2 ** len(convs)
    if min(input_shape[1:]) < smallest:
        raise ConfigError(f"{name}: input_shape={input_shape} is too small; {len(convs)} 2x2 poolings need at "
                          f"least {smallest} x {smallest} (bins x frames)")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{name}: dropout={dropout}; expected 0 <= dropout < 1")
    sizes = _hidden_list(name, hidden)
    activations = resolve_activations(activation, len(convs) + len(sizes))
    return GenreCNN(tuple(input_shape), n_classes, convs, sizes, activations, float(dropout))


@register_model(input_kind="features", example_input=(1, 201, 552))
def genre_cnn1(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int | Sequence[int] = (128, 128),
    activation: str | Sequence[str] = "relu",
    dropout: float = 0.0,
) -> GenreCNN:
    """GTZAN CNN1: two conv layers (32 @ 9x9, 64 @ 3x3), each with 2x2 max pooling, FC 128, FC 128, FC out.
    ``activation`` takes 4 names as a list (conv1, conv2, FC1, FC2); ``dropout`` follows each hidden FC layer."""
    return _build("genre_cnn1", _CNN1, n_classes, input_shape, hidden, activation, dropout)


@register_model(input_kind="features", example_input=(1, 201, 552))
def genre_cnn2(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int | Sequence[int] = (128, 128),
    activation: str | Sequence[str] = "relu",
    dropout: float = 0.0,
) -> GenreCNN:
    """GTZAN CNN2 (section 4): three conv layers (32 @ 9x9, 64 @ 3x3, 128 @ 3x3) with max, max and average 2x2
    pooling, CNN1's head (FC 128, FC 128, FC out). ``activation`` takes 5 names as a list (conv1..conv3, FC1,
    FC2)."""
    return _build("genre_cnn2", _CNN2, n_classes, input_shape, hidden, activation, dropout)


# --- random MLP architecture search (GTZAN) ---------------------------------------------------
def sample_mlp_architecture(
    rng: np.random.Generator,
    min_depth: int = 2,
    max_depth: int = 15,
    min_width: int = 10,
    max_width: int = 128,
) -> dict[str, Any]:
    """One random MLP of the GTZAN search: depth uniform in ``min_depth..max_depth`` hidden layers, each with a
    width uniform in ``min_width..max_width`` (both inclusive, as in the reference project).

    Returns keyword arguments for the ``mlp`` / ``waveform_mlp`` models: ``{"depth": d, "hidden": [w1..wd]}``
    (plain ints and a list, so the dict is YAML/JSON-safe and can go straight into a config).
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    if not 1 <= min_depth <= max_depth:
        raise ConfigError(f"depth range {min_depth}..{max_depth}; expected 1 <= min_depth <= max_depth")
    if not 1 <= min_width <= max_width:
        raise ConfigError(f"width range {min_width}..{max_width}; expected 1 <= min_width <= max_width")
    depth = int(rng.integers(min_depth, max_depth + 1))
    widths = rng.integers(min_width, max_width + 1, size=depth)
    return {"depth": depth, "hidden": [int(w) for w in widths]}


def mlp_search_trials(
    n_trials: int = 10,
    seed: int = 0,
    min_depth: int = 2,
    max_depth: int = 15,
    min_width: int = 10,
    max_width: int = 128,
) -> list[dict[str, Any]]:
    """``n_trials`` architectures from :func:`sample_mlp_architecture` (the reference project ran 10), reproducible
    from ``seed``: trial ``k`` is the same whatever ``n_trials`` is."""
    if int(n_trials) != n_trials or n_trials < 1:
        raise ConfigError(f"n_trials={n_trials}; expected a positive int")
    rng = np.random.default_rng(seed)
    return [sample_mlp_architecture(rng, min_depth, max_depth, min_width, max_width) for _ in range(int(n_trials))]

