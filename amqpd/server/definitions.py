"""The broker's side of the definitions store: restore at start, then keep
storing every change to durable definitions, in order, from one task.

Declarations are answered at once and stored a moment later; a publisher
confirm does not wait for the store. A crash in that moment loses the
declaration but not the confirmed messages: at start, the journal's messages
of a queue the store does not know go to a plain durable queue of that name
(broker/storage.py). A clean stop waits for the store (``flush``).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from amqpd.auth.users import User
from amqpd.broker.policy import Policy, validate_policy
from amqpd.broker.queue import Queue
from amqpd.broker.vhost import Exchange, PersistOp
from amqpd.errors import AMQPError
from amqpd.persistence.definitions import (
    DefinitionsError,
    DefinitionsStore,
    StoreUnavailable,
    sqlite_url,
    thaw,
    thaw_table,
)
from amqpd.persistence.definitions.validation import (
    DefinitionsRefused,
    import_checked,
)

if TYPE_CHECKING:
    from amqpd.broker.node import Node

log = logging.getLogger("amqpd.definitions")


def store_url(configured: str | None, data_dir: Path) -> str:
    return configured or sqlite_url(data_dir)


async def load_file(store: DefinitionsStore, path: Path) -> None:
    """Merge a RabbitMQ definitions file into the store (config
    ``load_definitions``); it adds and replaces, it deletes nothing. A file
    with an entry the broker would refuse is refused whole, store untouched."""
    try:
        document = json.loads(await anyio.Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DefinitionsError(f"cannot read definitions file {path}: {exc}") from None
    try:
        await import_checked(store, document)
    except DefinitionsRefused as exc:
        raise DefinitionsError(f"definitions file {path} refused: {exc}") from None


async def restore(node: Node, store: DefinitionsStore) -> None:
    """Rebuild vhosts, users, permissions and durable topology from the store."""
    defs = await store.load()
    for vhost in defs.vhosts:
        node.add_vhost(vhost.name, store=False)
    for user in defs.users:
        node.put_user(
            User(
                user.name, user.password_hash, user.hashing_algorithm, list(user.tags)
            ),
            store=False,
        )
    for perm in defs.permissions:
        node.set_permission(
            perm.user, perm.vhost, perm.configure, perm.write, perm.read, store=False
        )
    for policy in defs.policies:
        target = node.vhosts.get(policy.vhost)
        if target is None:
            continue
        definition = thaw_table(policy.definition)
        with _skipping("policy", policy.vhost, policy.name):
            validate_policy(
                policy.pattern, definition, policy.priority, policy.apply_to
            )
            target.policies[policy.name] = Policy(
                policy.vhost, policy.name, policy.pattern, definition,
                policy.priority, policy.apply_to,
            )  # fmt: skip
    for ex in defs.exchanges:
        target = node.vhosts.get(ex.vhost)
        if target is None or ex.name in target.exchanges:
            continue
        with _skipping("exchange", ex.vhost, ex.name):
            target.declare_exchange(
                ex.name, ex.type, passive=False, durable=True,
                auto_delete=ex.auto_delete, internal=ex.internal,
                arguments=thaw_table(ex.arguments),
            )  # fmt: skip
    for q in defs.queues:
        target = node.vhosts.get(q.vhost)
        if target is None:
            continue
        with _skipping("queue", q.vhost, q.name):
            target.declare_queue(
                q.name, passive=False, durable=True, exclusive=False,
                auto_delete=q.auto_delete, arguments=thaw_table(q.arguments),
                owner=None,
            )  # fmt: skip
    for b in defs.bindings:
        target = node.vhosts.get(b.vhost)
        if target is None:
            continue
        dest: Queue | Exchange | None = (
            target.queues.get(b.destination)
            if b.destination_type == "queue"
            else target.exchanges.get(b.destination)
        )
        if dest is None or b.source not in target.exchanges:
            continue
        with _skipping("binding from", b.vhost, b.source):
            target.bind(dest, b.source, b.routing_key, thaw_table(b.arguments))
    for restored in node.vhosts.values():
        restored.apply_policies()
    log.info(
        "definitions restored: %d vhosts, %d users, %d exchanges, %d queues, "
        "%d bindings, %d policies",
        len(defs.vhosts), len(defs.users), len(defs.exchanges), len(defs.queues),
        len(defs.bindings), len(defs.policies),
    )  # fmt: skip


@contextmanager
def _skipping(kind: str, vhost: str, name: str) -> Iterator[None]:
    """A stored entity the broker refuses now is logged and left out (imports
    are checked first, but a store may predate that or a rule's change)."""
    try:
        yield
    except (AMQPError, ValueError, KeyError) as exc:
        log.warning("skipped stored %s '%s' in vhost '%s': %s", kind, name, vhost, exc)


class DefinitionsWriter:
    """Applies definition changes to the store in order, from one task."""

    def __init__(
        self, store: DefinitionsStore, on_stored: Callable[[int], None]
    ) -> None:
        self.store = store
        self.on_stored = on_stored
        self.submitted = 0
        self.stored = 0
        self._ops: deque[PersistOp] = deque()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()

    def submit(self, op: PersistOp) -> int:
        """Queue a change; its ticket (ticket N is stored once N changes are)."""
        self._ops.append(op)
        self._wake.set()
        if self._idle.is_set():
            self._idle = anyio.Event()
        self.submitted += 1
        return self.submitted

    @property
    def pending(self) -> bool:
        return not self._idle.is_set()

    async def flush(self) -> None:
        """Wait until every change submitted so far is stored."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._ops:
                op = self._ops.popleft()
                try:
                    await op(self.store)
                except StoreUnavailable as exc:  # its one line says it all
                    log.error("could not store a definition change: %s", exc)
                except Exception:  # a store error must not stop the broker
                    log.exception("could not store a definition change")
                self.stored += 1
                self.on_stored(self.stored)
            self._idle.set()


__all__ = ["DefinitionsWriter", "load_file", "restore", "store_url", "thaw"]
