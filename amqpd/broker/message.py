"""A published message: routing data, the raw content header and the body."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from amqpd.codec import properties

if TYPE_CHECKING:
    from amqpd.broker.paging import Pager

JOURNAL_PAGE = 0
"""``Page.segment`` of a body read back from the journal (scratch file
segments are numbered from 1); ``Page.where`` is then the journal's handle."""


class BodyLost(Exception):
    """A paged-out body could not be read back (its journal record or
    scratch file is damaged or gone): the message cannot be delivered."""


class Page:
    """Where a paged-out body is: a scratch segment and offset, or the
    journal. Messages sharing a body (copies) share the Page, so moving the
    body (scratch compaction) updates all of them; ``refs`` counts them."""

    __slots__ = ("refs", "segment", "size", "where")

    def __init__(self, segment: int, where: int, size: int) -> None:
        self.segment = segment
        self.where = where
        self.size = size
        self.refs = 1


class Message:
    """One published message, shared by every queue it was routed to.

    ``header`` is the content header payload exactly as published (or as the
    broker rewrote it); ``ex_rk`` holds the exchange and routing key as the
    two short strings basic.deliver carries.
    """

    __slots__ = (
        "body", "counted", "ex_rk", "exchange", "header", "journal_id", "page",
        "pager", "routing_key", "size", "spans", "ttl",
    )  # fmt: skip

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        ex_rk: bytes,
        header: bytes,
        body: bytes | None,
        spans: properties.Spans,
        size: int = 0,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.ex_rk = ex_rk
        self.header = header
        # the body, or None while it is paged out (see paging.py)
        self.body = body
        self.size = len(body) if body is not None else size
        self.spans = spans
        # where a paged-out body is; None while the body is in memory
        self.page: Page | None = None
        self.counted = False  # in the pager's accounting
        self.pager: Pager | None = None
        # per-message TTL in ms from the expiration property, set at publish
        self.ttl: int | None = None
        # the journal's id for a persistent message in durable queues, else 0
        self.journal_id = 0

    def content(self) -> bytes:
        """The body, read back from the scratch file or the journal if it is
        paged out."""
        body = self.body
        if body is not None:
            return body
        assert self.pager is not None
        return self.pager.read(self)

    def derive(
        self, exchange: str, routing_key: str, ex_rk: bytes, header: bytes
    ) -> Message:
        """A copy with other routing data or header (a new message, such as a
        dead-lettered one). It shares a body in memory or in the scratch
        file; a body paged to the journal is read back, since the copy
        outlives the original's journal record."""
        body = self.body
        page = self.page
        if page is not None and page.segment == JOURNAL_PAGE:
            body = self.content()
        copy = Message(
            exchange, routing_key, ex_rk, header, body,
            properties.scan(header), self.size,
        )  # fmt: skip
        if body is None and self.pager is not None:
            self.pager.share(copy, self)
        return copy

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
        """The same message with some properties replaced, the others kept
        byte for byte: it keeps the journal id, and shares a paged body
        wherever it is."""
        header = properties.rebuild(self.header, self.spans, changes)
        copy = Message(
            self.exchange, self.routing_key, self.ex_rk, header, self.body,
            properties.scan(header), self.size,
        )  # fmt: skip
        copy.journal_id = self.journal_id
        if self.page is not None and self.pager is not None:
            self.pager.share(copy, self)
        return copy

    def __repr__(self) -> str:
        return f"<Message {self.exchange!r} {self.routing_key!r} {self.size}B>"


class CountedMessage(Message):
    """A message in the pager's accounting: when the last queue lets go of
    it, the pager hears of it (reference counting frees it at once; a
    message is never part of a reference cycle)."""

    __slots__ = ()

    def __del__(self) -> None:
        pager = self.pager
        if pager is not None:
            pager.release(self)
