"""SASL mechanisms: PLAIN and AMQPLAIN."""

from __future__ import annotations

from pamqp import decode

MECHANISMS = "PLAIN AMQPLAIN"


def parse_response(mechanism: str, response: bytes) -> tuple[str, str]:
    """Username and password from a start-ok response; ValueError if bad."""
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise ValueError("malformed PLAIN response")
        return parts[1].decode(), parts[2].decode()
    if mechanism == "AMQPLAIN":
        # a field table without its length prefix (some clients add one)
        data = response
        if len(data) >= 4 and int.from_bytes(data[:4], "big") == len(data) - 4:
            data = data[4:]
        table = decode.field_table(len(data).to_bytes(4, "big") + data)[1]
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if not isinstance(login, str | bytes) or not isinstance(password, str | bytes):
            raise ValueError("AMQPLAIN response lacks LOGIN or PASSWORD")
        if isinstance(login, bytes):
            login = login.decode()
        if isinstance(password, bytes):
            password = password.decode()
        return login, password
    raise ValueError(f"unsupported mechanism {mechanism}")
