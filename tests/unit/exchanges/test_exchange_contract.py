"""The behaviour every exchange type shares, run against each registered one.

A type registered without a routing sample below fails
``test_every_registered_type_has_a_routing_sample``: add one for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import pytest

from amqpd import exchanges
from amqpd.exchanges import BindingError, ExchangeType

Args = Mapping[str, object]

# Per type: bindings that all match one message, and that message's
# (routing key, headers). Every binding uses a different key or arguments.
ROUTING_SAMPLES: dict[str, tuple[list[tuple[str, Args]], tuple[str, Args | None]]] = {
    "direct": (
        [("k", {}), ("k", {"x-note": 1}), ("k", {"x-note": 2})],
        ("k", None),
    ),
    "fanout": (
        [("", {}), ("a", {}), ("b", {"x-note": 1})],
        ("anything", None),
    ),
    "topic": (
        [("a.b", {}), ("a.*", {}), ("#", {}), ("a.#", {"x-note": 1})],
        ("a.b", None),
    ),
    "headers": (
        [
            ("", {"h": 1}),
            ("", {"x-match": "any", "h": 1, "g": 2}),
            ("other", {"h": 1}),
            ("", {}),
        ],
        ("", {"h": 1}),
    ),
}

TYPE_NAMES = exchanges.names()


@pytest.fixture(params=TYPE_NAMES)
def exchange(request: pytest.FixtureRequest) -> ExchangeType:
    name: str = request.param
    return exchanges.get(name)()


def routing_sample(
    exchange: ExchangeType,
) -> tuple[list[tuple[str, Args]], str, Args | None]:
    bindings, (key, headers) = ROUTING_SAMPLES[exchange.type_name]
    return bindings, key, headers


def route(exchange: ExchangeType, key: str, headers: Args | None) -> list[Hashable]:
    found = list(exchange.route(key, headers))
    assert len(found) == len(set(found)), "a destination was routed to twice"
    return found


def test_every_registered_type_has_a_routing_sample() -> None:
    assert set(TYPE_NAMES) <= set(ROUTING_SAMPLES)


def test_registered_name_is_the_type_name(exchange: ExchangeType) -> None:
    assert exchanges.get(exchange.type_name) is type(exchange)
    assert isinstance(exchange.needs_headers, bool)


def test_new_exchange_has_no_bindings_and_routes_nowhere(
    exchange: ExchangeType,
) -> None:
    _, key, headers = routing_sample(exchange)

    assert not exchange.has_bindings()
    assert list(exchange.bindings()) == []
    assert route(exchange, key, headers) == []


def test_bind_is_idempotent(exchange: ExchangeType) -> None:
    assert exchange.bind("q", "k", {"a": 1}) is True
    assert exchange.bind("q", "k", {"a": 1}) is False

    assert exchange.is_bound("q", "k", {"a": 1})
    assert list(exchange.bindings()) == [("q", "k", {"a": 1})]
    assert exchange.has_bindings()


def test_arguments_are_compared_as_dicts(exchange: ExchangeType) -> None:
    first = {"a": 1, "b": [1, {"c": b"x"}], "d": {"e": None}}
    reordered = {"d": {"e": None}, "b": [1, {"c": b"x"}], "a": 1}

    assert exchange.bind("q", "k", first)
    assert not exchange.bind("q", "k", reordered)
    assert exchange.is_bound("q", "k", reordered)
    assert not exchange.is_bound("q", "k", {**first, "b": (1, {"c": b"x"})})
    assert exchange.unbind("q", "k", reordered)
    assert not exchange.has_bindings()


def test_destination_key_and_arguments_each_make_a_binding(
    exchange: ExchangeType,
) -> None:
    assert exchange.bind("q", "k", {})
    assert exchange.bind("q2", "k", {})
    assert exchange.bind("q", "k2", {})
    assert exchange.bind("q", "k", {"a": 1})
    assert exchange.bind("q", "k", {"a": 2})

    assert len(list(exchange.bindings())) == 5
    assert not exchange.is_bound("q", "k", {"a": 3})
    assert not exchange.is_bound("q3", "k", {})


def test_unbind_reports_whether_the_binding_existed(exchange: ExchangeType) -> None:
    exchange.bind("q", "k", {"a": 1})

    assert exchange.unbind("q", "k", {"a": 1}) is True
    assert exchange.unbind("q", "k", {"a": 1}) is False
    assert exchange.unbind("q", "other", {}) is False
    assert not exchange.is_bound("q", "k", {"a": 1})
    assert not exchange.has_bindings()


def test_unbind_of_unhashable_arguments_finds_nothing(exchange: ExchangeType) -> None:
    class Opaque:
        __hash__ = None  # type: ignore[assignment]

    assert exchange.unbind("q", "k", {"a": Opaque()}) is False
    assert exchange.is_bound("q", "k", {"a": Opaque()}) is False
    with pytest.raises(BindingError):
        exchange.bind("q", "k", {"a": Opaque()})
    assert not exchange.has_bindings()


def test_unbind_destination_removes_all_its_bindings(exchange: ExchangeType) -> None:
    bindings, key, headers = routing_sample(exchange)
    for binding_key, args in bindings:
        exchange.bind("gone", binding_key, args)
        exchange.bind("kept", binding_key, args)

    assert exchange.unbind_destination("gone") == len(bindings)
    assert exchange.unbind_destination("gone") == 0
    assert exchange.unbind_destination("never-bound") == 0
    assert {d for d, _, _ in exchange.bindings()} == {"kept"}
    assert route(exchange, key, headers) == ["kept"]


def test_bindings_are_listed_oldest_first_and_survive_unbinding_while_listing(
    exchange: ExchangeType,
) -> None:
    exchange.bind("q1", "a", {})
    exchange.bind("q2", "b", {"x": 1})
    exchange.bind("q1", "c", {})

    seen = []
    for destination, key, args in exchange.bindings():
        seen.append((destination, key, dict(args)))
        exchange.unbind(destination, key, args)

    assert seen == [("q1", "a", {}), ("q2", "b", {"x": 1}), ("q1", "c", {})]
    assert not exchange.has_bindings()


def test_stored_arguments_do_not_follow_the_callers_dict(
    exchange: ExchangeType,
) -> None:
    args: dict[str, object] = {"a": 1}
    exchange.bind("q", "k", args)
    args["a"] = 2

    assert list(exchange.bindings()) == [("q", "k", {"a": 1})]
    assert exchange.is_bound("q", "k", {"a": 1})


def test_destination_matched_by_many_bindings_is_routed_to_once(
    exchange: ExchangeType,
) -> None:
    bindings, key, headers = routing_sample(exchange)
    for binding_key, args in bindings:
        assert exchange.bind("q", binding_key, args)
    exchange.bind("other", bindings[0][0], bindings[0][1])

    assert sorted(map(str, route(exchange, key, headers))) == ["other", "q"]


def test_routing_follows_each_unbind(exchange: ExchangeType) -> None:
    bindings, key, headers = routing_sample(exchange)
    for binding_key, args in bindings:
        exchange.bind("q", binding_key, args)

    for binding_key, args in bindings[:-1]:
        route(exchange, key, headers)  # fill whatever cache the type keeps
        exchange.unbind("q", binding_key, args)
        assert route(exchange, key, headers) == ["q"]

    exchange.unbind("q", *bindings[-1])
    assert route(exchange, key, headers) == []


def test_routing_follows_rebinding(exchange: ExchangeType) -> None:
    bindings, key, headers = routing_sample(exchange)
    binding_key, args = bindings[0]

    for _ in range(3):
        exchange.bind("q", binding_key, args)
        assert route(exchange, key, headers) == ["q"]
        exchange.unbind_destination("q")
        assert route(exchange, key, headers) == []


def test_instances_do_not_share_bindings(exchange: ExchangeType) -> None:
    other = type(exchange)()
    exchange.bind("q", "k", {})

    assert not other.has_bindings()
    assert not other.is_bound("q", "k", {})


def test_destinations_may_be_any_hashable(exchange: ExchangeType) -> None:
    bindings, key, headers = routing_sample(exchange)
    queue = object()
    pair = ("vhost", "queue")
    exchange.bind(queue, *bindings[0])
    exchange.bind(pair, *bindings[0])

    assert set(route(exchange, key, headers)) == {queue, pair}
    assert exchange.unbind_destination(queue) == 1
    assert route(exchange, key, headers) == [pair]
