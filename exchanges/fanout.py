"""The fanout exchange: every message goes to every bound destination, and
the routing key is ignored."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from .base import ExchangeType

__all__ = ["FanoutExchange"]


class FanoutExchange(ExchangeType):
    """Routes every message to all bound destinations."""

    type_name = "fanout"

    __slots__ = ("_counts", "_route")

    def __init__(self) -> None:
        super().__init__()
        # A destination bound under several keys or arguments is counted
        # once per binding and routed to once.
        self._counts: dict[Hashable, int] = {}
        self._route: frozenset[Hashable] | None = frozenset()

    def route(
        self, routing_key: str, headers: Mapping[str, object] | None
    ) -> frozenset[Hashable]:
        """Every bound destination."""
        found = self._route
        if found is None:
            found = self._route = frozenset(self._counts)
        return found

    def index_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        self._counts[destination] = self._counts.get(destination, 0) + 1
        self._route = None

    def unindex_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        left = self._counts[destination] - 1
        if left:
            self._counts[destination] = left
        else:
            del self._counts[destination]
        self._route = None
