"""Users and their password hashes.

Hashes use RabbitMQ's format (base64 of a 4-byte salt followed by the digest
of salt + password), so definitions move between amqpd and RabbitMQ.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field

ALGORITHMS = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
DEFAULT_ALGORITHM = "rabbit_password_hashing_sha256"


def hash_password(password: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
    salt = os.urandom(4)
    digest = ALGORITHMS[algorithm](salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def check_password(password: str, password_hash: str, algorithm: str) -> bool:
    try:
        raw = base64.b64decode(password_hash)
        hasher = ALGORITHMS[algorithm]
    except (ValueError, KeyError):
        return False
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(hasher(salt + password.encode()).digest(), digest)


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
    hashing_algorithm: str = DEFAULT_ALGORITHM
    tags: list[str] = field(default_factory=list)
    loopback_only: bool = False

    def check(self, password: str) -> bool:
        return check_password(password, self.password_hash, self.hashing_algorithm)
