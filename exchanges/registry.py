"""Which exchange type a name in exchange.declare stands for.

The four AMQP types are registered on import. A plugin adds a type either by
calling :func:`register` or by naming its class in the ``amqpd.exchanges``
entry-point group of its distribution::

    [project.entry-points."amqpd.exchanges"]
    x-random = "amqpd_random.exchange:RandomExchange"

Entry points are loaded on the first lookup, once. One that fails to load,
or that does not name an :class:`ExchangeType` subclass, is logged and
skipped: a broken plugin takes its exchange type away, not the broker.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TypeVar

from .base import ExchangeType
from .direct import DirectExchange
from .fanout import FanoutExchange
from .headers import HeadersExchange
from .topic import TopicExchange

__all__ = ["ENTRY_POINT_GROUP", "ExchangeRegistry", "get", "names", "register"]

ENTRY_POINT_GROUP = "amqpd.exchanges"
BUILT_IN: tuple[type[ExchangeType], ...] = (
    DirectExchange,
    FanoutExchange,
    TopicExchange,
    HeadersExchange,
)

log = logging.getLogger("amqpd.exchanges")

_T = TypeVar("_T", bound=ExchangeType)


class ExchangeRegistry:
    """A set of exchange types by name, extended from entry points on demand."""

    def __init__(self, group: str | None = ENTRY_POINT_GROUP) -> None:
        """Start with the built-in types; ``group=None`` loads no entry points."""
        self._types: dict[str, type[ExchangeType]] = {}
        self._group = group
        self._loaded = group is None
        for cls in BUILT_IN:
            self.register(cls)

    def register(self, cls: type[_T]) -> type[_T]:
        """Make ``cls`` available under ``cls.type_name``; returns ``cls``.

        Registering the same class again does nothing. Raises ValueError if
        the name is taken by another class (built-in types cannot be
        replaced) and TypeError if ``cls`` is not an ExchangeType subclass.
        """
        if not (isinstance(cls, type) and issubclass(cls, ExchangeType)):
            raise TypeError(f"{cls!r} is not an ExchangeType subclass")
        name = getattr(cls, "type_name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} has no type_name")
        known = self._types.get(name)
        if known is not None and known is not cls:
            raise ValueError(
                f"exchange type {name!r} is already {known.__module__}."
                f"{known.__qualname__}"
            )
        self._types[name] = cls
        return cls

    def get(self, type_name: str) -> type[ExchangeType]:
        """The class registered as ``type_name``; KeyError if there is none."""
        cls = self._types.get(type_name)
        if cls is None:
            self._load_entry_points()
            cls = self._types[type_name]
        return cls

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        self._load_entry_points()
        return sorted(self._types)

    def _load_entry_points(self) -> None:
        if self._loaded or self._group is None:
            return
        self._loaded = True
        for ep in entry_points(group=self._group):
            try:
                cls = ep.load()
                self.register(cls)
            except Exception:
                log.exception(
                    "exchange type plugin %r (%s) not loaded", ep.name, ep.value
                )


_REGISTRY = ExchangeRegistry()


def register(cls: type[_T]) -> type[_T]:
    """Add an exchange type to the broker's registry (usable as a decorator)."""
    return _REGISTRY.register(cls)


def get(type_name: str) -> type[ExchangeType]:
    """The exchange type named ``type_name``; KeyError if none is known."""
    return _REGISTRY.get(type_name)


def names() -> list[str]:
    """The names of every known exchange type, sorted."""
    return _REGISTRY.names()
