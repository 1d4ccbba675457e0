"""Password hashes in RabbitMQ's format: base64(salt + H(salt + password))."""

from __future__ import annotations

import base64
import hashlib

import pytest

from amqpd.persistence.definitions.passwords import (
    MD5,
    SHA256,
    SHA512,
    UnknownHashingAlgorithm,
    check_password,
    guess_hashing_algorithm,
    hash_password,
)


def rabbit_hash(name: str, salt_hex: str, password: str) -> str:
    """The format as RabbitMQ documents it, computed independently."""
    salt = bytes.fromhex(salt_hex)
    digest = hashlib.new(name, salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


# Published examples: RabbitMQ's password guide (SHA-256, salt 908DC60A,
# "test12") and the MD5 example from the mailing list that first described
# the scheme (salt CAD5089B, "simon").
PUBLISHED = [
    (SHA256, "908DC60A", "test12", "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"),
    (MD5, "CAD5089B", "simon", "ytUIm8s3AnKsXQjptplKFytfVxI="),
]


@pytest.mark.parametrize(("algorithm", "salt", "password", "expected"), PUBLISHED)
def test_published_rabbitmq_hashes_are_reproduced_and_accepted(
    algorithm: str, salt: str, password: str, expected: str
) -> None:
    made = hash_password(password, algorithm, salt=bytes.fromhex(salt))

    assert made == expected
    assert check_password(password, expected, algorithm)
    assert not check_password(password + "x", expected, algorithm)


@pytest.mark.parametrize(
    ("algorithm", "name"), [(SHA256, "sha256"), (SHA512, "sha512"), (MD5, "md5")]
)
@pytest.mark.parametrize("password", ["guest", "", "pässwörd ✓", "a" * 300])
def test_hashes_match_the_documented_format(
    algorithm: str, name: str, password: str
) -> None:
    expected = rabbit_hash(name, "01020304", password)

    assert hash_password(password, algorithm, salt=b"\x01\x02\x03\x04") == expected
    assert check_password(password, expected, algorithm)
    assert guess_hashing_algorithm(expected) == algorithm


def test_default_is_sha256_with_a_fresh_salt_each_time() -> None:
    first, second = hash_password("guest"), hash_password("guest")

    assert first != second
    assert len(base64.b64decode(first)) == 4 + 32
    assert check_password("guest", first) and check_password("guest", second)


def test_bytes_passwords_are_hashed_as_given() -> None:
    stored = hash_password(b"\xff\xfe")

    assert check_password(b"\xff\xfe", stored)
    assert not check_password("\xff\xfe", stored)


@pytest.mark.parametrize(
    "stored", ["", "not base64!", base64.b64encode(b"short").decode(), "AAAA"]
)
def test_empty_or_malformed_hashes_match_nothing(stored: str) -> None:
    assert not check_password("", stored)
    assert not check_password("guest", stored)


def test_a_hash_checked_with_the_wrong_algorithm_does_not_match() -> None:
    stored = hash_password("guest", SHA512)

    assert not check_password("guest", stored, SHA256)


def test_unknown_algorithms_are_an_error_not_a_mismatch() -> None:
    with pytest.raises(UnknownHashingAlgorithm):
        hash_password("guest", "rabbit_password_hashing_rot13")
    with pytest.raises(UnknownHashingAlgorithm):
        check_password("guest", hash_password("guest"), "bcrypt")
    with pytest.raises(ValueError):
        hash_password("guest", salt=b"123")
    assert guess_hashing_algorithm("AAAA") is None
    assert guess_hashing_algorithm("***") is None
