"""The ``amqpd`` command: run the broker, or one of its tools.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 for a runtime failure
(port in use, data directory locked, a definitions store that cannot be
opened or read), 2 for bad flags or configuration (a ``definitions_url``
that names no async SQLAlchemy driver included).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import anyio

from amqpd import __version__
from amqpd.config import LOG_LEVELS, Config, ConfigError, default_data_dir, load_file
from amqpd.log import configure
from amqpd.server import gctune

log = logging.getLogger("amqpd.server")

# subcommands provided by other parts of the package: name -> module with main()
TOOLS = {
    "bench": "amqpd.bench.cli",
    "definitions": "amqpd.persistence.definitions.cli",
    "journal": "amqpd.persistence.journal.cli",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"amqpd: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="amqpd",
        description="An AMQP 0-9-1 message broker. Subcommands: "
        + ", ".join(TOOLS) + " (amqpd SUBCOMMAND --help).",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"amqpd {__version__}")
    parser.add_argument(
        "--bind", action="append", metavar="ADDRESS",
        help="address to listen on (repeatable; default: all interfaces)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, help="port (default 5672; 0 picks one)")
    parser.add_argument(
        "--data-dir", type=Path, help="data directory (default ~/.local/share/amqpd)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    return parser


def parse_config(argv: list[str]) -> Config:
    """Flags over the config file over the defaults; SystemExit(2) on error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = Config(bind=[])
    try:
        if args.config is not None:
            config = load_file(args.config, config)
    except ConfigError as exc:
        parser.exit(2, f"amqpd: error: {exc}\n")
    if args.bind:
        config = config.replace(bind=args.bind)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            parser.error("--port must be between 0 and 65535")
        config = config.replace(port=args.port)
    if args.data_dir is not None:
        config = config.replace(data_dir=args.data_dir)
    if args.log_level is not None:
        config = config.replace(log_level=args.log_level)
    if config.data_dir is None:
        config = config.replace(data_dir=default_data_dir())
    if config.definitions_url is not None:
        _check_definitions_url(parser, config.definitions_url)
    return config


def _check_definitions_url(parser: argparse.ArgumentParser, url: str) -> None:
    """A URL that can never name a store is a configuration error (exit 2);
    a store that cannot be reached or read is found at start (exit 1)."""
    from amqpd.persistence.definitions import BadStoreURL, check_url

    try:
        check_url(url)
    except BadStoreURL as exc:
        parser.exit(2, f"amqpd: error: 'definitions_url': {exc}\n")


async def serve(config: Config) -> None:
    from amqpd.server.lifecycle import Broker

    # catch the signals before the ready line is logged: a SIGTERM sent as
    # soon as it appears must stop the broker cleanly, not kill it
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Broker(config), anyio.create_task_group() as tg:
            gctune.apply()
            tg.start_soon(gctune.collect_periodically)
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                return


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        module = importlib.import_module(TOOLS[argv[0]])
        return int(module.main(argv[1:]))
    config = parse_config(argv)
    configure(config.log_level)
    from amqpd.server.lifecycle import StartupError

    try:
        anyio.run(serve, config, backend="asyncio", backend_options=_backend())
    except StartupError as exc:
        print(f"amqpd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _backend() -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}
