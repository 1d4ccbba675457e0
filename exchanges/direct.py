"""The direct exchange: a message goes to the bindings whose key equals its
routing key exactly.

The index maps each key to its destinations, counted, since one destination
may be bound with the same key several times under different arguments. The
frozen set handed out by ``route`` is built on first use after a change and
kept, so a steady stream of messages costs one dict lookup each.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from .base import ExchangeType

__all__ = ["DirectExchange"]

_NOWHERE: frozenset[Hashable] = frozenset()


class DirectExchange(ExchangeType):
    """Routes on equality of routing key and binding key."""

    type_name = "direct"

    __slots__ = ("_routes", "_table")

    def __init__(self) -> None:
        super().__init__()
        self._table: dict[str, dict[Hashable, int]] = {}
        self._routes: dict[str, frozenset[Hashable]] = {}

    def route(
        self, routing_key: str, headers: Mapping[str, object] | None
    ) -> frozenset[Hashable]:
        """The destinations bound with exactly ``routing_key``."""
        found = self._routes.get(routing_key)
        if found is not None:
            return found
        counts = self._table.get(routing_key)
        if counts is None:
            return _NOWHERE
        found = self._routes[routing_key] = frozenset(counts)
        return found

    def index_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        counts = self._table.setdefault(routing_key, {})
        counts[destination] = counts.get(destination, 0) + 1
        self._routes.pop(routing_key, None)

    def unindex_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        counts = self._table[routing_key]
        left = counts[destination] - 1
        if left:
            counts[destination] = left
        else:
            del counts[destination]
            if not counts:
                del self._table[routing_key]
        self._routes.pop(routing_key, None)
