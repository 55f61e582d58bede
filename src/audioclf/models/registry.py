"""Model registry (timm style): a model is one function plus ``@register_model``.

A registered function has the signature ``fn(n_classes, input_shape, **kwargs) -> nn.Module`` where every
keyword argument has a default (so ``model_kwargs`` can list them and a config can override any of them).
``create_model`` validates the name and the keyword arguments, builds the module and stamps it with
``audioclf_spec`` so a checkpoint can rebuild it without the config that created it.

Input kinds (the shape a model's ``forward`` takes, batch first; ``input_shape`` excludes the batch):

* ``"features"``   -> (B, C, F, T), usually C = 1 (log-mel / MFCC image); ``input_shape=(C, F, T)``
* ``"waveform"``   -> (B, N) raw samples; ``input_shape=(N,)``
* ``"embeddings"`` -> (B, T, D) a sequence of embeddings (AudioSet); ``input_shape=(T, D)``

Metadata declared at registration, next to the function:

* ``input_kind`` (above);
* ``example_input``: a typical ``input_shape`` (the one published counts use), what ``audioclf complexity NAME`` counts
  on when no shape is given;
* ``loss``: ``"task"`` (the task's own loss: softmax cross-entropy or sigmoid BCE) or another loss the model is
  meant for (``"bipolar_mse"``), or a function of the model's keyword arguments returning one of them.

Models return logits; softmax / sigmoid belong to the loss and to ``train.losses.probabilities``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import Registry, did_you_mean

__all__ = [
    "INPUT_KINDS",
    "LOSSES",
    "ModelEntry",
    "MODELS",
    "register_model",
    "check_model_args",
    "create_model",
    "list_models",
    "model_entry",
    "model_input_kind",
    "model_kwargs",
    "model_loss",
]

# Rank of ``input_shape`` (batch excluded) each input kind expects.
INPUT_KINDS: dict[str, int] = {"features": 3, "waveform": 1, "embeddings": 2}
_LAYOUTS = {"features": "(C, F, T)", "waveform": "(N,)", "embeddings": "(T, D)"}
# "task": the task's own loss; "bipolar_mse": tanh outputs against +-1 targets (train.losses.BipolarMSELoss).
LOSSES = ("task", "bipolar_mse")
# Positional parameters every model function takes; everything else is a keyword argument.
_FIXED_PARAMS = ("n_classes", "input_shape")

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its builder, what it takes, its keyword arguments (with defaults), an example
    input shape and the loss it trains with."""

    name: str
    fn: ModelFn
    input_kind: str
    kwargs: dict[str, Any]
    example_input: tuple[int, ...] | None = None
    loss: str | Callable[[dict[str, Any]], str] = "task"
    # The front-end the model was designed on (FeatureConfig fields), over the zero-config log-mel and under the
    # user's features.* keys: e.g. speaker_cnn2d's dB spectrogram.
    features: dict[str, Any] | None = None

    def loss_for(self, kwargs: dict[str, Any]) -> str:
        """The loss of this model built with ``kwargs`` (defaults filled in)."""
        loss = self.loss(self.kwargs | kwargs) if callable(self.loss) else self.loss
        if loss not in LOSSES:
            raise ConfigError(f"model '{self.name}' asks for loss {loss!r}; expected one of {', '.join(LOSSES)}")
        return loss


MODELS: Registry[ModelFn] = Registry("model")  # the functions; ModelEntry's other fields are their metadata


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
    name: str | ModelFn | None = None,
    input_kind: str = "features",
    example_input: tuple[int, ...] | None = None,
    loss: str | Callable[[dict[str, Any]], str] = "task",
    features: dict[str, Any] | None = None,
) -> Callable[[ModelFn], ModelFn] | ModelFn:
    """Decorator that registers a model function under ``name`` (default: the function's name).

    Usable bare (``@register_model``) or with arguments
    (``@register_model("m5", input_kind="waveform", example_input=(16000,))``).
    """
    if callable(name):  # bare decorator: @register_model
        return register_model(None, input_kind, example_input, loss, features)(name)
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind={input_kind!r}; expected one of {', '.join(INPUT_KINDS)}")
    if example_input is not None and len(example_input) != INPUT_KINDS[input_kind]:
        raise ValueError(f"example_input={example_input}: {input_kind} input is {_LAYOUTS[input_kind]}")

    def decorator(fn: ModelFn) -> ModelFn:
        key = name or fn.__name__
        MODELS.add(key, fn, input_kind=input_kind, kwargs=_keyword_defaults(fn, key),
                   example_input=tuple(example_input) if example_input else None, loss=loss, features=features)
        return fn

    return decorator


def model_entry(name: str) -> ModelEntry:
    """The registration of model ``name``; :class:`ConfigError` with the closest names when unknown."""
    return ModelEntry(name, MODELS.get(name), **MODELS.metadata(name))


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return MODELS.names()


def model_input_kind(name: str) -> str:
    """``"features"``, ``"waveform"`` or ``"embeddings"``: what the model's forward takes."""
    return model_entry(name).input_kind


def model_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments model ``name`` accepts, with their defaults."""
    return dict(model_entry(name).kwargs)


def model_loss(model: nn.Module) -> str:
    """The loss a built model trains with (``"task"`` unless its registration says otherwise); looks through
    wrappers that keep the registered model as ``.backbone`` (``AudioClassifier``)."""
    spec = getattr(getattr(model, "backbone", model), "audioclf_spec", None)
    return "task" if spec is None else model_entry(spec["name"]).loss_for(spec["kwargs"])


def _check_input_shape(name: str, kind: str, input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"model '{name}': input_shape={input_shape!r}; expected a tuple of ints") from None
    expected = INPUT_KINDS[kind]
    if len(shape) != expected or any(s <= 0 for s in shape):
        raise ConfigError(
            f"model '{name}' takes {kind} input: input_shape={shape} must be {expected} positive ints {_LAYOUTS[kind]}"
        )
    return shape


def _check_kwarg_type(entry: "ModelEntry", key: str, value: Any) -> None:
    """A value of a kind the argument's annotation names: a YAML string where a list of widths is expected
    would otherwise be read character by character (``model.hidden=abc``)."""
    annotation = inspect.signature(entry.fn).parameters[key].annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if annotation is inspect.Parameter.empty or "Any" in text or value is None:
        return
    words = set(text.replace("[", " ").replace("]", " ").replace("|", " ").replace(",", " ").split())
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    kinds = {
        "bool": isinstance(value, bool),
        "int": number and float(value).is_integer(),
        "float": number,
        "str": isinstance(value, str),
        "Sequence": isinstance(value, (list, tuple)),
        "list": isinstance(value, (list, tuple)),
        "tuple": isinstance(value, (list, tuple)),
    }
    known = words & kinds.keys()
    if known and not any(kinds[word] for word in known):
        raise ConfigError(f"model '{entry.name}': {key}={value!r}; expected {text}")


def check_model_args(name: str, kwargs: dict[str, Any]) -> ModelEntry:
    """The entry of model ``name`` once every keyword argument is one it takes, of a kind its annotation
    names (checked before any data is read: building the model needs the data's shape)."""
    entry = model_entry(name)
    for key in kwargs:
        if key not in entry.kwargs:
            raise ConfigError(f"model '{name}' has no argument '{key}'{did_you_mean(key, entry.kwargs)}")
        _check_kwarg_type(entry, key, kwargs[key])
    return entry


def create_model(name: str, n_classes: int, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    """Build registered model ``name`` for ``n_classes`` outputs and inputs of ``input_shape`` (no batch).

    Unknown names and keyword arguments raise :class:`ConfigError` with the closest valid names. The module
    gets ``audioclf_spec`` (name, n_classes, input_shape, kwargs) so it can be rebuilt from a checkpoint.
    """
    entry = check_model_args(name, kwargs)
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ConfigError(f"model '{name}': n_classes={n_classes!r}; expected a positive int")
    shape = _check_input_shape(name, entry.input_kind, input_shape)
    model = entry.fn(n_classes, shape, **kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model '{name}' returned {type(model).__name__}, expected an nn.Module")
    entry.loss_for(kwargs)  # a model asking for an unknown loss fails here, not at its first training step
    model.audioclf_spec = {"name": name, "n_classes": n_classes, "input_shape": shape, "kwargs": dict(kwargs)}
    return model
