"""Broker configuration: defaults, the TOML file, and command-line flags.

Every key is listed in docs/configuration.md. Flags win over the file;
unknown keys in the file are an error.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A bad configuration file or value (exit code 2)."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "amqpd"


@dataclass
class Config:
    bind: list[str] = field(default_factory=lambda: ["0.0.0.0", "::"])
    port: int = 5672
    data_dir: Path | None = None
    log_level: str = "info"
    # connection tuning proposed to clients
    channel_max: int = 2047
    frame_max: int = 131072
    heartbeat: int = 60
    max_message_size: int = 128 * 1024 * 1024
    # bytes of unsent output after which deliveries to a connection pause
    output_buffer_limit: int = 4 * 1024 * 1024
    default_user: str = "guest"
    default_pass: str = "guest"
    default_vhost: str = "/"
    # users allowed from loopback only (RabbitMQ's loopback_users)
    loopback_users: list[str] = field(default_factory=lambda: ["guest"])
    policies: list[dict[str, Any]] = field(default_factory=list)
    # the definitions store: any SQLAlchemy async URL; default SQLite in
    # the data directory ("memory://" keeps nothing)
    definitions_url: str | None = None
    # a RabbitMQ definitions file merged into the store at every start
    load_definitions: Path | None = None
    # the message journal (see docs/durability.md)
    journal_fsync: str = "batch"  # or "interval": may lose the last interval
    journal_fsync_interval_ms: int = 200
    journal_segment_size: int = 16 * 1024 * 1024
    journal_compress_threshold: int = 4096  # bytes; 0 turns compression off
    # encryption keys "ID=PATH" (32 raw bytes or 64 hex digits); the first
    # encrypts new records, the others only read old segments. The
    # environment variable AMQPD_JOURNAL_KEY="ID=HEX" adds an active key.
    journal_keys: list[str] = field(default_factory=list)
    # bytes of message bodies the broker keeps in memory; past it, bodies of
    # newly queued messages go to a scratch file in the data directory
    message_memory_budget: int = 512 * 1024 * 1024
    # resource alarms: publishers are blocked while the process RSS is above
    # the watermark (a fraction of RAM when <= 1, else bytes) or the data
    # directory's disk has less free space than disk_free_limit bytes
    memory_high_watermark: float = 0.4
    disk_free_limit: int = 50_000_000
    alarm_check_interval: float = 1.0

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_INT_KEYS = {
    "port", "channel_max", "frame_max", "heartbeat", "max_message_size",
    "output_buffer_limit", "journal_fsync_interval_ms", "journal_segment_size",
    "journal_compress_threshold", "message_memory_budget",
}  # fmt: skip
_STR_KEYS = {"log_level", "default_user", "default_pass", "default_vhost"}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def from_mapping(data: dict[str, Any], base: Config | None = None) -> Config:
    """A Config from a mapping of keys (the TOML file's shape)."""
    config = base or Config()
    changes: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"unknown configuration key '{key}'")
        changes[name] = _coerce(key, name, value)
    return config.replace(**changes)


def _coerce(key: str, name: str, value: Any) -> Any:
    if name in _INT_KEYS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"'{key}' must be a non-negative integer")
        if name == "port" and value > 65535:
            raise ConfigError("'port' must be at most 65535")
        return value
    if name in _STR_KEYS:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string")
        if name == "log_level" and value.lower() not in LOG_LEVELS:
            raise ConfigError(f"'log_level' must be one of {', '.join(LOG_LEVELS)}")
        return value.lower() if name == "log_level" else value
    if name == "bind":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("'bind' must be an address or a list of addresses")
        return value
    if name == "journal_fsync":
        if value not in ("batch", "interval"):
            raise ConfigError("'journal_fsync' must be 'batch' or 'interval'")
        return value
    if name == "journal_keys":
        if not isinstance(value, list) or not all(
            isinstance(v, str) and "=" in v for v in value
        ):
            raise ConfigError("'journal_keys' must be a list of 'ID=PATH' strings")
        return value
    if name == "definitions_url":
        if not isinstance(value, str):
            raise ConfigError("'definitions_url' must be a URL string")
        return value
    if name in ("data_dir", "load_definitions"):
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a path")
        return Path(value).expanduser()
    if name == "data_dir":
        if not isinstance(value, str):
            raise ConfigError("'data_dir' must be a path")
        return Path(value).expanduser()
    if name == "loopback_users":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("'loopback_users' must be a list of user names")
        return value
    if name in ("memory_high_watermark", "alarm_check_interval"):
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"'{key}' must be a positive number")
        return float(value)
    if name == "disk_free_limit":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"'{key}' must be a non-negative integer of bytes")
        return value
    if name == "policies":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError("'policies' must be a list of tables")
        return value
    raise ConfigError(f"unknown configuration key '{key}'")


def load_file(path: str | Path, base: Config | None = None) -> Config:
    """Read a TOML configuration file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return from_mapping(data, base)
