"""The registry: built-in types, plugin types by call and by entry point."""

from __future__ import annotations

import logging
import random
from collections.abc import Hashable, Mapping

import pytest

from amqpd import exchanges
from amqpd.exchanges import ExchangeType, registry
from amqpd.exchanges.direct import DirectExchange
from amqpd.exchanges.fanout import FanoutExchange
from amqpd.exchanges.headers import HeadersExchange
from amqpd.exchanges.registry import ExchangeRegistry
from amqpd.exchanges.topic import TopicExchange


class RandomExchange(ExchangeType):
    """A plugin-style type: one bound destination picked at random."""

    type_name = "x-test-random"

    def __init__(self) -> None:
        super().__init__()
        self._destinations: list[Hashable] = []

    def route(
        self, routing_key: str, headers: Mapping[str, object] | None
    ) -> list[Hashable]:
        if not self._destinations:
            return []
        return [random.choice(self._destinations)]

    def index_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        self._destinations.append(destination)

    def unindex_binding(
        self, destination: Hashable, routing_key: str, arguments: Mapping[str, object]
    ) -> None:
        self._destinations.remove(destination)


class FakeEntryPoint:
    def __init__(self, name: str, target: object) -> None:
        self.name = name
        self.value = f"tests:{name}"
        self._target = target

    def load(self) -> object:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def test_built_in_types_are_registered() -> None:
    assert {"direct", "fanout", "topic", "headers"} <= set(exchanges.names())
    assert exchanges.get("direct") is DirectExchange
    assert exchanges.get("fanout") is FanoutExchange
    assert exchanges.get("topic") is TopicExchange
    assert exchanges.get("headers") is HeadersExchange


def test_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        exchanges.get("x-no-such-type")


def test_plugin_type_can_be_registered_and_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", ExchangeRegistry(group=None))

    assert exchanges.register(RandomExchange) is RandomExchange
    assert exchanges.get("x-test-random") is RandomExchange
    assert "x-test-random" in exchanges.names()

    ex = exchanges.get("x-test-random")()
    ex.bind("q", "", {})
    assert list(ex.route("any", None)) == ["q"]


def test_register_works_as_a_decorator() -> None:
    reg = ExchangeRegistry(group=None)

    @reg.register
    class Quiet(FanoutExchange):
        type_name = "x-test-quiet"

    assert reg.get("x-test-quiet") is Quiet


def test_registering_the_same_class_twice_is_harmless() -> None:
    reg = ExchangeRegistry(group=None)
    reg.register(RandomExchange)
    reg.register(RandomExchange)

    assert reg.names().count("x-test-random") == 1


def test_a_taken_name_cannot_be_claimed_by_another_class() -> None:
    reg = ExchangeRegistry(group=None)

    class FakeTopic(TopicExchange):
        type_name = "topic"

    with pytest.raises(ValueError, match="already"):
        reg.register(FakeTopic)
    assert reg.get("topic") is TopicExchange


def test_only_named_exchange_types_can_be_registered() -> None:
    reg = ExchangeRegistry(group=None)

    class Nameless(FanoutExchange):
        type_name = ""

    with pytest.raises(TypeError):
        reg.register(Nameless)
    with pytest.raises(TypeError):
        reg.register(dict)  # type: ignore[type-var]


def test_entry_points_are_loaded_once_on_first_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return [FakeEntryPoint("x-test-random", RandomExchange)]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    reg = ExchangeRegistry()

    assert reg.get("direct") is DirectExchange
    assert calls == []
    assert reg.get("x-test-random") is RandomExchange
    assert "x-test-random" in reg.names()
    with pytest.raises(KeyError):
        reg.get("x-still-unknown")
    assert calls == ["amqpd.exchanges"]


def test_a_broken_entry_point_is_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        return [
            FakeEntryPoint("x-broken", ImportError("no module named amqpd_broken")),
            FakeEntryPoint("x-not-a-type", object()),
            FakeEntryPoint("x-test-random", RandomExchange),
        ]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    reg = ExchangeRegistry()

    with caplog.at_level(logging.ERROR, logger="amqpd.exchanges"):
        names = reg.names()

    assert "x-test-random" in names
    assert "x-broken" not in names
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "x-broken" in logged
    assert "x-not-a-type" in logged
