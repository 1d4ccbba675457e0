"""Content assembly: a method that carries content, its header, its bodies."""

from __future__ import annotations

from amqpd.codec import properties
from amqpd.errors import FrameError, PreconditionFailed, UnexpectedFrame


def check_size(size: int, max_size: int) -> None:
    """406 on the channel for a message larger than the configured maximum."""
    if size > max_size:
        raise PreconditionFailed(
            f"message size {size} is larger than configured max size {max_size}",
            60,
            40,
        )


class Assembly:
    """One message being assembled from header and body frames."""

    __slots__ = (
        "body_size",
        "chunks",
        "ex_rk",
        "exchange",
        "header",
        "mandatory",
        "received",
        "routing_key",
    )  # fmt: skip

    def __init__(
        self, exchange: str, routing_key: str, ex_rk: bytes, mandatory: bool
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.ex_rk = ex_rk
        self.mandatory = mandatory
        self.header: bytes | None = None
        self.body_size = 0
        self.received = 0
        self.chunks: list[bytes] = []

    def add_header(self, payload: bytes, max_size: int) -> bool:
        """Take the content header; True when the message is complete."""
        if self.header is not None:
            raise UnexpectedFrame("content header frame received twice")
        if len(payload) < 14 or payload[0:2] != b"\x00\x3c":
            raise FrameError("malformed content header frame")
        self.body_size = properties.body_size(payload)
        check_size(self.body_size, max_size)
        self.header = payload
        return self.body_size == 0

    def add_body(self, payload: bytes) -> bool:
        """Take a body frame; True when the message is complete."""
        self.received += len(payload)
        if self.received > self.body_size:
            raise FrameError(
                f"content body of {self.received} bytes exceeds the "
                f"{self.body_size} announced"
            )
        self.chunks.append(payload)
        return self.received == self.body_size

    @property
    def body(self) -> bytes:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)
