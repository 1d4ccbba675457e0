"""``amqpd journal ...``: look at a journal directory without a broker.

``main(argv)`` takes the arguments after ``amqpd journal``::

    amqpd journal check --data-dir DIR [--key ID=PATH ...]

Exit status: 0 clean, 1 damage found, 2 the check could not run (no
journal there, a key missing, a record of an unknown format).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from pathlib import Path

from .errors import JournalError
from .filelayer import LOCK_NAME
from .keyring import KEY_SIZE, Keyring
from .recovery import check
from .segment import list_segments

JOURNAL_SUBDIRECTORY = "journal"
"""Where the journal lives inside the broker's data directory."""

EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR = 0, 1, 2


def journal_directory(data_dir: Path) -> Path:
    """The journal directory for a data directory.

    ``DATA_DIR/journal`` normally; ``DATA_DIR`` itself if it holds segments.
    """
    if data_dir.is_dir() and list_segments(data_dir):
        return data_dir
    return data_dir / JOURNAL_SUBDIRECTORY


def main(argv: list[str]) -> int:
    """Run ``amqpd journal`` with ``argv``; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    directory = journal_directory(Path(args.data_dir))
    try:
        keyring = _keyring(args.key) if args.key else None
        if _in_use(directory):
            print(
                f"note: {directory} is in use by a running journal; "
                "its newest segment may look torn",
                file=sys.stderr,
            )
        report = check(directory, keyring)
    except (JournalError, OSError, ValueError) as exc:
        print(f"amqpd journal check: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for line in report.describe():
        print(line)
    return EXIT_CLEAN if report.clean else EXIT_DAMAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqpd journal", description="Inspect the message journal."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_command = commands.add_parser(
        "check",
        help="report damage without changing anything",
        description="Read every segment and report torn tails and corrupt "
        "records. Changes nothing. Exit 0 clean, 1 damage, 2 error.",
    )
    check_command.add_argument(
        "--data-dir", required=True, help="the broker's data directory"
    )
    check_command.add_argument(
        "--key",
        action="append",
        metavar="ID=PATH",
        help=f"an encryption key: a file of {KEY_SIZE} raw bytes or "
        f"{KEY_SIZE * 2} hex digits (repeat for old keys)",
    )
    return parser


def _keyring(specs: list[str]) -> Keyring:
    keys = {}
    for spec in specs:
        key_id, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"--key wants ID=PATH, got {spec!r}")
        keys[key_id] = _read_key(Path(path))
    return Keyring(keys)


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) == KEY_SIZE:
        return data
    text = data.strip()
    if len(text) == KEY_SIZE * 2:
        return bytes.fromhex(text.decode("ascii"))
    raise ValueError(f"{path}: not a {KEY_SIZE}-byte key")


def _in_use(directory: Path) -> bool:
    path = directory / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
