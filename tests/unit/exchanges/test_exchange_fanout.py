"""Fanout exchange: every bound destination, whatever the key."""

from __future__ import annotations

from amqpd.exchanges.fanout import FanoutExchange


def test_routes_to_every_destination_whatever_the_key() -> None:
    ex = FanoutExchange()
    ex.bind("a", "", {})
    ex.bind("b", "ignored", {})
    ex.bind("c", "#", {"x": 1})

    for key in ("", "anything", "a.b.c"):
        assert ex.route(key, None) == {"a", "b", "c"}


def test_destination_bound_twice_stays_until_its_last_binding_goes() -> None:
    ex = FanoutExchange()
    ex.bind("a", "one", {})
    ex.bind("a", "two", {})
    ex.bind("b", "", {})

    ex.unbind("a", "one", {})
    assert ex.route("", None) == {"a", "b"}
    ex.unbind("a", "two", {})
    assert ex.route("", None) == {"b"}
    ex.unbind_destination("b")
    assert ex.route("", None) == set()


def test_result_is_reused_until_a_change() -> None:
    ex = FanoutExchange()
    ex.bind("a", "", {})
    first = ex.route("x", None)

    assert ex.route("y", None) is first
    ex.bind("b", "", {})
    assert ex.route("x", None) == {"a", "b"}
