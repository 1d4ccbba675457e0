"""The interface every exchange type implements, and the binding bookkeeping
they share.

An exchange type is the routing table of one exchange: it holds the bindings
and answers, for each message, which destinations get a copy. It knows nothing
of queues, channels or I/O; destinations are opaque hashable objects (a queue,
or another exchange for exchange-to-exchange bindings).

A binding is identified, as in RabbitMQ, by (destination, routing key,
arguments), arguments compared as dicts. The base class keeps that set of
bindings; a subclass keeps whatever index makes its ``route`` fast and updates
it in ``index_binding`` and ``unindex_binding``, which the base calls exactly
once per binding added or removed.

Nothing here is thread-safe: one exchange belongs to one event loop.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Hashable, Iterator, Mapping
from types import MappingProxyType
from typing import ClassVar

__all__ = [
    "BindingError",
    "BindingId",
    "ExchangeType",
    "canonical_arguments",
]

BindingId = tuple[Hashable, str, Hashable]
"""(destination, routing key, canonical arguments): one binding's identity."""


class BindingError(ValueError):
    """The binding's arguments are not acceptable to this exchange type.

    The broker answers with 406 PRECONDITION_FAILED and the error's text.
    """


class _Tag:
    """Marks a frozen container so it never equals a user value by accident."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_LIST = _Tag("list")
_TUPLE = _Tag("tuple")
_TABLE = _Tag("table")
_NO_ARGUMENTS: frozenset[tuple[str, Hashable]] = frozenset()


def _freeze(value: object) -> Hashable:
    # Two values get equal frozen forms exactly when they compare equal
    # in Python, so binding identity is dict equality of the arguments.
    if isinstance(value, Mapping):
        return (_TABLE, frozenset((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return (_LIST, *map(_freeze, value))
    if isinstance(value, tuple):
        return (_TUPLE, *map(_freeze, value))
    if isinstance(value, bytearray):
        return bytes(value)  # bytearray(b"a") == b"a"
    if isinstance(value, set | frozenset):
        return frozenset(map(_freeze, value))
    if isinstance(value, Hashable):
        return value
    raise TypeError(f"unhashable argument value of type {type(value).__name__}")


def canonical_arguments(arguments: Mapping[str, object]) -> Hashable:
    """A hashable form of a binding's arguments.

    Two argument tables get equal canonical forms exactly when they are
    equal as dicts (nested tables and arrays included). Raises
    :class:`BindingError` for a value that cannot be compared that way.
    """
    if not arguments:
        return _NO_ARGUMENTS
    try:
        return frozenset((k, _freeze(v)) for k, v in arguments.items())
    except TypeError as exc:
        raise BindingError(str(exc)) from None


class ExchangeType(abc.ABC):
    """Routing table of one exchange.

    Destinations are opaque hashable objects (queues or exchanges). The
    broker calls :meth:`validate_binding` and then :meth:`bind` on
    queue.bind / exchange.bind, :meth:`unbind` on the unbind methods,
    :meth:`unbind_destination` when a queue or exchange is deleted, and
    :meth:`route` once per published message.

    A subclass sets :attr:`type_name`, implements :meth:`route`,
    :meth:`index_binding` and :meth:`unindex_binding`, and may override
    :meth:`validate_binding`. Instances are created with no arguments.
    """

    type_name: ClassVar[str]
    """The name clients give in exchange.declare: "direct", "topic", ..."""

    needs_headers: ClassVar[bool] = False
    """True when :meth:`route` reads message headers; otherwise the broker
    may pass None and skip decoding the content header's properties."""

    __slots__ = ("_bindings", "_by_destination")

    def __init__(self) -> None:
        self._bindings: dict[BindingId, Mapping[str, object]] = {}
        self._by_destination: dict[Hashable, dict[BindingId, None]] = {}

    # -- the hooks a subclass provides

    @abc.abstractmethod
    def route(
        self, routing_key: str, headers: Mapping[str, object] | None
    ) -> Collection[Hashable]:
        """Every destination the message goes to, each exactly once.

        ``headers`` is the message's decoded headers table, or None when
        the message has none (or when :attr:`needs_headers` is False and the
        broker did not decode them). The result must not be mutated by the
        caller: an implementation may return a cached frozen set.
        """

    @abc.abstractmethod
    def index_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        """Add a binding that did not exist before to the routing index."""

    @abc.abstractmethod
    def unindex_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        """Remove a binding, previously given to index_binding, from the index."""

    def validate_binding(
        self, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        """Raise :class:`BindingError` if this binding cannot be made.

        The default accepts every binding.
        """
        return

    # -- the binding set, shared by every type

    def bind(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> bool:
        """Add a binding; True if it is new, False if it already existed.

        Validates first, so it raises :class:`BindingError` exactly when
        :meth:`validate_binding` would.
        """
        self.validate_binding(routing_key, arguments)
        bid = (destination, routing_key, canonical_arguments(arguments))
        if bid in self._bindings:
            return False

        frozen = MappingProxyType(dict(arguments))
        self._bindings[bid] = frozen
        self._by_destination.setdefault(destination, {})[bid] = None
        self.index_binding(destination, routing_key, frozen)
        return True

    def unbind(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> bool:
        """Remove a binding; True if it existed, False if there was none."""
        try:
            bid = (destination, routing_key, canonical_arguments(arguments))
        except BindingError:
            return False  # such arguments can never have been bound
        return self._remove(bid)

    def unbind_destination(self, destination: Hashable) -> int:
        """Remove every binding to ``destination``; return how many there were."""
        bids = self._by_destination.get(destination)
        if not bids:
            return 0
        count = len(bids)
        for bid in list(bids):
            self._remove(bid)
        return count

    def bindings(self) -> Iterator[tuple[Hashable, str, Mapping[str, object]]]:
        """Every binding as (destination, routing key, arguments), oldest first.

        Iterates over a snapshot, so the caller may unbind as it goes.
        """
        snapshot = [(d, k, args) for (d, k, _), args in self._bindings.items()]
        return iter(snapshot)

    def has_bindings(self) -> bool:
        """True if at least one binding exists (auto-delete exchanges ask)."""
        return bool(self._bindings)

    def is_bound(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> bool:
        """True if exactly this binding exists (queue.bind's idempotence)."""
        try:
            bid = (destination, routing_key, canonical_arguments(arguments))
        except BindingError:
            return False
        return bid in self._bindings

    def _remove(self, bid: BindingId) -> bool:
        frozen = self._bindings.pop(bid, None)
        if frozen is None:
            return False

        destination, routing_key, _ = bid
        bids = self._by_destination[destination]
        del bids[bid]
        if not bids:
            del self._by_destination[destination]
        self.unindex_binding(destination, routing_key, frozen)
        return True
