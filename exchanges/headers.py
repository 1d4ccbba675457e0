"""The headers exchange: bindings match on the message's headers table, and
the routing key is ignored.

A binding's arguments are its conditions; ``x-match`` says how they combine:

- ``all`` (the default): every condition holds;
- ``any``: at least one holds;
- ``all-with-x`` and ``any-with-x``: the same, but arguments whose names
  start with ``x-`` are conditions too; plain ``all`` and ``any`` skip them.
  ``x-match`` itself is never a condition.

A condition holds when the message has the header and, unless the binding's
value is void (None), the values are equal. Values are compared as decoded
Python values, except that a boolean never equals a number: RabbitMQ keeps
``true`` and ``1`` apart, Python does not. With no conditions left, ``all``
matches every message and ``any`` none. A message with no headers table is
treated as one with an empty table.

Routing tries each binding in turn, as RabbitMQ does; conditions are
prepared at bind time so that a message costs dict lookups and comparisons.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from .base import BindingError, BindingId, ExchangeType, canonical_arguments

__all__ = ["X_MATCH_MODES", "HeadersExchange"]

X_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")
"""The values x-match accepts."""

_MISSING = object()
_PRESENT = object()  # a void binding value: the header need only be there
_NO_HEADERS: Mapping[str, object] = {}

# (header name, expected value or _PRESENT, whether the expected is a bool)
_Condition = tuple[str, object, bool]
# (destination, match any rather than all, conditions)
_Rule = tuple[Hashable, bool, tuple[_Condition, ...]]


def _compile(destination: Hashable, arguments: Mapping[str, object]) -> _Rule:
    mode = arguments.get("x-match", "all")
    match_any = mode in ("any", "any-with-x")
    with_x = mode in ("all-with-x", "any-with-x")
    conditions = tuple(
        (name, _PRESENT if value is None else value, value.__class__ is bool)
        for name, value in arguments.items()
        if name != "x-match" and (with_x or not name.startswith("x-"))
    )
    return destination, match_any, conditions


class HeadersExchange(ExchangeType):
    """Routes on header values, all or any of a binding's conditions."""

    type_name = "headers"
    needs_headers = True

    __slots__ = ("_rules",)

    def __init__(self) -> None:
        super().__init__()
        self._rules: dict[BindingId, _Rule] = {}

    def validate_binding(
        self, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        """Reject an x-match that is not a string naming a known mode."""
        mode = arguments.get("x-match", "all")
        if not isinstance(mode, str):
            raise BindingError(
                f"x-match must be a string, not {type(mode).__name__} ({mode!r})"
            )
        if mode not in X_MATCH_MODES:
            raise BindingError(
                f"x-match must be all, any, all-with-x or any-with-x, not {mode!r}"
            )

    def route(
        self, routing_key: str, headers: Mapping[str, object] | None
    ) -> set[Hashable]:
        """The destinations whose binding conditions the headers satisfy."""
        if headers is None:
            headers = _NO_HEADERS
        out: set[Hashable] = set()
        for destination, match_any, conditions in self._rules.values():
            if destination in out:
                continue
            if match_any:
                for name, expected, is_bool in conditions:
                    actual = headers.get(name, _MISSING)
                    if actual is _MISSING:
                        continue
                    if expected is _PRESENT or (
                        actual == expected and (actual.__class__ is bool) is is_bool
                    ):
                        out.add(destination)
                        break
            else:
                for name, expected, is_bool in conditions:
                    actual = headers.get(name, _MISSING)
                    if actual is _MISSING:
                        break
                    if expected is not _PRESENT and not (
                        actual == expected and (actual.__class__ is bool) is is_bool
                    ):
                        break
                else:
                    out.add(destination)
        return out

    def index_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        bid = (destination, routing_key, canonical_arguments(arguments))
        self._rules[bid] = _compile(destination, arguments)

    def unindex_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        del self._rules[(destination, routing_key, canonical_arguments(arguments))]
