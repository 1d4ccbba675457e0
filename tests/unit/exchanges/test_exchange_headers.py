"""Headers exchange: x-match modes, void values, value comparison."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import pytest

from amqpd.exchanges import BindingError
from amqpd.exchanges.headers import HeadersExchange

Args = Mapping[str, object]


def matches(arguments: Args, headers: Args | None) -> bool:
    ex = HeadersExchange()
    ex.bind("q", "", arguments)
    return ex.route("", headers) == {"q"}


@pytest.mark.parametrize(
    ("arguments", "headers", "expected"),
    [
        # all, the default
        ({"a": 1, "b": "x"}, {"a": 1, "b": "x", "c": 3}, True),
        ({"x-match": "all", "a": 1, "b": "x"}, {"a": 1, "b": "x"}, True),
        ({"a": 1, "b": "x"}, {"a": 1}, False),
        ({"a": 1, "b": "x"}, {"a": 1, "b": "y"}, False),
        ({"a": 1}, None, False),
        ({"a": 1}, {}, False),
        # any
        ({"x-match": "any", "a": 1, "b": 2}, {"b": 2}, True),
        ({"x-match": "any", "a": 1, "b": 2}, {"a": 0, "b": 2}, True),
        ({"x-match": "any", "a": 1, "b": 2}, {"a": 2, "b": 1}, False),
        ({"x-match": "any", "a": 1}, None, False),
        # no conditions: all matches everything, any nothing
        ({}, None, True),
        ({}, {"a": 1}, True),
        ({"x-match": "all"}, None, True),
        ({"x-match": "any"}, {"a": 1}, False),
        ({"x-match": "any"}, None, False),
        # plain all/any skip x- arguments
        ({"x-match": "all", "x-tag": 1, "a": 1}, {"a": 1}, True),
        ({"x-tag": 1}, None, True),
        ({"x-match": "any", "x-tag": 1}, {"x-tag": 1}, False),
        ({"x-match": "any", "x-tag": 1, "a": 1}, {"x-tag": 1}, False),
        # -with-x variants count them, but never x-match itself
        ({"x-match": "all-with-x", "x-tag": 1}, {"x-tag": 1}, True),
        ({"x-match": "all-with-x", "x-tag": 1}, {}, False),
        ({"x-match": "all-with-x", "x-tag": 1, "a": 1}, {"a": 1}, False),
        ({"x-match": "all-with-x"}, None, True),
        ({"x-match": "any-with-x", "x-tag": 1, "a": 2}, {"x-tag": 1}, True),
        ({"x-match": "any-with-x", "x-tag": 1}, {"x-tag": 2}, False),
        ({"x-match": "any-with-x"}, {"x-match": "any-with-x"}, False),
        # a void binding value asks for presence only
        ({"a": None}, {"a": "anything"}, True),
        ({"a": None}, {"a": None}, True),
        ({"a": None}, {"b": 1}, False),
        ({"x-match": "any", "a": None, "b": 1}, {"a": 0}, True),
        ({"a": 1}, {"a": None}, False),
        # values compare as decoded values; booleans never equal numbers
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": Decimal("1.5")}, {"a": Decimal("1.5")}, True),
        ({"a": True}, {"a": True}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": False}, {"a": 0}, False),
        ({"a": "x"}, {"a": b"x"}, False),
        ({"a": {"b": [1, "c"]}}, {"a": {"b": [1, "c"]}}, True),
        ({"a": {"b": [1, "c"]}}, {"a": {"b": [1]}}, False),
    ],
)
def test_binding_matches_headers(
    arguments: Args, headers: Args | None, expected: bool
) -> None:
    assert matches(arguments, headers) is expected


def test_routing_key_is_ignored() -> None:
    ex = HeadersExchange()
    ex.bind("q", "some-key", {"a": 1})

    assert ex.route("another-key", {"a": 1}) == {"q"}
    assert ex.route("some-key", {"a": 2}) == set()


@pytest.mark.parametrize("mode", ["all", "any", "all-with-x", "any-with-x"])
def test_known_x_match_modes_are_accepted(mode: str) -> None:
    HeadersExchange().validate_binding("", {"x-match": mode})


@pytest.mark.parametrize("mode", ["ALL", "first", "", b"all", 1, None, ["any"]])
def test_other_x_match_values_are_refused(mode: object) -> None:
    ex = HeadersExchange()
    with pytest.raises(BindingError, match="x-match"):
        ex.validate_binding("", {"x-match": mode})
    with pytest.raises(BindingError):
        ex.bind("q", "", {"x-match": mode, "a": 1})
    assert not ex.has_bindings()


def test_each_binding_of_a_destination_is_tried() -> None:
    ex = HeadersExchange()
    ex.bind("q", "", {"a": 1})
    ex.bind("q", "", {"b": 1})
    ex.bind("r", "", {"x-match": "any", "a": 1, "b": 1})

    assert ex.route("", {"b": 1}) == {"q", "r"}
    ex.unbind("q", "", {"b": 1})
    assert ex.route("", {"b": 1}) == {"r"}
    assert ex.route("", {"a": 1}) == {"q", "r"}


def test_needs_headers() -> None:
    assert HeadersExchange.needs_headers is True
