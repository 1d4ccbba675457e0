"""Check definitions against the broker's rules before they are stored.

At start the broker declares what the store holds, and an entry it refuses
then is logged and left out (amqpd/server/definitions.py). So an import is
checked first, with the broker's own checks (broker/vhost.py,
broker/policy.py, the exchange registry), and refused whole if any entry
fails, as `rabbitmqctl import_definitions` does: each failing entry is one
Problem that names it, and nothing is stored.

An import adds to the store, so a binding may name exchanges and queues of
the file, of the store, or the ones every vhost has (amq.direct, ...).

This module imports the broker, and the broker imports this package, so
the package's __init__ leaves it out: import it by its full name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from amqpd import exchanges
from amqpd.broker.policy import validate_policy, validate_queue_arguments
from amqpd.broker.vhost import (
    PREDECLARED,
    check_bindable,
    check_name,
    check_queue_name,
    exchange_type,
)
from amqpd.errors import AMQPError

from .model import Binding, Definitions, Exchange, Policy, Queue
from .rabbitmq_json import ImportSummary, InvalidDefinitions, parse_json
from .store import DefinitionsStore
from .values import thaw_table

# what the broker's checks raise for an entry they refuse
_REFUSALS = (AMQPError, ValueError, exchanges.BindingError)

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one entry of a definitions file would be refused."""

    vhost: str
    what: str  # "queue 'q1'", "policy 'ttl'", "binding from exchange ..."
    reason: str

    @property
    def where(self) -> str:
        return f"{self.what} in vhost '{self.vhost}'"

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class DefinitionsRefused(InvalidDefinitions):
    """Entries the broker would refuse; `problems` lists each of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


def find_problems(
    definitions: Definitions, existing: Definitions | None = None
) -> list[Problem]:
    """Every entry of `definitions` that the broker would refuse, once
    merged into a store holding `existing`."""
    existing = existing or Definitions()
    problems: list[Problem] = []
    for policy in definitions.policies:
        _check(problems, policy.vhost, f"policy '{policy.name}'", _policy, policy)
    for ex in definitions.exchanges:
        _check(problems, ex.vhost, f"exchange '{ex.name}'", _exchange, ex)
    for queue in definitions.queues:
        _check(problems, queue.vhost, f"queue '{queue.name}'", _queue, queue)
    topology = _Topology(existing, definitions)
    for binding in definitions.bindings:
        _check(problems, binding.vhost, _binding_what(binding), topology.check, binding)
    return problems


def refuse_invalid(
    definitions: Definitions, existing: Definitions | None = None
) -> None:
    """Raise DefinitionsRefused if find_problems finds any."""
    problems = find_problems(definitions, existing)
    if problems:
        raise DefinitionsRefused(problems)


async def import_checked(
    store: DefinitionsStore, document: Mapping[str, object]
) -> ImportSummary:
    """import_json, refusing the whole document (DefinitionsRefused) if the
    broker would refuse any of it; the store is then left as it was."""
    summary = parse_json(document)
    refuse_invalid(summary.definitions, await store.load())
    await store.merge(summary.definitions)
    return summary


def _check(
    problems: list[Problem],
    vhost: str,
    what: str,
    check: Callable[[_R, str], object],
    record: _R,
) -> None:
    where = f"{what} in vhost '{vhost}'"
    try:
        check(record, where)
    except _REFUSALS as exc:
        # the broker's texts name the entity as "for <where>"; the Problem
        # names it already
        reason = str(exc).replace(f" for {where}", "")
        problems.append(Problem(vhost, what, reason))


def _policy(policy: Policy, where: str) -> None:
    definition = thaw_table(policy.definition)
    validate_policy(policy.pattern, definition, policy.priority, policy.apply_to)


def _exchange(ex: Exchange, where: str) -> None:
    check_name(ex.name, "exchange")
    exchange_type(ex.type)


def _queue(queue: Queue, where: str) -> None:
    if not queue.name:
        # declaring "" makes up a new name at every start
        raise ValueError("a queue needs a name")
    check_name(queue.name, "queue")
    check_queue_name(queue.name)
    validate_queue_arguments(
        thaw_table(queue.arguments), durable=queue.durable, exclusive=False,
        auto_delete=queue.auto_delete, where=where,
    )  # fmt: skip


def _binding_what(binding: Binding) -> str:
    what = (
        f"binding from exchange '{binding.source}' to "
        f"{binding.destination_type} '{binding.destination}'"
    )
    if binding.routing_key:
        what += f" with routing key '{binding.routing_key}'"
    return what


class _Topology:
    """The exchanges and queues there will be once the file is merged."""

    def __init__(self, *snapshots: Definitions) -> None:
        self.exchange_types: dict[tuple[str, str], str] = {}
        self.queues: set[tuple[str, str]] = set()
        for snapshot in snapshots:  # later ones replace, as a merge does
            for ex in snapshot.exchanges:
                self.exchange_types[ex.vhost, ex.name] = ex.type
            self.queues.update((q.vhost, q.name) for q in snapshot.queues)

    def exchange_type(self, vhost: str, name: str) -> str | None:
        return self.exchange_types.get((vhost, name), PREDECLARED.get(name))

    def check(self, binding: Binding, where: str) -> None:
        vhost, source = binding.vhost, binding.source
        to_exchange = binding.destination_type == "exchange"
        check_bindable(source, binding.destination, to_exchange)
        missing = [
            _missing("exchange", name)
            for name in [source] + ([binding.destination] if to_exchange else [])
            if self.exchange_type(vhost, name) is None
        ]
        if not to_exchange and (vhost, binding.destination) not in self.queues:
            missing.append(_missing("queue", binding.destination))
        if missing:
            raise ValueError("; ".join(missing))
        try:
            table = exchanges.get(self.exchange_type(vhost, source) or "")()
        except KeyError:
            return  # an unknown type: the exchange's own problem says so
        table.validate_binding(binding.routing_key, thaw_table(binding.arguments))


def _missing(kind: str, name: str) -> str:
    return f"no {kind} '{name}' in the file or the store"


__all__ = [
    "DefinitionsRefused",
    "Problem",
    "find_problems",
    "import_checked",
    "refuse_invalid",
]
