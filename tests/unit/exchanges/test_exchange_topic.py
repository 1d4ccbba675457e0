"""Topic exchange: word patterns, the trie against a plain reference matcher,
the route cache and pruning."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amqpd.exchanges.topic import TopicExchange, split_words


def reference_match(pattern: str, key: str) -> bool:
    """Does ``pattern`` match ``key``? Straight from the definition."""

    def match(p: list[str], w: list[str]) -> bool:
        if not p:
            return not w
        if p[0] == "#":
            return match(p[1:], w) or (bool(w) and match(p, w[1:]))
        if not w:
            return False
        return (p[0] == "*" or p[0] == w[0]) and match(p[1:], w[1:])

    return match(split_words(pattern), split_words(key))


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.b", "a", False),
        ("*", "a", True),
        ("*", "a.b", False),
        ("*", "", False),
        ("#", "", True),
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
        ("*.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.x", "x", True),
        ("#.x", "a.b.x", True),
        ("#.x", "a.x.b", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
        ("a.#.b", "a.b.c", False),
        ("a.*.#", "a", False),
        ("a.*.#", "a.b", True),
        ("#.*", "", False),
        ("#.*", "a.b", True),
        ("#.#", "", True),
        ("#.*.#", "q", True),
        ("#.*.#", "", False),
        # empty words are words
        ("a..b", "a..b", True),
        ("a.*.b", "a..b", True),
        ("a.b", "a..b", False),
        ("a.*", "a", False),
        ("a.*", "a.", True),
        ("a.#", "a.", True),
        ("*", ".", False),
        ("*.*", ".", True),
        ("#", ".", True),
        ("", "", True),
        ("", "a", False),
        ("*", "", False),
        # wildcards in a routing key are ordinary words
        ("a.b", "a.*", False),
        ("a.*", "a.*", True),
        ("a.#", "a.#", True),
        ("#", "#", True),
    ],
)
def test_pattern_matches_key(pattern: str, key: str, expected: bool) -> None:
    assert reference_match(pattern, key) is expected
    ex = TopicExchange()
    ex.bind("q", pattern, {})
    assert (ex.route(key, None) == {"q"}) is expected


def test_routes_each_destination_to_its_matching_patterns() -> None:
    ex = TopicExchange()
    ex.bind("all-eu", "*.eu.#", {})
    ex.bind("orders", "order.#", {})
    ex.bind("created", "#.created", {})
    ex.bind("exact", "order.eu.created", {})

    assert ex.route("order.eu.created", None) == {
        "all-eu",
        "orders",
        "created",
        "exact",
    }
    assert ex.route("order.us.created", None) == {"orders", "created"}
    assert ex.route("invoice.eu", None) == {"all-eu"}
    assert ex.route("invoice", None) == set()


def test_many_hashes_on_a_long_key_stay_fast() -> None:
    ex = TopicExchange()
    ex.bind("q", ".".join(["#"] * 12) + ".z", {})
    key = ".".join(["a"] * 120)

    started = time.perf_counter()
    assert ex.route(key, None) == set()
    assert ex.route(key + ".z", None) == {"q"}
    assert time.perf_counter() - started < 1.0


def test_cache_is_bounded_and_emptied_by_changes() -> None:
    class SmallCache(TopicExchange):
        cache_size = 3

    ex = SmallCache()
    ex.bind("q", "a.*", {})
    for i in range(10):
        assert ex.route(f"a.{i}", None) == {"q"}
        assert len(ex._cache) <= 3

    ex.bind("r", "a.#", {})
    assert len(ex._cache) == 0
    assert ex.route("a.9", None) == {"q", "r"}


def test_unbinding_everything_prunes_the_trie() -> None:
    ex = TopicExchange()
    patterns = ["a.b.c", "a.*.c", "a.#", "#", "#.#.x", "", "a..b", "*.*"]
    for pattern in patterns:
        ex.bind("q", pattern, {})
        ex.bind("r", pattern, {"x": 1})

    ex.unbind_destination("q")
    assert ex.route("a.b.c", None) == {"r"}
    ex.unbind_destination("r")
    assert ex._root.is_empty()


# -- the trie against the reference matcher

WORDS = ["a", "b", "", "*", "#"]
keys = st.lists(st.sampled_from(WORDS), max_size=6).map(".".join)
destinations = st.integers(min_value=0, max_value=3)


@settings(max_examples=300, deadline=None)
@given(
    bindings=st.lists(st.tuples(keys, destinations), max_size=12),
    routing_keys=st.lists(keys, min_size=1, max_size=8),
)
def test_trie_routes_like_the_reference(
    bindings: list[tuple[str, int]], routing_keys: list[str]
) -> None:
    ex = TopicExchange()
    for pattern, destination in bindings:
        ex.bind(destination, pattern, {})

    for key in routing_keys:
        expected = {d for p, d in bindings if reference_match(p, key)}
        assert ex.route(key, None) == expected
        assert ex.match(key) == expected


operations = st.lists(
    st.tuples(st.sampled_from(["bind", "unbind", "route"]), keys, destinations),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_trie_follows_binds_and_unbinds_like_the_reference(
    ops: list[tuple[str, str, int]],
) -> None:
    ex = TopicExchange()
    model: set[tuple[int, str]] = set()

    for op, key, destination in ops:
        if op == "bind":
            assert ex.bind(destination, key, {}) is ((destination, key) not in model)
            model.add((destination, key))
        elif op == "unbind":
            assert ex.unbind(destination, key, {}) is ((destination, key) in model)
            model.discard((destination, key))
        else:
            expected = {d for d, p in model if reference_match(p, key)}
            assert ex.route(key, None) == expected

    for destination, key in list(model):
        ex.unbind(destination, key, {})
    assert ex._root.is_empty()
