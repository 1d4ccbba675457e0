"""A published message: routing data, the raw content header and the body."""

from __future__ import annotations

from typing import Any

from amqpd.codec import properties


class Message:
    """One published message, shared by every queue it was routed to.

    ``header`` is the content header payload exactly as published (or as the
    broker rewrote it); ``ex_rk`` holds the exchange and routing key as the
    two short strings basic.deliver carries.
    """

    __slots__ = (
        "body", "ex_rk", "exchange", "header", "journal_id", "routing_key", "spans",
        "ttl",
    )  # fmt: skip

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        ex_rk: bytes,
        header: bytes,
        body: bytes,
        spans: properties.Spans,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.ex_rk = ex_rk
        self.header = header
        self.body = body
        self.spans = spans
        # per-message TTL in ms from the expiration property, set at publish
        self.ttl: int | None = None
        # the journal's id for a persistent message in durable queues, else 0
        self.journal_id = 0

    def prop(self, name: str) -> Any:
        """One decoded property (None when absent)."""
        return properties.get(self.header, self.spans, name)

    @property
    def headers(self) -> dict[str, Any] | None:
        return properties.get(self.header, self.spans, "headers")  # type: ignore[no-any-return]

    @property
    def priority(self) -> int:
        value = properties.get(self.header, self.spans, "priority")
        return value if isinstance(value, int) else 0

    @property
    def persistent(self) -> bool:
        return bool(properties.get(self.header, self.spans, "delivery_mode") == 2)

    def replace(self, changes: dict[str, bytes | None]) -> Message:
        """A copy with some properties replaced, the others kept byte for byte."""
        header = properties.rebuild(self.header, self.spans, changes)
        return Message(
            self.exchange,
            self.routing_key,
            self.ex_rk,
            header,
            self.body,
            properties.scan(header),
        )

    def __repr__(self) -> str:
        return f"<Message {self.exchange!r} {self.routing_key!r} {len(self.body)}B>"
