"""The journal's error vocabulary, named for the condition.

None of these has an AMQP reply code: the broker decides what a failed journal
means for the client (usually a nack for the publish, or refusing to start).
"""

from __future__ import annotations


class JournalError(Exception):
    """Base of every error the journal raises."""


class JournalClosed(JournalError):
    """The journal is not open for appends: never recovered, or closed."""


class JournalFailed(JournalError):
    """A write or fsync failed; the journal takes no more appends.

    After a failed fsync the kernel may have dropped the dirty pages, so what
    is on disk is unknown until the directory is recovered again.
    """


class JournalLocked(JournalError):
    """Another journal (another process or object) holds the directory."""


class JournalKeyError(JournalError):
    """An encrypted record needs a key that is missing or does not fit.

    Raised by recovery and check before anything on disk is modified.
    """


class FormatError(JournalError):
    """A record passes its checksum but cannot be understood.

    This means a bug or a segment written by a newer format version, never
    torn or flipped bytes (those fail the checksum and count as damage).
    """


class RecordRejected(JournalError, ValueError):
    """An appended record contradicts the live state or does not fit the format.

    Examples: an ENQUEUE for a message the journal does not know, an ACK for a
    message that is not in the queue, a priority above 255. Nothing was
    written and nothing changed.
    """
