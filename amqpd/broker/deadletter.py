"""Dead-lettering: the x-death header and republishing to the DLX.

The dead-lettered copy keeps every property and header of the original byte
for byte except the ones RabbitMQ changes: ``expiration`` is removed, and
``x-death`` (an array of tables, most recent first), ``x-first-death-*`` and
``x-last-death-*`` are written.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from amqpd.broker.message import BodyLost, Message
from amqpd.codec import properties, table
from amqpd.codec.fastpath import shortstr

log = logging.getLogger("amqpd.deadletter")

if TYPE_CHECKING:
    from amqpd.broker.queue import Entry, Queue
    from amqpd.broker.vhost import Exchange

REJECTED, EXPIRED, MAXLEN, DELIVERY_LIMIT = (
    "rejected", "expired", "maxlen", "delivery_limit",
)  # fmt: skip


def _split_array(raw: bytes) -> list[bytes]:
    """Items of an encoded array value ('A' tag included)."""
    end = 5 + int.from_bytes(raw[1:5], "big")
    items = []
    pos = 5
    while pos < end:
        size = table.value_length(raw, pos)
        items.append(raw[pos : pos + size])
        pos += size
    return items


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    value = table.decode_value(raw)
    return value.decode() if isinstance(value, bytes) else str(value)


def routing_keys(message: Message) -> list[str]:
    """The routing key and any CC keys the message was published with."""
    keys = [message.routing_key]
    headers = message.headers or {}
    cc = headers.get("CC")
    if isinstance(cc, list):
        keys += [k if isinstance(k, str) else k.decode(errors="replace")
                 for k in cc if isinstance(k, str | bytes)]  # fmt: skip
    return keys


def dead_lettered_copy(
    message: Message, queue_name: str, reason: str, dlx: str, routing_key: str,
    drop: tuple[str, ...] = (),
) -> tuple[Message, list[tuple[str, str]]]:  # fmt: skip
    """The copy published to the DLX, and the (queue, reason) of every death
    in its history, most recent first. Headers named in ``drop`` are left
    out of the copy."""
    raw_headers = properties.raw(message.header, message.spans, "headers")
    entries = table.split_table(raw_headers) if raw_headers else []
    by_key = dict(entries)
    expiration = properties.get(message.header, message.spans, "expiration")
    raw_deaths = by_key.get("x-death", b"")
    # as RabbitMQ does, an x-death that is not an array of tables (a client
    # rewrote it) is dropped and the history starts afresh
    deaths = _split_array(raw_deaths) if raw_deaths[:1] == b"A" else []
    deaths = [item for item in deaths if item[:1] == b"F"]

    history: list[tuple[str, str]] = [(queue_name, reason)]
    kept: list[bytes] = []
    current: bytes | None = None
    for item in deaths:
        fields = table.split_table(item[1:])
        found = dict(fields)
        q, r = _text(found.get("queue")), _text(found.get("reason"))
        if current is None and q == queue_name and r == reason:
            # RabbitMQ keeps the first such death and only bumps its count
            old = table.decode_value(found["count"]) if "count" in found else 1
            old = old if isinstance(old, int) else 1
            bumped = [(k, table.long_long(int(old) + 1) if k == "count" else v)
                      for k, v in fields]  # fmt: skip
            if "count" not in found:
                bumped.insert(0, ("count", table.long_long(2)))
            current = table.table(bumped)
            continue
        kept.append(item)
        history.append((q or "", r or ""))
    if current is None:
        death = [
            ("count", table.long_long(1)),
            ("reason", table.longstr(reason)),
            ("queue", table.longstr(queue_name)),
            ("time", table.timestamp(int(time.time()))),
            ("exchange", table.longstr(message.exchange)),
            ("routing-keys",
             table.array([table.longstr(k) for k in routing_keys(message)])),
        ]  # fmt: skip
        if expiration is not None:
            death.append(("original-expiration", table.longstr(expiration)))
        current = table.table(death)

    new_entries = [(k, v) for k, v in entries if k != "x-death" and k not in drop
                   and not k.startswith("x-last-death-")]  # fmt: skip
    present = {k for k, _ in new_entries}
    if "x-first-death-queue" not in present:
        new_entries += [
            ("x-first-death-queue", table.longstr(queue_name)),
            ("x-first-death-reason", table.longstr(reason)),
            ("x-first-death-exchange", table.longstr(message.exchange)),
        ]
    new_entries += [
        ("x-last-death-queue", table.longstr(queue_name)),
        ("x-last-death-reason", table.longstr(reason)),
        ("x-last-death-exchange", table.longstr(message.exchange)),
        ("x-death", table.array([current, *kept])),
    ]
    header = properties.rebuild(
        message.header,
        message.spans,
        {"headers": table.join_table(new_entries), "expiration": None},
    )
    copy = message.derive(
        dlx, routing_key, shortstr(dlx) + shortstr(routing_key), header
    )
    return copy, history


def is_cycle(history: list[tuple[str, str]], target: str) -> bool:
    """True if going to ``target`` closes a loop with no rejection in it:
    RabbitMQ's rule, read from the most recent death back to the last death
    in ``target``."""
    for queue_name, reason in history:
        if reason == REJECTED:
            return False
        if queue_name == target:
            return True
    return False


def dead_letter(
    queue: Queue, entries: list[Entry], reason: str, *, queued: bool = True
) -> None:
    """Publish dead-lettered copies of ``entries`` to the queue's DLX (or
    just drop them), journaling the move for persistent messages.

    ``queued`` is False for a message the queue refused (reject-publish-dlx):
    it never entered the queue, nor the queue's journal, so there is no
    removal to record; a persistent copy for durable queues is journaled as
    a new message.
    """
    settings = queue.settings
    vhost = queue.vhost
    dlx_name = settings.dead_letter_exchange
    exchange = vhost.exchanges.get(dlx_name) if dlx_name is not None else None
    store = queue.store if queued else None
    for entry in entries:
        journaled = store is not None and entry.message.journal_id
        if exchange is None or dlx_name is None:
            # no DLX, or it does not exist: RabbitMQ drops them too
            if journaled:
                store.removed(queue, entry)  # type: ignore[union-attr]
            continue
        try:
            copy, targets = _route_copy(queue, entry, reason, dlx_name, exchange)
        except BodyLost as exc:  # damaged on disk: nothing to dead-letter
            log.error(
                "queue '%s' in vhost '%s': could not dead-letter a message whose "
                "body cannot be read back: %s", queue.name, vhost.name, exc,
            )  # fmt: skip
            if journaled:
                store.removed(queue, entry)  # type: ignore[union-attr]
            continue
        if journaled:
            store.moved(queue, entry, copy, targets)  # type: ignore[union-attr]
        elif targets and vhost.store is not None and copy.persistent:
            vhost.store.publish(copy, targets)
        if targets and vhost.pager is not None:
            journaled_at = None
            if copy.journal_id and all(t.journaled for t in targets):
                journaled_at = vhost.store.journal.appended_lsn  # type: ignore[union-attr]
            vhost.pager.admit(copy, journaled_at)
        for target in targets:
            target.publish(copy)


def _route_copy(
    queue: Queue, entry: Entry, reason: str, dlx_name: str, exchange: Exchange
) -> tuple[Message, list[Queue]]:
    """The dead-lettered copy and the queues it goes to, cycles left out."""
    settings = queue.settings
    original = entry.message
    keys = (
        [settings.dead_letter_routing_key]
        if settings.dead_letter_routing_key is not None
        else routing_keys(original)
    )
    # as RabbitMQ does: a dead-letter routing key replaces the CC keys, and
    # x-delivery-count is added per delivery, never carried by the message
    drop: tuple[str, ...] = ()
    if settings.dead_letter_routing_key is not None:
        drop = ("CC",)
    if queue.count_deliveries:
        drop += ("x-delivery-count",)
    copy, history = dead_lettered_copy(
        original, queue.name, reason, dlx_name, keys[0], drop
    )
    targets: dict[int, Queue] = {}
    for key in keys:
        routed = copy if key == copy.routing_key else Message(
            copy.exchange, key, shortstr(dlx_name) + shortstr(key),
            copy.header, copy.body, copy.spans,
        )  # fmt: skip
        for target in queue.vhost.route(exchange, routed):
            if is_cycle(history, target.name):
                continue  # a cycle without a rejection: drop
            if not target.refuses(copy):
                targets[id(target)] = target
    return copy, list(targets.values())
