"""A pytest plugin: real brokers on free ports for test suites.

``amqpd_broker`` (one per test) and ``amqpd_session_broker`` (one per
session) run the broker on its own event loop in a thread, so the same
fixture serves synchronous clients (pika's BlockingConnection) and async
ones (aio-pika on the test's own loop) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from amqpd.server.lifecycle import Broker

T = TypeVar("T")


def _backend_options() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


class BrokerThread:
    """A broker running on its own event loop in a background thread."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._broker_cm: AbstractContextManager[Broker] | None = None
        self.portal: BlockingPortal | None = None
        self.broker: Broker | None = None

    def start(self) -> BrokerThread:
        self._portal_cm = start_blocking_portal(
            "asyncio", backend_options=_backend_options()
        )
        self.portal = self._portal_cm.__enter__()
        broker = Broker(port=0, **self._options)
        self._broker_cm = self.portal.wrap_async_context_manager(broker)
        self.broker = self._broker_cm.__enter__()
        return self

    def stop(self) -> None:
        if self._broker_cm is not None:
            self._broker_cm.__exit__(None, None, None)
            self._broker_cm = None
        if self._portal_cm is not None:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    @property
    def url(self) -> str:
        assert self.broker is not None
        return self.broker.url

    @property
    def data_dir(self) -> Path:
        assert self.broker is not None
        return self.broker.data_dir

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the broker's loop (to inspect its state)."""
        assert self.portal is not None
        return self.portal.call(func, *args)


@pytest.fixture
def amqpd_broker() -> Iterator[BrokerThread]:
    """A fresh broker for one test, on a free port of 127.0.0.1."""
    with BrokerThread() as broker:
        yield broker


@pytest.fixture(scope="session")
def amqpd_session_broker() -> Iterator[BrokerThread]:
    """One broker shared by every test of the session."""
    with BrokerThread() as broker:
        yield broker
