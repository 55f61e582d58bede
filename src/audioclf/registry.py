"""Things created by name from a config: one registry helper behind models, importers, augmentations,
optimizers and schedulers, and the one "did you mean" hint every unknown name or key gets.

A registry maps a name to an object (a function or a class) plus optional metadata declared where the
object is registered::

    OPTIMIZERS = Registry("optimizer")

    @OPTIMIZERS.register("adam")
    def _adam(params, lr, ...): ...

    OPTIMIZERS.get("adma")  # ConfigError: unknown optimizer 'adma'; did you mean adam, adamw?
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

__all__ = ["Registry", "did_you_mean"]

T = TypeVar("T")


def did_you_mean(key: str, valid: Iterable[str], n: int = 3) -> str:
    """``"; did you mean a, b?"`` with the closest valid names, else ``"; valid: ..."`` (empty when nothing
    is valid): the tail of a one-line error about an unknown name or key."""
    valid = sorted({str(v) for v in valid})
    near = difflib.get_close_matches(str(key), valid, n=n, cutoff=0.5)
    if near:
        return f"; did you mean {', '.join(near)}?"
    return f"; valid: {', '.join(valid)}" if valid else ""


def _origin(obj: Any) -> tuple[str, str]:
    return getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj))


class Registry(Generic[T]):
    """Name -> object, with metadata, for one kind of thing (``kind`` names it in errors).

    ``discover`` (optional) is called once, on the first lookup of a name that is not registered, to import
    modules that register themselves on import (e.g. importers loaded on first use).
    """

    def __init__(self, kind: str, discover: Callable[[], None] | None = None):
        self.kind = kind
        self._objects: dict[str, T] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._discover = discover

    def add(self, name: str, obj: T, **metadata: Any) -> T:
        """Register ``obj`` as ``name``; re-registering the same function or class (a module imported twice)
        is harmless, another object under a taken name is a :class:`ConfigError`."""
        previous = self._objects.get(name)
        if previous is not None and previous is not obj and _origin(previous) != _origin(obj):
            module, qualname = _origin(previous)
            raise ConfigError(f"{self.kind} '{name}' is already registered by {module}.{qualname}")
        self._objects[name] = obj
        self._metadata[name] = dict(metadata)
        return obj

    def register(self, name: str | None = None, **metadata: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; ``name`` defaults to the function's or class's ``__name__``."""

        def decorate(obj: T) -> T:
            return self.add(name or obj.__name__, obj, **metadata)

        return decorate

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test or a plugin cleaning up after itself); unknown names are ignored."""
        self._objects.pop(name, None)
        self._metadata.pop(name, None)

    def _ensure(self, name: str) -> None:
        if name not in self._objects and self._discover is not None:
            discover, self._discover = self._discover, None
            discover()

    def get(self, name: str) -> T:
        """The object registered as ``name``; :class:`ConfigError` with the closest names when unknown."""
        self._ensure(str(name))
        if name not in self._objects:
            raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(str(name), self.names())}")
        return self._objects[name]

    def metadata(self, name: str) -> dict[str, Any]:
        """What was declared with ``name`` at registration (a copy)."""
        self.get(name)
        return dict(self._metadata[name])

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._ensure("")
        return sorted(self._objects)

    def __contains__(self, name: object) -> bool:
        self._ensure(str(name))
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
