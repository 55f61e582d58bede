"""Models over sequences of embeddings: input (B, T, D) = (B, 10, 128) AudioSet embeddings (Gemmeke et al. 2017).

Every model returns logits (B, C) and trains with the multi-label BCE, except the bipolar MLP, whose
registration declares ``"bipolar_mse"`` (tanh outputs against ±1 targets with mean squared error, see
:class:`audioclf.training.losses.BipolarMSELoss`). The first three follow J. Darna Sequeiros, "Redes neuronales
profundas para reconocimiento de eventos acústicos" (bachelor's thesis, Universidad Autónoma de Madrid, 2018),
whose code annex holds ``MLPAudioSet.py``, ``CNNAudioSet.py`` and ``LSTMAudioSet.py``.

* ``embedding_mlp_s5`` — ``MLPAudioSet.py``: flatten 10x128 -> 1-3 hidden
  layers of 1500 ReLU units, each followed by dropout 0.3 -> 527 outputs, sigmoid ("binary") or tanh
  ("bipolar"). (``models/mlp.py``'s ``embedding_mlp`` is the same network without the bipolar option.)
* ``embedding_cnn1d`` — ``CNNAudioSet.py``: Conv2D(16, (3, 1), relu) over the
  (time, dimension) image, i.e. a convolution over time shared by every embedding dimension ->
  MaxPooling2D(2, 2) -> dropout 0.3 -> flatten -> Dense 600 relu -> output. ``per_dimension=False`` gives
  the usual 1-D CNN instead (the D values are the channels of a Conv1d over time).
* ``embedding_lstm`` — ``LSTMAudioSet.py``: LSTM 600 returning its last output ->
  dropout 0.3 -> Dense 600 relu -> output; the thesis's best model (mAP 0.244).
* ``attention_pooling`` — Kong, Yu, Xu, Iqbal, Wang & Plumbley, "Audio Set classification with attention
  model: A probabilistic perspective", ICASSP 2018 (arXiv:1711.00927); mAP 0.327 in the paper.
  Embedding mapping (BatchNorm on the input, then fully connected layers applied to
  every time step, each BatchNorm -> ReLU -> dropout), then two heads per time step: a classifier
  ``f(x_t) = sigmoid(W_c h_t + b_c)`` and an attention ``v(x_t)`` normalised over time,
  ``p(x_t) = v(x_t) / sum_t v(x_t)``; the clip output is ``y = sum_t p(x_t) f(x_t)`` per class.
  ``attention="softmax"`` takes ``v = exp(W_a h_t + b_a)`` (a softmax over time); ``"sigmoid"`` takes
  ``v = clamp(sigmoid(.), 1e-7, 1 - 1e-7)`` as the authors' released code does. Defaults follow that code
  (github.com/qiuqiangkong/audioset_classification: 3 layers of 1024 units, dropout 0.5).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .mlp import MLP
from .registry import register_model

__all__ = [
    "EmbeddingMLP",
    "EmbeddingCNN",
    "EmbeddingLSTM",
    "AttentionPooling",
    "embedding_mlp_s5",
    "embedding_cnn1d",
    "embedding_lstm",
    "attention_pooling",
]

# The loss each output coding trains with ("task": the multi-label BCE).
OUTPUTS = {"binary": "task", "bipolar": "bipolar_mse"}


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout={dropout}; expected 0 <= dropout < 1")
    return float(dropout)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(f"{name}={value!r}; expected a positive int")
    return int(value)


# --- MLP ------------------------------------------------------------------------------------------
class EmbeddingMLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] x depth -> Linear; bipolar outputs return ``2 z``."""

    def __init__(self, in_features: int, n_classes: int, hidden: int, depth: int, dropout: float, output: str):
        super().__init__()
        self.mlp = MLP(in_features, n_classes, [hidden] * depth, ["relu"] * depth, dropout)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.mlp(x)
        return 2 * z if self.output == "bipolar" else z


@register_model(input_kind="embeddings", example_input=(10, 128), loss=lambda args: OUTPUTS[args["output"]])
def embedding_mlp_s5(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int = 1500,
    depth: int = 1,
    dropout: float = 0.3,
    output: str = "binary",
) -> EmbeddingMLP:
    """Darna Sequeiros (2018), ``MLPAudioSet.py``: 1-3 hidden layers (``depth``) of 1500 ReLU units + dropout
    0.3; ``output`` "binary" (sigmoid + BCE) or "bipolar" (tanh, ±1 targets, MSE)."""
    if output not in OUTPUTS:
        raise ConfigError(f"model 'embedding_mlp_s5': output={output!r}; expected 'binary' or 'bipolar'")
    return EmbeddingMLP(math.prod(input_shape), n_classes, _positive("hidden", hidden), _positive("depth", depth),
                        _check_dropout(dropout), output)


# --- CNN ------------------------------------------------------------------------------------------
class EmbeddingCNN(nn.Module):
    """Convolution over time, max pooling, dropout, dense layer, output."""

    def __init__(self, input_shape: tuple[int, int], n_classes: int, channels: int, kernel_size: int, pool: int,
                 hidden: int, dropout: float, per_dimension: bool):
        super().__init__()
        steps, dim = input_shape
        if steps < kernel_size:
            raise ConfigError(f"model 'embedding_cnn1d': {steps} time steps < kernel_size={kernel_size}")
        self.per_dimension = per_dimension
        conv_steps = steps - kernel_size + 1  # 'valid' convolution, as Keras' default
        if per_dimension:
            # Keras Conv2D(channels, (k, 1)) on a (T, D, 1) image + MaxPooling2D((pool, pool)).
            self.conv = nn.Conv2d(1, channels, kernel_size=(kernel_size, 1))
            self.pool = nn.MaxPool2d(pool)
            flat = channels * (conv_steps // pool) * (dim // pool)
        else:
            self.conv = nn.Conv1d(dim, channels, kernel_size=kernel_size)
            self.pool = nn.MaxPool1d(pool)
            flat = channels * (conv_steps // pool)
        if flat == 0:
            raise ConfigError(f"model 'embedding_cnn1d': input {input_shape} is too small for pool={pool}")
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1) if self.per_dimension else x.transpose(1, 2)  # (B, 1, T, D) or (B, D, T)
        x = self.pool(F.relu(self.conv(x)))
        if self.per_dimension:
            # Keras flattens channels-last (T', D', C); match it so weights map one to one.
            x = x.permute(0, 2, 3, 1)
        else:
            x = x.transpose(1, 2)
        return self.head(x)


@register_model(input_kind="embeddings", example_input=(10, 128))
def embedding_cnn1d(
    n_classes: int,
    input_shape: tuple[int, ...],
    channels: int = 16,
    kernel_size: int = 3,
    pool: int = 2,
    hidden: int = 600,
    dropout: float = 0.3,
    per_dimension: bool = True,
) -> EmbeddingCNN:
    """Darna Sequeiros (2018), ``CNNAudioSet.py``: 16 filters of 3x1 (time x dimension), 2x2 max pooling,
    dropout 0.3, Dense 600."""
    return EmbeddingCNN(tuple(input_shape), n_classes, _positive("channels", channels),
                        _positive("kernel_size", kernel_size), _positive("pool", pool), _positive("hidden", hidden),
                        _check_dropout(dropout), bool(per_dimension))


# --- LSTM -----------------------------------------------------------------------------------------
class EmbeddingLSTM(nn.Module):
    """LSTM over the time steps; its last output -> dropout -> Dense relu -> output."""

    def __init__(self, dim: int, n_classes: int, hidden: int, layers: int, dense: int, dropout: float,
                 bidirectional: bool):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        # Keras' LSTM starts with forget-gate bias 1 (unit_forget_bias=True), which the thesis trained with;
        # torch's gate order is (input, forget, cell, output) and it adds bias_ih + bias_hh.
        for name, param in self.lstm.named_parameters():
            if name.startswith("bias_ih"):
                with torch.no_grad():
                    param.zero_()
                    param[hidden:2 * hidden] = 1.0
            elif name.startswith("bias_hh"):
                with torch.no_grad():
                    param.zero_()
        width = hidden * (2 if bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, dense), nn.ReLU(), nn.Linear(dense, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        if self.lstm.bidirectional:
            # Last step of the forward direction, first step of the backward one (each has seen everything).
            half = out.shape[-1] // 2
            last = torch.cat([out[:, -1, :half], out[:, 0, half:]], dim=-1)
        else:
            last = out[:, -1]
        return self.head(last)


@register_model(input_kind="embeddings", example_input=(10, 128))
def embedding_lstm(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int = 600,
    layers: int = 1,
    dense: int = 600,
    dropout: float = 0.3,
    bidirectional: bool = False,
) -> EmbeddingLSTM:
    """Darna Sequeiros (2018), ``LSTMAudioSet.py``: LSTM(600) -> dropout 0.3 -> Dense 600 relu -> output (mAP 0.244)."""
    return EmbeddingLSTM(int(input_shape[1]), n_classes, _positive("hidden", hidden), _positive("layers", layers),
                         _positive("dense", dense), _check_dropout(dropout), bool(bidirectional))


# --- attention pooling (Kong et al. 2018) ---------------------------------------------------------
class AttentionPooling(nn.Module):
    """Decision-level attention: per-step classifier and attention heads, attention-weighted average."""

    def __init__(self, dim: int, n_classes: int, hidden: int, layers: int, dropout: float, attention: str):
        super().__init__()
        self.attention = attention
        self.input_norm = nn.BatchNorm1d(dim)
        blocks: list[nn.Module] = []
        width = dim
        for _ in range(layers):
            # Bias-free because BatchNorm follows (the reference uses bias-free 1x1 convolutions).
            blocks += [nn.Conv1d(width, hidden, kernel_size=1, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                       nn.Dropout(dropout)]
            width = hidden
        self.embedding = nn.Sequential(*blocks)
        self.classifier = nn.Conv1d(width, n_classes, kernel_size=1)  # a Linear applied to every time step
        self.attend = nn.Conv1d(width, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embedding(self.input_norm(x.transpose(1, 2)))  # (B, H, T)
        z = self.classifier(h)  # (B, C, T): per-step class logits
        a = self.attend(h)
        if self.attention == "softmax":
            log_weights = torch.log_softmax(a, dim=-1)
        else:
            v = torch.sigmoid(a).clamp(1e-7, 1 - 1e-7)
            log_weights = torch.log(v) - torch.log(v.sum(dim=-1, keepdim=True))
        # y = sum_t w_t sigmoid(z_t) and 1 - y = sum_t w_t sigmoid(-z_t) because the weights sum to 1, so the
        # logit of y is a difference of two log-sum-exps: exact, and finite even when y is within 1e-30 of 0/1.
        log_y = torch.logsumexp(log_weights + F.logsigmoid(z), dim=-1)
        log_not_y = torch.logsumexp(log_weights + F.logsigmoid(-z), dim=-1)
        return log_y - log_not_y

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) normalised attention over time for each class (sums to 1 over T)."""
        h = self.embedding(self.input_norm(x.transpose(1, 2)))
        a = self.attend(h)
        if self.attention == "softmax":
            return torch.softmax(a, dim=-1)
        v = torch.sigmoid(a).clamp(1e-7, 1 - 1e-7)
        return v / v.sum(dim=-1, keepdim=True)


@register_model(input_kind="embeddings", example_input=(10, 128))
def attention_pooling(
    n_classes: int,
    input_shape: tuple[int, ...],
    hidden: int = 1024,
    layers: int = 3,
    dropout: float = 0.5,
    attention: str = "softmax",
) -> AttentionPooling:
    """Kong et al. 2018 decision-level attention (see the module docstring); ``attention`` "softmax" or "sigmoid"."""
    if attention not in ("softmax", "sigmoid"):
        raise ConfigError(f"model 'attention_pooling': attention={attention!r}; expected 'softmax' or 'sigmoid'")
    return AttentionPooling(int(input_shape[1]), n_classes, _positive("hidden", hidden), _positive("layers", layers),
                            _check_dropout(dropout), attention)

