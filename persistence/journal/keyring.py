"""Keys for encrypting record payloads with AES-256-GCM.

A keyring maps key ids to 32-byte keys and names the active one, which
encrypts new records. Every encrypted record stores the id of its key, so
after a rotation (add a key, make it active, keep the old one) segments
written with the old key still read. Compaction copies records verbatim and
never needs a key.

Encryption needs the optional ``cryptography`` package; it is imported only
when a Keyring is built, so a journal without keys works without it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import JournalKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

_ID_LENGTH = struct.Struct("<B")


class Keyring:
    """Key ids to AES-256 keys; ``active`` (if set) encrypts new records."""

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None) -> None:
        for key_id, key in keys.items():
            if not key_id or len(key_id.encode()) > 255:
                raise ValueError(f"key id {key_id!r} must be 1-255 bytes of UTF-8")
            if len(key) != KEY_SIZE:
                raise ValueError(f"key {key_id!r} must be {KEY_SIZE} bytes")
        if active is not None and active not in keys:
            raise ValueError(f"active key {active!r} is not in the keyring")
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            message = "journal encryption needs the 'cryptography' package"
            raise JournalKeyError(message) from None
        self._ciphers: dict[str, AESGCM] = {
            key_id: AESGCM(bytes(key)) for key_id, key in keys.items()
        }
        self._active = active
        self._active_prefix = b""
        if active is not None:
            encoded = active.encode()
            self._active_prefix = _ID_LENGTH.pack(len(encoded)) + encoded

    @property
    def active(self) -> str | None:
        """The id of the key that encrypts new records, or None."""
        return self._active

    @property
    def key_ids(self) -> frozenset[str]:
        """Every key id this keyring can decrypt with."""
        return frozenset(self._ciphers)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypt ``plaintext`` with the active key: key id, nonce, ciphertext."""
        if self._active is None:
            raise JournalKeyError("the keyring has no active key to encrypt with")
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[self._active].encrypt(nonce, plaintext, associated)
        return b"".join((self._active_prefix, nonce, sealed))

    def open(self, data: bytes, associated: bytes, where: object) -> bytes:
        """Decrypt a sealed payload; ``str(where)`` names it in an error message.

        Raises JournalKeyError if the key id is unknown or the key does not
        decrypt the payload (the record's checksum already passed, so a bad
        tag means a wrong key rather than damaged bytes).
        """
        key_id = read_key_id(data)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise JournalKeyError(f"{where}: no key {key_id!r} in the keyring")
        from cryptography.exceptions import InvalidTag

        start = 1 + len(key_id.encode())
        nonce = data[start : start + NONCE_SIZE]
        try:
            return cipher.decrypt(nonce, data[start + NONCE_SIZE :], associated)
        except InvalidTag:
            message = f"{where}: key {key_id!r} does not decrypt the record"
            raise JournalKeyError(message) from None


def read_key_id(data: bytes) -> str:
    """Return the key id at the start of a sealed payload."""
    if not data:
        raise JournalKeyError("encrypted payload is empty")
    length = data[0]
    try:
        return data[1 : 1 + length].decode()
    except UnicodeDecodeError:
        raise JournalKeyError("encrypted payload has an unreadable key id") from None


def read_key(path: Path) -> bytes:
    """A key file: 32 raw bytes or 64 hex digits."""
    data = path.read_bytes()
    if len(data) == KEY_SIZE:
        return data
    text = data.strip()
    if len(text) == KEY_SIZE * 2:
        return bytes.fromhex(text.decode("ascii"))
    raise ValueError(f"{path}: not a {KEY_SIZE}-byte key")


def keyring_from_specs(specs: list[str], env_key: str | None = None) -> Keyring | None:
    """A keyring from "ID=PATH" specs (the first is active) and an optional
    "ID=HEX" key from the environment (active when given); None if no keys.
    ValueError or OSError for a spec or key file that cannot be used."""
    keys: dict[str, bytes] = {}
    active: str | None = None
    if env_key:
        key_id, sep, text = env_key.partition("=")
        if not sep:
            raise ValueError("the environment key must look like ID=HEX")
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError:
            raise ValueError("the environment key is not hex") from None
        keys[key_id] = raw
        active = key_id
    for spec in specs:
        key_id, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"key spec wants ID=PATH, got {spec!r}")
        keys[key_id] = read_key(Path(path))
        active = active or key_id
    return Keyring(keys, active) if keys else None
