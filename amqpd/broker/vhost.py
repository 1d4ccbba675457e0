"""A virtual host: its exchanges, queues and bindings, and routing.

Every check a declaration needs lives here, and each failure raises the
protocol error RabbitMQ answers with, worded after RabbitMQ's texts.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Hashable
from typing import Any

from amqpd import exchanges
from amqpd.broker.message import Message
from amqpd.broker.paging import Pager
from amqpd.broker.policy import (
    Policy,
    amqp_type_name,
    resolve,
    validate_queue_arguments,
)
from amqpd.broker.queue import Queue, Scheduler
from amqpd.broker.storage import MessageStore
from amqpd.errors import (
    AccessRefused,
    CommandInvalid,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
)
from amqpd.persistence.definitions import DefinitionsStore
from amqpd.persistence.definitions import model as records

log = logging.getLogger("amqpd.vhost")

# a change to store in the definitions store, applied there in order
PersistOp = Callable[[DefinitionsStore], Awaitable[object]]


def _no_persist(op: PersistOp) -> int:
    return 0


PREDECLARED = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
# Queue arguments RabbitMQ compares when a queue is declared again.
QUEUE_EQUIVALENCE_ARGS = (
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-expires",
    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-message-ttl",
    "x-overflow", "x-queue-mode", "x-queue-type", "x-single-active-consumer",
    "x-delivery-limit", "x-queue-master-locator", "x-queue-version",
)  # fmt: skip


class Exchange:
    """One exchange: its declaration and its routing table."""

    def __init__(
        self,
        vhost: VHost,
        name: str,
        type_name: str,
        *,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.type_name = type_name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments
        self.table = exchanges.get(type_name)()
        self.needs_headers = self.table.needs_headers
        self.deleted = False
        self.policy: Policy | None = None
        # exchanges whose bindings name this one as destination, so deleting
        # it can remove them
        self.sources: set[Exchange] = set()

    @property
    def alternate(self) -> str | None:
        """The alternate exchange: the argument, else the policy's."""
        value = self.arguments.get("alternate-exchange")
        if isinstance(value, str):
            return value
        if self.policy is not None:
            value = self.policy.definition.get("alternate-exchange")
            if isinstance(value, str):
                return value
        return None

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r} {self.type_name}>"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"  # RabbitMQ is lenient about integer widths
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and a == b


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _typed(value: Any) -> str:
    if value is None:
        return "none"
    return f"the value '{_show(value)}' of type '{amqp_type_name(value)}'"


def _inequivalent_arg(key: str, where: str, got: Any, have: Any) -> PreconditionFailed:
    """RabbitMQ's 406 for an argument that differs from the declared one:
    plain values when both are there with the same kind of type, the value
    and its type otherwise, "none" for a missing one."""
    if got is None or have is None or _kind(got) != _kind(have):
        received, current = _typed(got), _typed(have)
    else:
        received, current = f"'{_show(got)}'", f"'{_show(have)}'"
    return PreconditionFailed(
        f"inequivalent arg '{key}' for {where}: received {received} "
        f"but current is {current}"
    )


def _check_same(where: str, fields: tuple[tuple[str, bool, bool], ...]) -> None:
    """406 for the first declared flag that differs from the existing one."""
    for field, new, old in fields:
        if new != old:
            raise PreconditionFailed(
                f"inequivalent arg '{field}' for {where}: received "
                f"'{_show(new)}' but current is '{_show(old)}'"
            )


def check_name(name: str, what: str) -> None:
    if len(name.encode()) > 255:
        raise PreconditionFailed(f"{what} name longer than 255 bytes")


# The rules below are also applied to a definitions file before it is
# imported (persistence/definitions/validation.py), so they take names only.


def check_queue_name(name: str) -> None:
    """403 for a queue name that is the broker's to give (amq.*)."""
    if name.startswith("amq."):
        raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")


def exchange_type(type_name: str) -> type[exchanges.ExchangeType]:
    """The exchange type of that name; 503 for a name none is registered as."""
    try:
        return exchanges.get(type_name)
    except KeyError:
        raise CommandInvalid(f"unknown exchange type '{type_name}'") from None


def check_bindable(source: str, destination: str, to_exchange: bool) -> None:
    """403 for a binding from the default exchange, or to it."""
    if source == "" or (to_exchange and destination == ""):
        raise AccessRefused("operation not permitted on the default exchange")


class VHost:
    """Exchanges, queues and bindings of one virtual host."""

    def __init__(self, name: str, scheduler: Scheduler) -> None:
        self.name = name
        self.scheduler = scheduler
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.policies: dict[str, Policy] = {}
        # hands a change to the definitions store; returns its ticket
        self.persist: Callable[[PersistOp], int] = _no_persist
        # the journal of persistent messages (None: nothing is journaled)
        self.store: MessageStore | None = None
        # the budget of message bodies in memory (None: no accounting)
        self.pager: Pager | None = None
        self._declare_defaults()

    def _declare_defaults(self) -> None:
        self.exchanges[""] = Exchange(
            self, "", "direct", durable=True, auto_delete=False, internal=False,
            arguments={},
        )  # fmt: skip
        for name, type_name in PREDECLARED.items():
            self.exchanges[name] = Exchange(
                self, name, type_name, durable=True, auto_delete=False,
                internal=False, arguments={},
            )  # fmt: skip

    def where(self, kind: str, name: str) -> str:
        return f"{kind} '{name}' in vhost '{self.name}'"

    # exchanges

    def get_exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise NotFound(f"no {self.where('exchange', name)}")
        return exchange

    def declare_exchange(
        self,
        name: str,
        type_name: str,
        *,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> Exchange:
        check_name(name, "exchange")
        if passive and name:
            return self.get_exchange(name)
        if name == "" or name.startswith("amq."):
            existing = self.exchanges.get(name)
            if existing is None or name == "":
                raise AccessRefused(
                    f"exchange name '{name}' contains reserved prefix 'amq.*'"
                    if name
                    else "operation not permitted on the default exchange"
                )
        existing = self.exchanges.get(name)
        if existing is not None:
            self._check_exchange_equivalent(
                existing, type_name, durable, auto_delete, internal, arguments
            )
            return existing
        exchange_type(type_name)
        exchange = Exchange(
            self, name, type_name, durable=durable, auto_delete=auto_delete,
            internal=internal, arguments=arguments,
        )  # fmt: skip
        exchange.policy = self._policy_for("exchanges", name)
        self.exchanges[name] = exchange
        if durable:
            record = records.Exchange(
                self.name, name, type_name, durable, auto_delete, internal, arguments
            )
            self.persist(lambda s: s.put_exchange(record))
        return exchange

    def _check_exchange_equivalent(
        self,
        ex: Exchange,
        type_name: str,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: dict[str, Any],
    ) -> None:
        where = self.where("exchange", ex.name)
        if ex.type_name != type_name:
            raise PreconditionFailed(
                f"inequivalent arg 'type' for {where}: received '{type_name}' "
                f"but current is '{ex.type_name}'"
            )
        _check_same(where, (
            ("durable", durable, ex.durable),
            ("auto_delete", auto_delete, ex.auto_delete),
            ("internal", internal, ex.internal),
        ))  # fmt: skip
        key = "alternate-exchange"
        if not _same(arguments.get(key), ex.arguments.get(key)):
            raise _inequivalent_arg(
                key, where, arguments.get(key), ex.arguments.get(key)
            )

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise AccessRefused(
                f"deletion of system {self.where('exchange', name)} not allowed"
            )
        exchange = self.get_exchange(name)
        if if_unused and exchange.table.has_bindings():
            raise PreconditionFailed(f"{self.where('exchange', name)} in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        exchange.deleted = True
        self.exchanges.pop(exchange.name, None)
        if exchange.durable:
            vhost, name = self.name, exchange.name
            self.persist(lambda s: s.delete_exchange(vhost, name))
        for source in list(exchange.sources):
            source.table.unbind_destination(exchange)
            self._maybe_auto_delete(source)
        for dest, _key, _args in list(exchange.table.bindings()):
            if isinstance(dest, Exchange):
                dest.sources.discard(exchange)

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        if (
            exchange.auto_delete
            and not exchange.deleted
            and not exchange.table.has_bindings()
        ):
            self._remove_exchange(exchange)

    # queues

    def get_queue(self, name: str, owner: object | None = None) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            raise NotFound(f"no {self.where('queue', name)}")
        if queue.owner is not None and queue.owner is not owner:
            raise self._locked(name)
        return queue

    def _locked(self, name: str) -> ResourceLocked:
        return ResourceLocked(
            f"cannot obtain exclusive access to locked "
            f"{self.where('queue', name)}. It could be originally declared "
            "on another connection or the exclusive property value does "
            "not match that of the original declaration."
        )

    def declare_queue(
        self,
        name: str,
        *,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
        owner: object,
    ) -> Queue:
        check_name(name, "queue")
        if passive:
            # as in RabbitMQ, a passive declare counts as use (x-expires)
            queue = self.get_queue(name, owner)
            queue.touch()
            return queue
        if not name:
            name = "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode()[:22]
        else:
            check_queue_name(name)
        existing = self.queues.get(name)
        if existing is not None:
            # strict, as RabbitMQ: the declaration's exclusive flag must
            # match too, or the answer is 405 rather than 406
            if existing.owner is not (owner if exclusive else None):
                raise self._locked(name)
            self._check_queue_equivalent(
                existing, durable, exclusive, auto_delete, arguments
            )
            existing.touch()
            return existing
        validate_queue_arguments(
            arguments, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete, where=self.where("queue", name),
        )  # fmt: skip
        queue = Queue(
            self, name, durable=durable,
            exclusive_owner=owner if exclusive else None,
            auto_delete=auto_delete, arguments=arguments,
        )  # fmt: skip
        self.queues[name] = queue
        if durable and not exclusive:
            record = records.Queue(self.name, name, durable, auto_delete, arguments)
            queue.definition_ticket = self.persist(lambda s: s.put_queue(record))
        policy = self._policy_for("queues", name)
        if policy is not None:
            queue.apply_settings(resolve(arguments, policy))
        return queue

    def _check_queue_equivalent(
        self,
        queue: Queue,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any],
    ) -> None:
        where = self.where("queue", queue.name)
        _check_same(where, (
            ("durable", durable, queue.durable),
            ("exclusive", exclusive, queue.exclusive),
            ("auto_delete", auto_delete, queue.auto_delete),
        ))  # fmt: skip
        for key in QUEUE_EQUIVALENCE_ARGS:
            got, have = arguments.get(key), queue.arguments.get(key)
            default = (None, "classic")  # naming the default type changes nothing
            if key == "x-queue-type" and got in default and have in default:
                continue
            if not _same(got, have):
                raise _inequivalent_arg(key, where, got, have)

    def delete_queue(
        self,
        name: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        owner: object | None = None,
        check_owner: bool = False,
    ) -> int:
        """Delete a queue; returns the number of ready messages it held."""
        queue = self.get_queue(name, owner) if check_owner else self.queues.get(name)
        if queue is None:
            raise NotFound(f"no {self.where('queue', name)}")
        if if_unused and queue.consumers:
            raise PreconditionFailed(f"{self.where('queue', name)} in use")
        if if_empty and queue.ready:
            raise PreconditionFailed(f"{self.where('queue', name)} not empty")
        count = len(queue.ready)
        queue.close()
        del self.queues[name]
        if queue.durable and not queue.exclusive:
            vhost = self.name
            self.persist(lambda s: s.delete_queue(vhost, name))
        for exchange in list(self.exchanges.values()):
            if exchange.table.unbind_destination(queue) and exchange.name:
                self._maybe_auto_delete(exchange)
        for consumer in list(queue.consumers):
            consumer.channel.cancel_by_server(consumer)
        queue.consumers.clear()
        return count

    # policies

    def _policy_for(self, kind: str, name: str) -> Policy | None:
        best: Policy | None = None
        for policy in self.policies.values():
            if policy.matches(kind, name) and (
                best is None or policy.priority > best.priority
            ):
                best = policy
        return best

    def set_policy(self, policy: Policy, *, store: bool = True) -> None:
        self.policies[policy.name] = policy
        self.apply_policies()
        if not store:
            return
        record = records.Policy(
            self.name, policy.name, policy.pattern, policy.definition,
            policy.priority, policy.apply_to,
        )  # fmt: skip
        self.persist(lambda s: s.put_policy(record))

    def clear_policy(self, name: str) -> bool:
        if self.policies.pop(name, None) is None:
            return False
        self.apply_policies()
        vhost = self.name
        self.persist(lambda s: s.delete_policy(vhost, name))
        return True

    def apply_policies(self) -> None:
        """Re-resolve every queue's and exchange's policy (after a change)."""
        for queue in list(self.queues.values()):
            if not queue.deleted:
                policy = self._policy_for("queues", queue.name)
                queue.apply_settings(resolve(queue.arguments, policy))
        for exchange in self.exchanges.values():
            if exchange.name and not exchange.name.startswith("amq."):
                exchange.policy = self._policy_for("exchanges", exchange.name)

    # bindings

    def bind(
        self,
        destination: Queue | Exchange,
        source_name: str,
        routing_key: str,
        arguments: dict[str, Any],
    ) -> None:
        source = self._bindable_source(source_name, destination)
        try:
            source.table.validate_binding(routing_key, arguments)
        except exchanges.BindingError as exc:
            raise PreconditionFailed(str(exc)) from None
        if source.table.bind(destination, routing_key, arguments):
            record = self._binding_record(source, destination, routing_key, arguments)
            if record is not None:
                self.persist(lambda s: s.put_binding(record))
        if isinstance(destination, Exchange):
            destination.sources.add(source)

    def unbind(
        self,
        destination: Queue | Exchange,
        source_name: str,
        routing_key: str,
        arguments: dict[str, Any],
    ) -> None:
        source = self._bindable_source(source_name, destination)
        if not source.table.unbind(destination, routing_key, arguments):
            return  # RabbitMQ answers unbind-ok for a binding that is not there
        record = self._binding_record(source, destination, routing_key, arguments)
        if record is not None:
            self.persist(lambda s: s.delete_binding(record))
        if isinstance(destination, Exchange) and not any(
            d is destination for d, _, _ in source.table.bindings()
        ):
            destination.sources.discard(source)
        self._maybe_auto_delete(source)

    def _binding_record(
        self,
        source: Exchange,
        destination: Queue | Exchange,
        routing_key: str,
        arguments: dict[str, Any],
    ) -> records.Binding | None:
        """The stored form of a binding between durable entities, else None."""
        if not source.durable or not destination.durable:
            return None
        if isinstance(destination, Queue) and destination.exclusive:
            return None
        if isinstance(destination, Queue):
            return records.Binding(
                self.name, source.name, destination.name, "queue", routing_key,
                arguments,
            )  # fmt: skip
        return records.Binding(
            self.name, source.name, destination.name, "exchange", routing_key,
            arguments,
        )  # fmt: skip

    def _bindable_source(
        self, source_name: str, destination: Queue | Exchange
    ) -> Exchange:
        to_exchange = isinstance(destination, Exchange)
        check_bindable(source_name, destination.name, to_exchange)
        return self.get_exchange(source_name)

    # routing

    def route(self, exchange: Exchange, message: Message) -> list[Queue]:
        """Every queue the message goes to, each once, following
        exchange-to-exchange bindings and alternate exchanges."""
        if exchange.name == "":
            queue = self.queues.get(message.routing_key)
            return [queue] if queue is not None else []
        headers = message.headers if exchange.needs_headers else None
        found = exchange.table.route(message.routing_key, headers)
        if found and all(type(d) is Queue for d in found):
            return list(found)  # type: ignore[arg-type]
        queues: dict[int, Queue] = {}
        self._route_into(exchange, message, found, queues, {id(exchange)})
        return list(queues.values())

    def _route_into(
        self,
        exchange: Exchange,
        message: Message,
        found: Collection[Hashable],
        queues: dict[int, Queue],
        seen: set[int],
    ) -> None:
        for dest in found:
            if isinstance(dest, Queue):
                queues[id(dest)] = dest
            elif isinstance(dest, Exchange) and id(dest) not in seen:
                seen.add(id(dest))
                headers = message.headers if dest.needs_headers else None
                self._route_into(
                    dest, message, dest.table.route(message.routing_key, headers),
                    queues, seen,
                )  # fmt: skip
        # as in RabbitMQ, the alternate exchange is tried only when the
        # exchange's own bindings matched nothing, not when every match was
        # an exchange that routed nowhere
        if not found and exchange.alternate:
            alt = self.exchanges.get(exchange.alternate)
            if alt is not None and id(alt) not in seen:
                seen.add(id(alt))
                headers = message.headers if alt.needs_headers else None
                self._route_into(
                    alt, message, alt.table.route(message.routing_key, headers),
                    queues, seen,
                )  # fmt: skip
