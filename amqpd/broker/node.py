"""The node: one broker's virtual hosts and users."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from amqpd.auth.users import User, hash_password
from amqpd.broker.clock import AsyncioScheduler
from amqpd.broker.paging import Pager
from amqpd.broker.policy import Policy, validate_policy
from amqpd.broker.queue import Scheduler
from amqpd.broker.storage import MessageStore
from amqpd.broker.vhost import PersistOp, VHost
from amqpd.config import Config
from amqpd.persistence.definitions import model as records

log = logging.getLogger("amqpd.node")


class Node:
    """The in-memory model of one broker: vhosts, users, configuration."""

    def __init__(self, config: Config, scheduler: Scheduler | None = None) -> None:
        self.config = config
        self.scheduler: Scheduler = scheduler or AsyncioScheduler()
        self.vhosts: dict[str, VHost] = {}
        self.users: dict[str, User] = {}
        self.connections: set[object] = set()
        self.cluster_name = "amqpd@" + socket.gethostname()
        # direct reply-to: token -> the channel that consumes its replies
        self.reply_channels: dict[str, Any] = {}
        # resource alarms in force ("memory", "disk"); see server/alarms.py
        self.alarms: set[str] = set()
        self.permissions: dict[tuple[str, str], records.Permission] = {}
        # where definition changes go to be stored (set by the server once
        # the definitions store is open); None while nothing is stored
        self.persist: Callable[[PersistOp], int] | None = None
        # changes handed to the definitions store, and those it committed
        self.definitions_submitted = 0
        self.definitions_stored = 0
        self.message_store: MessageStore | None = None
        self.pager: Pager | None = None

    def set_message_store(self, store: MessageStore | None) -> None:
        """Journal persistent messages of durable queues declared from now on
        (set before definitions are restored)."""
        self.message_store = store
        for vhost in self.vhosts.values():
            vhost.store = store
        if self.pager is not None:
            self.pager.journal = store.journal if store is not None else None

    def set_pager(self, pager: Pager | None) -> None:
        """Account message bodies in memory and page them out past the budget."""
        self.pager = pager
        for vhost in self.vhosts.values():
            vhost.pager = pager
        if pager is not None and self.message_store is not None:
            pager.journal = self.message_store.journal

    def _persist(self, op: PersistOp) -> int:
        if self.persist is not None:
            self.definitions_submitted = self.persist(op)
        return self.definitions_submitted

    def stored(self, ticket: int) -> None:
        """The definitions store committed every change up to ``ticket``:
        replies that waited for it can go."""
        self.definitions_stored = ticket
        for driver in list(self.connections):
            conn = getattr(driver, "conn", None)
            if conn is not None and conn.held:
                conn.release_held()

    def alarm_changed(self, reason: str) -> None:
        """Tell every connection that an alarm went on or off ('' = off)."""
        for driver in list(self.connections):
            conn = getattr(driver, "conn", None)
            if conn is not None:
                conn.on_alarm(reason)

    def ensure_defaults(self) -> None:
        """The default vhost and user (with full permissions on it), created
        only when the store holds no vhost and no user at all."""
        if not self.vhosts:
            self.add_vhost(self.config.default_vhost)
        if not self.users:
            self.add_user(self.config.default_user, self.config.default_pass)
            self.set_permission(self.config.default_user, self.config.default_vhost)

    def add_vhost(self, name: str, *, store: bool = True) -> VHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VHost(name, self.scheduler)
            vhost.persist = self._persist
            vhost.store = self.message_store
            vhost.pager = self.pager
            if store:
                record = records.VHost(name)
                self._persist(lambda s: s.put_vhost(record))
        return vhost

    def add_user(self, name: str, password: str, tags: list[str] | None = None) -> User:
        user = User(
            name,
            hash_password(password),
            tags=tags if tags is not None else ["administrator"],
        )
        self.put_user(user)
        return user

    def put_user(self, user: User, *, store: bool = True) -> None:
        user.loopback_only = user.name in self.config.loopback_users
        self.users[user.name] = user
        if store:
            record = records.User(
                user.name, user.password_hash, user.hashing_algorithm,
                tuple(user.tags),
            )  # fmt: skip
            self._persist(lambda s: s.put_user(record))

    def set_permission(
        self,
        user: str,
        vhost: str,
        configure: str = ".*",
        write: str = ".*",
        read: str = ".*",
        *,
        store: bool = True,
    ) -> None:
        """Record a user's permissions on a vhost. They are stored and
        exported; enforcing them is the security work still to come."""
        record = records.Permission(user, vhost, configure, write, read)
        self.permissions[(user, vhost)] = record
        if store:
            self._persist(lambda s: s.put_permission(record))

    # definitions interface: what the config file, the management API and
    # definitions import use to change policies

    def set_policy(
        self,
        vhost: str,
        name: str,
        pattern: str,
        definition: dict[str, Any],
        *,
        priority: int = 0,
        apply_to: str = "all",
        store: bool = True,
    ) -> Policy:
        """Create or replace a policy; ValueError if RabbitMQ would refuse it.
        It applies at once to existing queues and exchanges."""
        target = self.vhosts.get(vhost)
        if target is None:
            raise ValueError(f"vhost '{vhost}' not found")
        validate_policy(pattern, definition, priority, apply_to)
        policy = Policy(vhost, name, pattern, dict(definition), priority, apply_to)
        target.set_policy(policy, store=store)
        return policy

    def clear_policy(self, vhost: str, name: str) -> bool:
        target = self.vhosts.get(vhost)
        return target is not None and target.clear_policy(name)

    def list_policies(self, vhost: str | None = None) -> list[Policy]:
        return [
            policy
            for v in self.vhosts.values()
            if vhost is None or v.name == vhost
            for policy in v.policies.values()
        ]

    def load_config_policies(self) -> None:
        """Policies from the configuration file's [[policies]] tables. They
        are applied at every start and not stored, so that removing one from
        the file removes it from the broker."""
        for item in self.config.policies:
            known = {"vhost", "name", "pattern", "definition", "priority", "apply-to"}
            unknown = set(item) - known
            if unknown:
                raise ValueError(
                    f"unknown policy field(s): {', '.join(sorted(unknown))}"
                )
            try:
                name, pattern = item["name"], item["pattern"]
                definition = item["definition"]
            except KeyError as exc:
                raise ValueError(f"policy needs '{exc.args[0]}'") from None
            self.set_policy(
                item.get("vhost", "/"), name, pattern, definition,
                priority=item.get("priority", 0), apply_to=item.get("apply-to", "all"),
                store=False,
            )  # fmt: skip
