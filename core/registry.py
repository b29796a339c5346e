"""A small decorator registry that fails loudly on duplicates and typos (after timm / lm-eval).

Register at the definition site::

    @register_method("glscl")
    class GLSCL(RetrievalMethod): ...

and resolve with ``METHODS.get("glscl")``. Every plug-in kind (methods, datasets) has exactly one ``Registry``.
Unknown names raise ``UnknownNameError`` with close matches and the full list of valid names; registering a name
twice raises ``DuplicateNameError`` naming both definitions (``tvr_convbench.core.errors``).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from tvr_convbench.core.errors import DuplicateNameError, RegistryError, UnknownNameError

T = TypeVar("T")


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ``did you mean ...?`` fragment for ``name`` among ``choices`` (empty when nothing is close)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


class Registry(Generic[T]):
    """Name -> class table for one plug-in kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under ``name``; a second registration raises."""
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise RegistryError(f"invalid {self.kind} name {name!r}: use letters, digits, '-' and '_'")

        def decorator(obj: T) -> T:
            if name in self._items:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered by {_qualname(self._items[name])}; "
                    f"cannot register {_qualname(obj)} under the same name"
                )
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise ``UnknownNameError`` with suggestions."""
        if name not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{suggest(name, self._items)} (valid: {', '.join(self.names())})"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def unregister(self, name: str) -> None:
        """Remove an entry (tests only)."""
        self._items.pop(name, None)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls.__init__`` (the method's config schema), without ``self``/varargs.

    A constructor that forwards ``**kwargs`` to its base class also accepts the base's parameters, so the MRO is
    walked until a constructor without ``**kwargs``.
    """
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        for name, param in params.items():
            if name != "self" and param.kind in kinds:
                found.setdefault(name, param)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            break
    return found


def check_kwargs(cls: type, kwargs: dict[str, Any], where: str) -> None:
    """Raise ``UnknownNameError`` if ``kwargs`` holds a key ``cls.__init__`` does not accept."""
    accepted = init_parameters(cls)
    for key in kwargs:
        if key not in accepted:
            raise UnknownNameError(
                f"{where}: unknown key {key!r}{suggest(key, accepted)} (valid: {', '.join(sorted(accepted))})"
            )
