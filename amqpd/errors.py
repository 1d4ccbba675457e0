"""Protocol errors: each knows its reply code and whether it closes a channel
or the whole connection.

A handler raises one of these; the connection machine turns it into the close
frame (channel.close for soft errors, connection.close for hard ones) naming
the class and method that caused it.
"""

from __future__ import annotations

from typing import ClassVar


class AMQPError(Exception):
    """Base of every error that has an answer on the wire."""

    reply_code: ClassVar[int] = 541
    reply_name: ClassVar[str] = "INTERNAL_ERROR"
    hard: ClassVar[bool] = True

    def __init__(self, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(text)
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        """The text sent in the close method, RabbitMQ style: NAME - detail."""
        return f"{self.reply_name} - {self.text}"[:255]


class ChannelError(AMQPError):
    """A soft error: closes the channel only."""

    hard = False


class ConnectionError_(AMQPError):
    """A hard error: closes the connection."""

    hard = True


class ContentTooLarge(ChannelError):
    reply_code, reply_name = 311, "CONTENT_TOO_LARGE"


class AccessRefused(ChannelError):
    reply_code, reply_name = 403, "ACCESS_REFUSED"


class NotFound(ChannelError):
    reply_code, reply_name = 404, "NOT_FOUND"


class ResourceLocked(ChannelError):
    reply_code, reply_name = 405, "RESOURCE_LOCKED"


class PreconditionFailed(ChannelError):
    reply_code, reply_name = 406, "PRECONDITION_FAILED"


class ConnectionForced(ConnectionError_):
    reply_code, reply_name = 320, "CONNECTION_FORCED"


class InvalidPath(ConnectionError_):
    reply_code, reply_name = 402, "INVALID_PATH"


class ConnectionAccessRefused(ConnectionError_):
    reply_code, reply_name = 403, "ACCESS_REFUSED"


class FrameError(ConnectionError_):
    reply_code, reply_name = 501, "FRAME_ERROR"


class SyntaxError_(ConnectionError_):
    reply_code, reply_name = 502, "SYNTAX_ERROR"


class CommandInvalid(ConnectionError_):
    reply_code, reply_name = 503, "COMMAND_INVALID"


class ChannelErrorHard(ConnectionError_):
    """504 CHANNEL_ERROR: a frame on a channel that is not open, and the like."""

    reply_code, reply_name = 504, "CHANNEL_ERROR"


class UnexpectedFrame(ConnectionError_):
    reply_code, reply_name = 505, "UNEXPECTED_FRAME"


class ResourceError(ConnectionError_):
    reply_code, reply_name = 506, "RESOURCE_ERROR"


class NotAllowed(ConnectionError_):
    reply_code, reply_name = 530, "NOT_ALLOWED"


class NotImplemented_(ConnectionError_):
    reply_code, reply_name = 540, "NOT_IMPLEMENTED"


class InternalError(ConnectionError_):
    reply_code, reply_name = 541, "INTERNAL_ERROR"
