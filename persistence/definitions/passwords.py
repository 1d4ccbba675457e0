"""Password hashes in RabbitMQ's format, so that exported users move both ways.

A stored hash is base64(salt + H(salt + utf8(password))) with a random
4-byte salt. H is named by the user's hashing_algorithm:

    rabbit_password_hashing_sha256   SHA-256 (RabbitMQ's default, and ours)
    rabbit_password_hashing_sha512   SHA-512
    rabbit_password_hashing_md5      MD5 (definitions from RabbitMQ < 3.6)

An empty hash means the user has no password and cannot log in with one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
DEFAULT_HASHING_ALGORITHM = SHA256
SALT_SIZE = 4

_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    SHA256: lambda data: hashlib.sha256(data).digest(),
    SHA512: lambda data: hashlib.sha512(data).digest(),
    MD5: lambda data: hashlib.md5(data, usedforsecurity=False).digest(),
}
_DIGEST_SIZES = {SHA256: 32, SHA512: 64, MD5: 16}

HASHING_ALGORITHMS = tuple(_DIGESTS)


class UnknownHashingAlgorithm(ValueError):
    """The hashing_algorithm names no algorithm this broker knows."""


def _digest(algorithm: str) -> Callable[[bytes], bytes]:
    try:
        return _DIGESTS[algorithm]
    except KeyError:
        raise UnknownHashingAlgorithm(
            f"unknown password hashing algorithm {algorithm!r}"
        ) from None


def _utf8(password: str | bytes) -> bytes:
    # SASL hands over bytes; those are hashed as they are.
    return password if isinstance(password, bytes) else password.encode("utf-8")


def hash_password(
    password: str | bytes,
    algorithm: str = DEFAULT_HASHING_ALGORITHM,
    *,
    salt: bytes | None = None,
) -> str:
    """Hash a password the way RabbitMQ does, with a fresh random salt.

    `salt` (4 bytes) is for reproducing a known hash; leave it out otherwise.
    Raises UnknownHashingAlgorithm for an algorithm not listed above.
    """
    digest = _digest(algorithm)
    if salt is None:
        salt = secrets.token_bytes(SALT_SIZE)
    if len(salt) != SALT_SIZE:
        raise ValueError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    salted = salt + digest(salt + _utf8(password))
    return base64.b64encode(salted).decode("ascii")


def check_password(
    password: str | bytes,
    password_hash: str,
    algorithm: str = DEFAULT_HASHING_ALGORITHM,
) -> bool:
    """True if `password` matches `password_hash`, compared in constant time.

    An empty or malformed hash matches no password. Raises
    UnknownHashingAlgorithm for an algorithm not listed above, since that is
    a configuration fault rather than a wrong password.
    """
    digest = _digest(algorithm)
    if not password_hash:
        return False
    try:
        salted = base64.b64decode(password_hash, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(salted) != SALT_SIZE + _DIGEST_SIZES[algorithm]:
        return False
    salt, expected = salted[:SALT_SIZE], salted[SALT_SIZE:]
    return hmac.compare_digest(digest(salt + _utf8(password)), expected)


def guess_hashing_algorithm(password_hash: str) -> str | None:
    """Name the algorithm whose digest size fits the hash, None if none does.

    For definitions that carry a hash but no hashing_algorithm (RabbitMQ
    before 3.6 wrote MD5 hashes that way).
    """
    try:
        size = len(base64.b64decode(password_hash, validate=True)) - SALT_SIZE
    except (binascii.Error, ValueError):
        return None
    for algorithm, digest_size in _DIGEST_SIZES.items():
        if size == digest_size:
            return algorithm
    return None
