"""Users and their password hashes.

Hashes use RabbitMQ's format (base64 of a 4-byte salt followed by the digest
of salt + password), so definitions move between amqpd and RabbitMQ.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from amqpd.persistence.definitions.passwords import (
    DEFAULT_HASHING_ALGORITHM,
    check_password,
    hash_password,
)

__all__ = ["DEFAULT_HASHING_ALGORITHM", "User", "hash_password", "is_loopback"]


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass
class User:
    name: str
    password_hash: str
    hashing_algorithm: str = DEFAULT_HASHING_ALGORITHM
    tags: list[str] = field(default_factory=list)
    loopback_only: bool = False

    def check(self, password: str) -> bool:
        try:
            return check_password(password, self.password_hash, self.hashing_algorithm)
        except ValueError:  # an algorithm this broker does not know
            return False
