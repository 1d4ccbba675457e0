"""`amqpd definitions export|import FILE --data-dir DIR`, for a stopped broker.

A running broker holds an exclusive flock on DATA/amqpd.lock. These
commands take the same lock for as long as they work, so they refuse to
touch a running broker's data and a broker cannot start under them.

    export  writes the store as a RabbitMQ definitions file ("-": stdout)
    import  merges a RabbitMQ definitions file into the store ("-": stdin);
            the data directory is created if it does not exist yet. A file
            with an entry the broker would refuse (validation.py) is
            refused whole, one line per entry, and nothing is stored.

--url names a store other than the data directory's SQLite file (the lock
is still taken in the data directory).

Exit status: 0 done; 1 refused (a running broker, a bad file, a store that
cannot be opened or read: one line naming the file or URL and the problem);
2 bad arguments, a --url that names no async SQLAlchemy driver included.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from .model import KINDS, Definitions
from .rabbitmq_json import ImportSummary, export_json, parse_json
from .store import (
    DEFINITIONS_FILE_NAME,
    BadStoreURL,
    DefinitionsError,
    DefinitionsStore,
    check_url,
    sqlite_url,
)
from .validation import DefinitionsRefused, import_checked, refuse_invalid

LOCK_FILE_NAME = "amqpd.lock"


class BrokerRunning(Exception):
    """Another process (the broker) holds the data directory lock."""


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold DATA/amqpd.lock exclusively; raise BrokerRunning if taken."""
    fd = os.open(data_dir / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BrokerRunning(
                f"a broker is running on {data_dir} (it holds "
                f"{data_dir / LOCK_FILE_NAME}); stop it first"
            ) from None
        yield
    finally:
        os.close(fd)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amqpd definitions",
        description="Export or import definitions of a stopped broker.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("export", "write definitions to FILE as RabbitMQ JSON"),
        ("import", "merge definitions from a RabbitMQ JSON FILE"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("file", metavar="FILE", help='a path, or "-"')
        command.add_argument("--data-dir", required=True, type=Path)
        command.add_argument("--url", help="store URL (default: SQLite file)")
    return parser


def main(argv: list[str]) -> int:
    """Run `definitions ARGS`; argv is what follows "definitions"."""
    args = _parser().parse_args(argv)
    try:
        if args.url is not None:
            check_url(args.url)
    except BadStoreURL as error:
        print(f"amqpd definitions {args.command}: --url: {error}", file=sys.stderr)
        return 2
    try:
        if args.command == "export":
            _export(args.file, args.data_dir, args.url)
        else:
            _import(args.file, args.data_dir, args.url)
    except DefinitionsRefused as refused:
        for problem in refused.problems:
            print(f"amqpd definitions import: {problem}", file=sys.stderr)
        count = len(refused.problems)
        entries = "entry" if count == 1 else "entries"
        print(
            f"amqpd definitions import: {count} {entries} refused, nothing imported",
            file=sys.stderr,
        )
        return 1
    except (BrokerRunning, DefinitionsError, OSError, ValueError) as error:
        print(f"amqpd definitions {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


def _holds_store(data_dir: Path) -> bool:
    # lexists: a broken symlink in the store's place is a store that cannot
    # be opened, and must be reported as that, not taken for no store
    return os.path.lexists(data_dir / DEFINITIONS_FILE_NAME)


def _export(file: str, data_dir: Path, url: str | None) -> None:
    if not data_dir.is_dir():
        raise DefinitionsError(f"no data directory {data_dir}")
    if url is None and not _holds_store(data_dir):
        raise DefinitionsError(f"{data_dir} holds no {DEFINITIONS_FILE_NAME}")
    with data_dir_lock(data_dir):
        document = anyio.run(_load_document, url or sqlite_url(data_dir))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if file == "-":
        sys.stdout.write(text)
        return
    temporary = Path(f"{file}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(file)


async def _load_document(url: str) -> dict[str, Any]:
    async with DefinitionsStore.open(url) as store:
        return export_json(await store.load())


def _import(file: str, data_dir: Path, url: str | None) -> None:
    if file == "-":
        document = json.load(sys.stdin)
    else:
        with open(file, encoding="utf-8") as stream:
            document = json.load(stream)
    # refuse a bad file before touching the data dir; the entries the
    # broker refuses can be told only against the store, if there is one
    definitions = parse_json(document).definitions
    if url is None and not _holds_store(data_dir):
        refuse_invalid(definitions, Definitions())
    data_dir.mkdir(parents=True, exist_ok=True)
    with data_dir_lock(data_dir):
        summary = anyio.run(_merge_document, url or sqlite_url(data_dir), document)
    counts = ", ".join(
        f"{len(getattr(summary.definitions, kind))} {kind.replace('_', ' ')}"
        for kind in KINDS
    )
    print(f"imported {counts} into {data_dir}", file=sys.stderr)
    for reason in summary.skipped:
        print(f"skipped {reason}", file=sys.stderr)


async def _merge_document(url: str, document: dict[str, Any]) -> ImportSummary:
    async with DefinitionsStore.open(url) as store:
        return await import_checked(store, document)
