"""Queue arguments, policies and the settings a queue runs with.

A queue's effective settings come from its x-arguments and the policy of
highest priority that matches it. Where both set a key, RabbitMQ's rule
holds: the lower value wins for the numeric limits (message-ttl, expires,
max-length, max-length-bytes, delivery-limit), the argument for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from amqpd.errors import PreconditionFailed

LOWER_WINS = ("message-ttl", "expires", "max-length", "max-length-bytes",
              "delivery-limit")  # fmt: skip
ARGUMENT_WINS = ("overflow", "dead-letter-exchange", "dead-letter-routing-key")
QUEUE_POLICY_KEYS = LOWER_WINS + ARGUMENT_WINS
EXCHANGE_POLICY_KEYS = ("alternate-exchange",)
POLICY_KEYS = QUEUE_POLICY_KEYS + EXCHANGE_POLICY_KEYS
# keys of RabbitMQ 3.x accepted for compatibility, with no effect here:
# bodies are paged past the broker-wide budget whatever the mode, and there
# is one node (no mirrors to place or promote); None: any value
NO_EFFECT_POLICY_KEYS: dict[str, tuple[str, ...] | None] = {
    "queue-mode": ("default", "lazy"),
    "queue-master-locator": ("min-masters", "client-local", "random"),
    "ha-mode": ("all", "exactly", "nodes"),
    "ha-params": None,
    "ha-sync-mode": ("manual", "automatic"),
    "ha-sync-batch-size": None,
    "ha-promote-on-shutdown": ("always", "when-synced"),
    "ha-promote-on-failure": ("always", "when-synced"),
}
APPLY_TO = ("queues", "exchanges", "all")
# integer queue arguments, checked as RabbitMQ checks them
_INTEGER_ARGUMENTS = (
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes",
    "x-delivery-limit", "x-max-priority",
)  # fmt: skip
MAX_EXPIRY = 4294967295  # ms: RabbitMQ's largest TTL and x-expires
OVERFLOW = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
# arguments quorum queues refuse (RabbitMQ 3.x)
QUORUM_REFUSED = ("x-max-priority", "x-queue-mode", "x-queue-master-locator")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def amqp_type_name(value: Any) -> str:
    """RabbitMQ's name for a field value's type, as its errors say it (an
    integer's wire width is not kept: it is called signedint)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str | bytes):
        return "longstr"
    names = {int: "signedint", float: "double", dict: "table", list: "array"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Policy:
    """A named policy of one virtual host."""

    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "all"
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def matches(self, kind: str, name: str) -> bool:
        """kind is 'queues' or 'exchanges'."""
        if self.apply_to not in (kind, "all"):
            return False
        return self.regex.search(name) is not None


def validate_policy(
    pattern: str, definition: dict[str, Any], priority: int, apply_to: str
) -> None:
    """ValueError with a clear text for a policy RabbitMQ would refuse."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid pattern '{pattern}': {exc}") from None
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply-to must be one of {', '.join(APPLY_TO)}")
    if not _is_int(priority):
        raise ValueError("priority must be an integer")
    if not definition:
        raise ValueError("a policy needs at least one key")
    for key, value in definition.items():
        if key == "max-priority":
            raise ValueError("'max-priority' can only be set as a queue argument")
        if key in NO_EFFECT_POLICY_KEYS:
            allowed = NO_EFFECT_POLICY_KEYS[key]
            if allowed is not None and value not in allowed:
                raise ValueError(f"'{key}' must be one of {', '.join(allowed)}")
            continue
        if key not in POLICY_KEYS:
            raise ValueError(f"unknown policy key '{key}'")
        _check_value(key, value)


def _check_value(key: str, value: Any) -> None:
    if key in LOWER_WINS:
        minimum = 1 if key == "expires" else 0
        if not _is_int(value) or value < minimum:
            raise ValueError(f"'{key}' must be an integer >= {minimum}")
    elif key == "overflow":
        if value not in OVERFLOW:
            raise ValueError(f"'overflow' must be one of {', '.join(OVERFLOW)}")
    elif not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string")


@dataclass
class QueueSettings:
    """What a queue runs with, arguments and policy resolved."""

    message_ttl: int | None = None
    expires: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    delivery_limit: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    policy: str | None = None

    @property
    def limited(self) -> bool:
        return self.max_length is not None or self.max_length_bytes is not None


def resolve(arguments: dict[str, Any], policy: Policy | None) -> QueueSettings:
    """The effective settings from x-arguments and a matching policy."""
    settings = QueueSettings(policy=policy.name if policy else None)
    definition = policy.definition if policy else {}
    for key in QUEUE_POLICY_KEYS:
        arg = arguments.get("x-" + key)
        pol = definition.get(key)
        if key in LOWER_WINS:
            if not _is_int(arg):
                arg = None
            candidates = [v for v in (arg, pol) if v is not None]
            value = min(candidates) if candidates else None
        else:
            value = arg if arg is not None else pol
        if value is not None:
            setattr(settings, key.replace("-", "_"), value)
    return settings


def validate_queue_arguments(
    arguments: dict[str, Any],
    *,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    where: str,
) -> None:
    """PreconditionFailed (406) for arguments RabbitMQ refuses."""

    def bad(key: str, why: str) -> PreconditionFailed:
        return PreconditionFailed(f"invalid arg '{key}' for {where}: {why}", 50, 10)

    # RabbitMQ 3.10.8's checks and texts (its reply ends in an Erlang term)
    for key in _INTEGER_ARGUMENTS:
        if key not in arguments:
            continue
        value = arguments[key]
        if not _is_int(value):
            raise bad(key, f'"expected integer, got {amqp_type_name(value)}"')
        if key == "x-expires" and value == 0:
            raise bad(key, "{value_zero,0}")
        if value < 0:
            raise bad(key, f"{{value_negative,{value}}}")
        if key in ("x-expires", "x-message-ttl") and value > MAX_EXPIRY:
            raise bad(key, f"{{value_too_large,{value}}}")
        if key == "x-max-priority":
            if value > 255:
                raise bad(key, f"{{max_value_exceeded,{value}}}")
            if value == 0:  # RabbitMQ takes 0 as "no priorities"; amqpd refuses
                raise bad(key, "{value_zero,0}")
    mode = arguments.get("x-queue-mode")
    if isinstance(mode, bytes):
        mode = mode.decode(errors="replace")
    if mode is not None and mode not in ("default", "lazy"):
        raise bad("x-queue-mode", f"\"unsupported queue mode '{mode}'\"")
    for key in ("x-overflow", "x-dead-letter-exchange", "x-dead-letter-routing-key"):
        value = arguments.get(key)
        if value is not None and not isinstance(value, str | bytes):
            raise bad(key, f"{{unacceptable_type,{amqp_type_name(value)}}}")
    if "x-overflow" in arguments and arguments["x-overflow"] not in OVERFLOW:
        raise bad("x-overflow", "invalid_overflow")
    if "x-dead-letter-routing-key" in arguments and (
        "x-dead-letter-exchange" not in arguments
    ):
        raise bad("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
    sac = arguments.get("x-single-active-consumer")
    if sac is not None and not isinstance(sac, bool):
        raise bad(
            "x-single-active-consumer",
            f"{{unacceptable_type,{amqp_type_name(sac)}}}",
        )
    queue_type = arguments.get("x-queue-type", "classic")
    if isinstance(queue_type, bytes):
        queue_type = queue_type.decode()
    if queue_type not in QUEUE_TYPES:
        raise bad("x-queue-type", f"unknown queue type '{queue_type}'")
    if queue_type == "stream":
        raise PreconditionFailed(
            f"invalid arg 'x-queue-type' for {where}: stream queues are not "
            "supported by this broker yet; declare a classic or quorum queue",
            50,
            10,
        )
    if queue_type == "quorum":
        for flag, name in ((not durable, "non-durable"), (exclusive, "exclusive-owner"),
                           (auto_delete, "auto-delete")):  # fmt: skip
            if flag:
                raise PreconditionFailed(
                    f"invalid property '{name}' for {where}", 50, 10
                )
        for key in QUORUM_REFUSED:
            if key in arguments:
                raise bad(key, "not supported by quorum queues")
        if arguments.get("x-overflow") == "reject-publish-dlx":
            raise bad(
                "x-overflow", "reject-publish-dlx is not supported by quorum queues"
            )
