"""Logging set-up for the command line: one line per record on stderr."""

from __future__ import annotations

import logging
import sys


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("amqpd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
