"""Model families and the registry that creates them by name.

Every module in this package is imported here, so its ``@register_model`` functions are registered as
soon as ``audioclf.models`` (or any submodule, e.g. ``audioclf.models.registry``) is imported: a new
model family is one new file, nothing else changes. Modules must therefore import heavy optional
dependencies (torchvision, ...) lazily, inside the model function.
"""

from __future__ import annotations

import importlib
import pkgutil

from .mlp import make_activation
from .registry import (
    create_model,
    list_models,
    model_entry,
    model_input_kind,
    model_kwargs,
    model_loss,
    register_model,
)

__all__ = ["create_model", "list_models", "model_entry", "model_input_kind", "model_kwargs", "model_loss",
           "register_model", "make_activation"]


def _import_model_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_model_modules()
