"""Model registry (timm style): a model is one function plus ``@register_model``.

A registered function has the signature ``fn(n_classes, input_shape, **kwargs) -> nn.Module`` where every
keyword argument has a default (so ``model_kwargs`` can list them and a config can override any of them).
``create_model`` validates the name and the keyword arguments, builds the module and stamps it with
``audioclf_spec`` so a checkpoint can rebuild it without the config that created it.

Input kinds (the shape a model's ``forward`` takes, batch first; ``input_shape`` excludes the batch):

* ``"features"``   -> (B, C, F, T), usually C = 1 (log-mel / MFCC image); ``input_shape=(C, F, T)``
* ``"waveform"``   -> (B, N) raw samples; ``input_shape=(N,)``
* ``"embeddings"`` -> (B, T, D) a sequence of embeddings (AudioSet); ``input_shape=(T, D)``

Models return logits; softmax / sigmoid belong to the loss and to ``train.losses.probabilities``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = [
    "INPUT_KINDS",
    "ModelEntry",
    "register_model",
    "create_model",
    "list_models",
    "model_input_kind",
    "model_kwargs",
]

# Rank of ``input_shape`` (batch excluded) each input kind expects.
INPUT_KINDS: dict[str, int] = {"features": 3, "waveform": 1, "embeddings": 2}
# Positional parameters every model function takes; everything else is a keyword argument.
_FIXED_PARAMS = ("n_classes", "input_shape")

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its builder, input kind and accepted keyword arguments (with defaults)."""

    name: str
    fn: ModelFn
    input_kind: str
    kwargs: dict[str, Any]


_REGISTRY: dict[str, ModelEntry] = {}


def _hint(key: str, valid: list[str]) -> str:
    """'; did you mean x?' with the closest valid names, else the full list (for one-line errors)."""
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if near:
        return f"; did you mean {', '.join(near)}?"
    return f"; valid: {', '.join(sorted(valid))}" if valid else ""


def _keyword_defaults(fn: ModelFn, name: str) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts beyond ``n_classes``/``input_shape``, with their defaults."""
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params[: len(_FIXED_PARAMS)]]
    if tuple(names) != _FIXED_PARAMS:
        raise TypeError(f"model '{name}': the function must start with (n_classes, input_shape, ...), got {names}")
    defaults: dict[str, Any] = {}
    for param in params[len(_FIXED_PARAMS):]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            # *args/**kwargs would make the accepted keys unknowable (no validation, no listing).
            raise TypeError(f"model '{name}': *args/**kwargs are not allowed; name every argument")
        if param.default is param.empty:
            raise TypeError(f"model '{name}': argument '{param.name}' needs a default")
        defaults[param.name] = param.default
    return defaults


def register_model(
    name: str | ModelFn | None = None, input_kind: str = "features"
) -> Callable[[ModelFn], ModelFn] | ModelFn:
    """Decorator that registers a model function under ``name`` (default: the function's name).

    Usable bare (``@register_model``) or with arguments (``@register_model("m5", input_kind="waveform")``).
    """
    if callable(name):  # bare decorator: @register_model
        return register_model(None, input_kind)(name)
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind={input_kind!r}; expected one of {', '.join(INPUT_KINDS)}")

    def decorator(fn: ModelFn) -> ModelFn:
        key = name or fn.__name__
        previous = _REGISTRY.get(key)
        same_fn = previous is not None and (previous.fn.__module__, previous.fn.__qualname__) == (
            fn.__module__,
            fn.__qualname__,
        )
        if previous is not None and not same_fn:  # re-importing the same module is harmless
            raise ValueError(
                f"model '{key}' is already registered by {previous.fn.__module__}.{previous.fn.__qualname__}"
            )
        _REGISTRY[key] = ModelEntry(key, fn, input_kind, _keyword_defaults(fn, key))
        return fn

    return decorator


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model '{name}'{_hint(str(name), list(_REGISTRY))}")
    return _REGISTRY[name]


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def model_input_kind(name: str) -> str:
    """``"features"``, ``"waveform"`` or ``"embeddings"``: what the model's forward takes."""
    return _entry(name).input_kind


def model_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments model ``name`` accepts, with their defaults."""
    return dict(_entry(name).kwargs)


def _check_input_shape(name: str, kind: str, input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"model '{name}': input_shape={input_shape!r}; expected a tuple of ints") from None
    expected = INPUT_KINDS[kind]
    if len(shape) != expected or any(s <= 0 for s in shape):
        layout = {"features": "(C, F, T)", "waveform": "(N,)", "embeddings": "(T, D)"}[kind]
        raise ConfigError(
            f"model '{name}' takes {kind} input: input_shape={shape} must be {expected} positive ints {layout}"
        )
    return shape


def create_model(name: str, n_classes: int, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Build registered model ``name`` for ``n_classes`` outputs and inputs of ``input_shape`` (no batch).

    Unknown names and keyword arguments raise :class:`ConfigError` with the closest valid names. The module
    gets ``audioclf_spec`` (name, n_classes, input_shape, kwargs) so it can be rebuilt from a checkpoint.
    """
    entry = _entry(name)
    for key in kwargs:
        if key not in entry.kwargs:
            valid = list(entry.kwargs)
            raise ConfigError(f"model '{name}' has no argument '{key}'{_hint(key, valid)}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ConfigError(f"model '{name}': n_classes={n_classes!r}; expected a positive int")
    shape = _check_input_shape(name, entry.input_kind, input_shape)
    model = entry.fn(n_classes, shape, **kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model '{name}' returned {type(model).__name__}, expected an nn.Module")
    model.audioclf_spec = {"name": name, "n_classes": n_classes, "input_shape": shape, "kwargs": dict(kwargs)}
    return model
