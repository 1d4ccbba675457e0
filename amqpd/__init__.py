"""amqpd: an AMQP 0-9-1 message broker in Python."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Broker", "__version__"]


def __getattr__(name: str) -> object:
    if name == "Broker":
        from amqpd.server.lifecycle import Broker

        return Broker
    raise AttributeError(name)
