"""Direct exchange: exact routing-key equality."""

from __future__ import annotations

from amqpd.exchanges.direct import DirectExchange


def test_routes_only_on_the_exact_key() -> None:
    ex = DirectExchange()
    ex.bind("orders", "order.created", {})
    ex.bind("audit", "order.created", {})
    ex.bind("empty", "", {})

    assert ex.route("order.created", None) == {"orders", "audit"}
    assert ex.route("order", None) == set()
    assert ex.route("order.created.eu", None) == set()
    assert ex.route("Order.Created", None) == set()
    assert ex.route("", None) == {"empty"}


def test_wildcards_are_plain_characters() -> None:
    ex = DirectExchange()
    ex.bind("q", "a.*", {})
    ex.bind("h", "#", {})

    assert ex.route("a.b", None) == set()
    assert ex.route("a.*", None) == {"q"}
    assert ex.route("#", None) == {"h"}


def test_destination_stays_while_any_of_its_bindings_for_the_key_stays() -> None:
    ex = DirectExchange()
    ex.bind("q", "k", {"v": 1})
    ex.bind("q", "k", {"v": 2})

    ex.unbind("q", "k", {"v": 1})
    assert ex.route("k", None) == {"q"}
    ex.unbind("q", "k", {"v": 2})
    assert ex.route("k", None) == set()


def test_repeated_routes_return_the_same_result_until_a_change() -> None:
    ex = DirectExchange()
    ex.bind("q", "k", {})
    first = ex.route("k", None)

    assert ex.route("k", None) is first
    ex.bind("r", "k", {})
    assert ex.route("k", None) == {"q", "r"}


def test_headers_are_not_needed() -> None:
    assert DirectExchange.needs_headers is False
    ex = DirectExchange()
    ex.bind("q", "k", {"x-match": "nonsense"})  # arguments are not validated

    assert ex.route("k", {"any": "thing"}) == {"q"}
