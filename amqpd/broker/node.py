"""The node: one broker's virtual hosts and users."""

from __future__ import annotations

import logging
import socket

from amqpd.auth.users import User, hash_password
from amqpd.broker.vhost import VHost
from amqpd.config import Config

log = logging.getLogger("amqpd.node")


class Node:
    """The in-memory model of one broker: vhosts, users, configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.vhosts: dict[str, VHost] = {}
        self.users: dict[str, User] = {}
        self.connections: set[object] = set()
        self.cluster_name = "amqpd@" + socket.gethostname()

    def ensure_defaults(self) -> None:
        """The default vhost and user, created only when there are none."""
        if not self.vhosts:
            self.add_vhost(self.config.default_vhost)
        if not self.users:
            self.add_user(self.config.default_user, self.config.default_pass)

    def add_vhost(self, name: str) -> VHost:
        vhost = self.vhosts.get(name)
        if vhost is None:
            vhost = self.vhosts[name] = VHost(name)
        return vhost

    def add_user(self, name: str, password: str, tags: list[str] | None = None) -> User:
        user = User(
            name,
            hash_password(password),
            tags=tags if tags is not None else ["administrator"],
            loopback_only=name in self.config.loopback_users,
        )
        self.users[name] = user
        return user
