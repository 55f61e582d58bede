"""Transfer learning: a pretrained backbone (ResNet-50, MobileNetV2, PANNs CNN14) plus a new head.

The backbones themselves live in ``resnet.py``, ``mobilenet.py`` and ``panns.py`` with module and parameter
names identical to torchvision / the PANNs release, so a user's weight file loads with ``strict=True``
(nothing is downloaded here; ``weights`` is always a local path). This module holds what they share:

* :class:`ImageInput`: (B, 1, F, T) log-mel image -> (B, 3, F, T) for ImageNet backbones, optionally mapped
  to a 0-255 image (as a reference FSD2019 solution did) and normalised with the ImageNet mean/std the weights
  were trained with;
* :func:`build_head`: ``"dense"`` (global pooling -> 512 -> 256 with dropout, from that solution),
  ``"simple_cnn"`` (the FSD2019 simple CNN of ``cnn.py`` on the backbone's feature map) or ``"linear"``;
* :func:`load_backbone_weights`: reads a state_dict / checkpoint file, keeps the backbone part, ignores the
  original classifier, and fails with one line naming the file and the first keys that do not fit;
* :class:`TransferClassifier`: adapter -> backbone -> head, with the block layout ``freeze.py`` needs.

A backbone module provides ``forward_features(x) -> (B, C, H, W)``, ``pool(map) -> (B, D)``,
``feature_channels`` (C), ``embedding_dim`` (D), ``freeze_blocks()`` (ordered block name -> child module
names, input to output) and ``ignored_weight_prefixes`` (keys of a weight file that are not backbone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, UnsafeFileError
from ..files import load_torch_file
from ..features import image_scale
from .cnn import FSDSimpleCNN
from .freeze import apply_freeze_policy, sync_batchnorm_modes
from .mlp import MLP

__all__ = [
    "HEADS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageInput",
    "TransferClassifier",
    "check_head",
    "build_head",
    "read_state_dict",
    "load_backbone_weights",
    "build_transfer_model",
]

HEADS = ("dense", "simple_cnn", "linear")
# torchvision's ImageNet normalisation (transforms.Normalize in every torchvision weights recipe).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SCALINGS = ("standardized", "imagenet")
# Wrappers a checkpoint may put around the state_dict: PANNs uses {"model": ...}, Lightning "state_dict".
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_SHOWN_KEYS = 3  # how many offending keys an error names before "+N more"


class ImageInput(nn.Module):
    """Make a (B, C, F, T) feature image look like the (B, 3, H, W) images an ImageNet backbone expects.

    ``scaling="standardized"`` passes the (already standardised) values through; ``"imagenet"`` maps each
    example to a 0-255 image (per-example min-max, as a reference FSD2019 solution did before its ImageNet
    backbones), then applies torchvision's ``/255`` and ImageNet mean/std, the input statistics the pretrained
    weights saw.
    One input channel is repeated to three: all three pretrained colour filters then see the same image.
    """

    def __init__(self, in_channels: int, scaling: str = "standardized"):
        super().__init__()
        if in_channels not in (1, 3):
            raise ConfigError(f"input_shape has {in_channels} channels; ImageNet backbones take 1 (repeated) or 3")
        if scaling not in _SCALINGS:
            raise ConfigError(f"input_scaling={scaling!r}; expected one of {', '.join(_SCALINGS)}")
        self.in_channels = in_channels
        self.scaling = scaling
        # Non-persistent: constants, not state; checkpoints stay free of them.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scaling == "imagenet":
            x = image_scale(x) / 255.0  # that solution's 0-255 image, then torchvision's ToTensor range
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.scaling == "imagenet":
            x = (x - self.mean) / self.std
        return x


# --- heads --------------------------------------------------------------------------------------
# The FSD2019 simple CNN's dense width (cnn.fsd_simple_cnn's default hidden=128), reused as a head.
_SIMPLE_CNN_HIDDEN = 128


def check_head(kind: str) -> None:
    """Fail early (before a large backbone is built) on an unknown head name."""
    if kind not in HEADS:
        raise ConfigError(f"head={kind!r}; expected one of {', '.join(HEADS)}")


def build_head(
    kind: str,
    n_classes: int,
    feature_channels: int,
    embedding_dim: int,
    hidden: Sequence[int] = (512, 256),
    channels: Sequence[int] = (32, 64),
    dropout: float = 0.5,
) -> tuple[nn.Module, str]:
    """The head module and what it reads: ``"vector"`` (the backbone's pooled embedding) or ``"map"``.

    * ``"linear"``: one Linear on the embedding (PANNs' transfer recipe; no dropout);
    * ``"dense"``: the embedding -> ``hidden`` ReLU layers, each followed by ``dropout`` -> logits (a reference FSD2019
      solution used 512 and 256 units; ``hidden=(256,)`` with dropout 0 is its frozen-backbone head);
    * ``"simple_cnn"``: the FSD2019 simple CNN (:class:`FSDSimpleCNN`: per block BatchNorm -> Conv 3x3 -> ReLU ->
      MaxPool, global average pooling, BatchNorm, Dense 128, Dropout, Dense) on the backbone's feature map.
    """
    check_head(kind)
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout={dropout}; expected 0 <= dropout < 1")
    if kind == "linear":
        return nn.Linear(embedding_dim, n_classes), "vector"
    if kind == "dense":
        sizes = [int(h) for h in ([hidden] if isinstance(hidden, int) else hidden)]
        if any(s < 1 for s in sizes):
            raise ConfigError(f"head_hidden={list(sizes)}; expected positive layer widths")
        return MLP(embedding_dim, n_classes, sizes, ["relu"] * len(sizes), float(dropout)), "vector"
    widths = [int(c) for c in ([channels] if isinstance(channels, int) else channels)]
    if not widths or any(c < 1 for c in widths):
        raise ConfigError(f"head_channels={list(widths)}; expected one positive int per conv block")
    head = FSDSimpleCNN(feature_channels, n_classes, widths, _SIMPLE_CNN_HIDDEN, float(dropout), 3, "relu")
    return head, "map"


# --- the model ----------------------------------------------------------------------------------
class EmbeddingStandardizer(nn.Module):
    """Per-dimension standardisation of the pooled embedding, statistics from the training set (a linear probe
    on raw embeddings depends on their scale: a backbone whose embeddings are ~1e-2 would need weights 100x
    larger, which weight decay and a default learning rate never reach)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, vectors: torch.Tensor) -> None:
        vectors = vectors.double()
        self.mean.copy_(vectors.mean(0).to(self.mean))
        self.std.copy_(vectors.std(0, correction=0).clamp_min(1e-6).to(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TransferClassifier(nn.Module):
    """Feature image (B, C, F, T) -> ``adapter`` -> ``backbone`` -> ``head`` -> logits (B, n_classes).

    ``arch`` names the backbone family (the freeze presets check it). In train mode, BatchNorm layers whose
    parameters are all frozen stay in eval mode, so their running statistics keep the pretrained values
    (what Keras does for ``trainable=False`` layers, and what that FSD2019 solution's frozen backbones did).
    """

    def __init__(self, arch: str, adapter: nn.Module, backbone: nn.Module, head: nn.Module, head_input: str,
                 embedding_norm: bool = False):
        super().__init__()
        if head_input not in ("vector", "map"):
            raise ValueError(f"head_input={head_input!r}; expected 'vector' or 'map'")
        if embedding_norm and head_input != "vector":
            raise ConfigError("embedding_norm needs an embedding head (linear or dense); this head reads the "
                              "feature map")
        self.arch = arch
        self.adapter = adapter
        self.backbone = backbone
        self.embedding_norm = EmbeddingStandardizer(backbone.embedding_dim) if embedding_norm else None
        self.head = head
        self.head_input = head_input

    def freeze_blocks(self) -> dict[str, tuple[str, ...]]:
        """Backbone blocks, input to output: block name -> names of its modules inside ``backbone``."""
        return self.backbone.freeze_blocks()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled embedding (B, embedding_dim), before ``embedding_norm``."""
        return self.backbone.pool(self.backbone.forward_features(self.adapter(x)))

    def probe(self) -> nn.Module:
        """Embedding (B, embedding_dim) -> logits: the part of a ``"vector"`` model after :meth:`embed`."""
        return nn.Sequential(*[m for m in (self.embedding_norm, self.head) if m is not None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_input == "vector":
            embedding = self.embed(x)
            return self.head(self.embedding_norm(embedding) if self.embedding_norm is not None else embedding)
        return self.head(self.backbone.forward_features(self.adapter(x)))

    def train(self, mode: bool = True) -> "TransferClassifier":
        super().train(mode)
        sync_batchnorm_modes(self)
        return self


# --- weights ------------------------------------------------------------------------------------
def _first(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file: a plain state_dict, ``{"model": state_dict, ...}`` (PANNs, audioclf run
    checkpoints) or ``{"state_dict": ...}``, read with the tensors-only loader (a pickled module, or any file
    naming other Python objects, is refused before it runs: :func:`audioclf.files.load_torch_file`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights: {path} not found; expected a state_dict file saved with torch.save")
    try:
        obj = load_torch_file(path)
    except UnsafeFileError as exc:
        raise ConfigError(f"weights: {exc}") from None
    except Exception as exc:  # KeyError/EOFError/RuntimeError: not a torch file at all
        raise ConfigError(f"weights: cannot read {path} as a PyTorch file ({_one_line(exc)})") from None
    while isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {str(k): v for k, v in obj.items() if torch.is_tensor(v)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise ConfigError(f"weights: {path} holds no state_dict (no tensors found); expected "
                          "torch.save(model.state_dict(), path) or a checkpoint with a 'model' key")
    return tensors


def _backbone_part(state: dict[str, torch.Tensor], expected: list[str]) -> dict[str, torch.Tensor]:
    """Strip the prefix under which the backbone sits in ``state``: none (torchvision, PANNs), ``module.``
    (DataParallel) or ``backbone.backbone.`` (an audioclf run checkpoint, for two-stage training)."""
    anchor = expected[0]
    candidates = sorted({k[: len(k) - len(anchor)] for k in state if k == anchor or k.endswith("." + anchor)})
    if not candidates:
        return state
    wanted = set(expected)

    def matches(prefix: str) -> int:
        return sum(1 for k in state if k.startswith(prefix) and k[len(prefix):] in wanted)

    prefix = max(candidates, key=matches)  # ties keep the shortest (sorted first)
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_backbone_weights(backbone: nn.Module, path: str | Path, name: str = "backbone") -> None:
    """Load the backbone part of the weight file ``path`` into ``backbone``, strictly.

    Keys under ``backbone.ignored_weight_prefixes`` (the original classifier, PANNs' STFT/mel front-end)
    are dropped; every other backbone key must be present with the same shape and nothing else may be
    left over, else :class:`ConfigError` names the file and the first offending keys. ``path="pretrained"``
    takes the publisher's checkpoint of model ``name`` (downloaded once, checksum-checked:
    :mod:`audioclf.models.pretrained`).
    """
    if str(path) == "pretrained":
        from .pretrained import pretrained_path

        path = pretrained_path(name)
    expected = backbone.state_dict()
    state = _backbone_part(read_state_dict(path), list(expected))
    ignored = tuple(getattr(backbone, "ignored_weight_prefixes", ()))
    state = {k: v for k, v in state.items() if not (ignored and k.startswith(ignored))}
    # Checkpoints from before PyTorch 0.4.1 lack num_batches_tracked; BatchNorm fills it in when loading.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (file {tuple(v.shape)}, model {tuple(expected[k].shape)})"
                  for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    problems = [f"{label} {_first(keys)}" for label, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)) if keys]
    if problems:
        raise ConfigError(f"weights {path} do not fit the {name} backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state, strict=True)


def build_transfer_model(
    arch: str,
    adapter: nn.Module,
    backbone: nn.Module,
    n_classes: int,
    head: str,
    head_hidden: Sequence[int],
    head_channels: Sequence[int],
    dropout: float,
    freeze: str,
    embedding_norm: bool = False,
) -> TransferClassifier:
    """Put a new head on a (weight-loaded) backbone and apply the freeze policy (see ``freeze.py``);
    ``embedding_norm``: standardise the embedding before the head (:class:`EmbeddingStandardizer`)."""
    head_module, head_input = build_head(head, n_classes, backbone.feature_channels, backbone.embedding_dim,
                                         head_hidden, head_channels, dropout)
    model = TransferClassifier(arch, adapter, backbone, head_module, head_input, bool(embedding_norm))
    apply_freeze_policy(model, freeze)
    return model
