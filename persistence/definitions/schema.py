"""The SQL schema of the definitions store, and its migrations.

Tables carry an "amqpd_" prefix so that the store can share a database
with other applications. JSON columns hold the tagged form of values.py.

amqpd_schema_version has one row per migration applied. On open, every
migration newer than the highest row runs, in order, in the same
transaction as its row. A database at a version newer than this release
knows is refused (SchemaTooNew) rather than written to.

Migration 1 creates the tables from the definitions below, which are the
version 1 layout. A later release that changes a table adds a migration
that alters it, and gives migration 1 a frozen copy of the version 1
tables, so that a new database still goes through every step.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

import sqlalchemy as sa

from .store import SCHEMA_VERSION, SchemaTooNew

log = logging.getLogger("amqpd.definitions")

metadata = sa.MetaData()

# AMQP short strings (vhost, exchange, queue names, routing keys) are at
# most 255 bytes, so at most 255 characters.
_NAME = sa.String(255)


def _name(column: str, *, key: bool = True) -> sa.Column[str]:
    return sa.Column(column, _NAME, primary_key=key, nullable=False)


def _json(column: str) -> sa.Column[object]:
    return sa.Column(column, sa.JSON(), nullable=False)


schema_version = sa.Table(
    "amqpd_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.String(40), nullable=False),
)

vhosts = sa.Table(
    "amqpd_vhosts",
    metadata,
    _name("name"),
    sa.Column("description", sa.Text, nullable=False),
    _json("tags"),
    sa.Column("default_queue_type", _NAME, nullable=True),
)

users = sa.Table(
    "amqpd_users",
    metadata,
    _name("name"),
    sa.Column("password_hash", sa.Text, nullable=False),
    _name("hashing_algorithm", key=False),
    _json("tags"),
    _json("limits"),
)

permissions = sa.Table(
    "amqpd_permissions",
    metadata,
    _name("user_name"),
    _name("vhost"),
    sa.Column("configure", sa.Text, nullable=False),
    sa.Column("write", sa.Text, nullable=False),
    sa.Column("read", sa.Text, nullable=False),
)

topic_permissions = sa.Table(
    "amqpd_topic_permissions",
    metadata,
    _name("user_name"),
    _name("vhost"),
    _name("exchange"),
    sa.Column("write", sa.Text, nullable=False),
    sa.Column("read", sa.Text, nullable=False),
)

exchanges = sa.Table(
    "amqpd_exchanges",
    metadata,
    _name("vhost"),
    _name("name"),
    _name("type", key=False),
    sa.Column("durable", sa.Boolean, nullable=False),
    sa.Column("auto_delete", sa.Boolean, nullable=False),
    sa.Column("internal", sa.Boolean, nullable=False),
    _json("arguments"),
)

queues = sa.Table(
    "amqpd_queues",
    metadata,
    _name("vhost"),
    _name("name"),
    sa.Column("durable", sa.Boolean, nullable=False),
    sa.Column("auto_delete", sa.Boolean, nullable=False),
    _json("arguments"),
)

bindings = sa.Table(
    "amqpd_bindings",
    metadata,
    _name("vhost"),
    _name("source"),
    sa.Column("destination_type", sa.String(8), primary_key=True),
    _name("destination"),
    _name("routing_key"),
    # values.table_key of the arguments: a binding's arguments are part of
    # its identity, and a digest keeps the primary key short.
    sa.Column("arguments_key", sa.String(64), primary_key=True),
    _json("arguments"),
)

policies = sa.Table(
    "amqpd_policies",
    metadata,
    _name("vhost"),
    _name("name"),
    sa.Column("pattern", sa.Text, nullable=False),
    _name("apply_to", key=False),
    sa.Column("priority", sa.Integer, nullable=False),
    _json("definition"),
)

parameters = sa.Table(
    "amqpd_parameters",
    metadata,
    _name("vhost"),
    _name("component"),
    _name("name"),
    _json("value"),
)

global_parameters = sa.Table(
    "amqpd_global_parameters",
    metadata,
    _name("name"),
    _json("value"),
)

Migration = Callable[[sa.Connection], None]


def _create_version_1(connection: sa.Connection) -> None:
    tables = [table for table in metadata.sorted_tables if table is not schema_version]
    metadata.create_all(connection, tables=tables)


MIGRATIONS: tuple[tuple[int, str, Migration], ...] = (
    (1, "create the definitions tables", _create_version_1),
)
"""(version, what it does, function): append one per schema change."""

assert MIGRATIONS[-1][0] == SCHEMA_VERSION, "store.SCHEMA_VERSION is stale"
assert [m[0] for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def current_version(connection: sa.Connection) -> int:
    """The highest applied migration, 0 for a database with no schema."""
    if not sa.inspect(connection).has_table(schema_version.name):
        return 0
    query = sa.select(sa.func.max(schema_version.c.version))
    return connection.execute(query).scalar_one_or_none() or 0


def migrate(connection: sa.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; return the version found."""
    found = current_version(connection)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"definitions schema is at version {found}; "
            f"this amqpd knows versions up to {SCHEMA_VERSION}"
        )
    if found == 0:
        schema_version.create(connection, checkfirst=True)
    for version, purpose, step in MIGRATIONS:
        if version <= found:
            continue
        log.info("definitions schema migration %d: %s", version, purpose)
        step(connection)
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        connection.execute(
            schema_version.insert().values(version=version, applied_at=now)
        )
    return found
