"""The bench's hand-built frames are byte for byte what pamqp marshals."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import body, commands, header
from pamqp import frame as pamqp_frame

from amqpd.bench import frames

# the characters pamqp accepts in queue and exchange names
names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:",
    max_size=60,
)


def marshal(value: object, channel: int = 0) -> bytes:
    return pamqp_frame.marshal(value, channel)  # type: ignore[arg-type]


def test_start_ok_matches_pamqp() -> None:
    expected = commands.Connection.StartOk(
        client_properties={
            "product": "amqpd-bench",
            "capabilities": {
                "publisher_confirms": True,
                "connection.blocked": True,
                "basic.nack": True,
                "authentication_failure_close": True,
            },
        },
        mechanism="PLAIN",
        response="\0guest\0secret",
        locale="en_US",
    )
    assert frames.start_ok("guest", "secret") == marshal(expected)


def test_connection_methods_match_pamqp() -> None:
    assert frames.tune_ok(2047, 131072, 0) == marshal(
        commands.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)
    )
    assert frames.connection_open("/") == marshal(
        commands.Connection.Open(virtual_host="/")
    )
    assert frames.connection_close() == marshal(
        commands.Connection.Close(
            reply_code=200, reply_text="bye", class_id=0, method_id=0
        )
    )
    assert frames.connection_close_ok() == marshal(commands.Connection.CloseOk())


def test_channel_methods_match_pamqp() -> None:
    # pamqp writes "0" in the reserved field, pika and the spec's own
    # examples leave it empty; both are valid, the bench sends it empty
    assert (
        frames.channel_open(7)
        == b"\x01\x00\x07\x00\x00\x00\x05\x00\x14\x00\x0a\x00\xce"
    )
    assert frames.channel_close(7) == marshal(
        commands.Channel.Close(
            reply_code=200, reply_text="bye", class_id=0, method_id=0
        ),
        7,
    )
    assert frames.channel_close_ok(7) == marshal(commands.Channel.CloseOk(), 7)


@given(name=names, durable=st.booleans(), passive=st.booleans())
def test_queue_declare_matches_pamqp(name: str, durable: bool, passive: bool) -> None:
    expected = commands.Queue.Declare(
        queue=name, durable=durable, passive=passive, arguments={}
    )
    built = frames.queue_declare(1, name, durable=durable, passive=passive)
    assert built == marshal(expected, 1)


@given(queue=names, exchange=names, key=names)
def test_queue_bind_matches_pamqp(queue: str, exchange: str, key: str) -> None:
    expected = commands.Queue.Bind(
        queue=queue, exchange=exchange, routing_key=key, arguments={}
    )
    assert frames.queue_bind(3, queue, exchange, key) == marshal(expected, 3)


def test_queue_delete_matches_pamqp() -> None:
    assert frames.queue_delete(1, "q") == marshal(commands.Queue.Delete(queue="q"), 1)


def test_exchange_methods_match_pamqp() -> None:
    declare = commands.Exchange.Declare(
        exchange="x", exchange_type="fanout", durable=True, arguments={}
    )
    assert frames.exchange_declare(1, "x", "fanout", durable=True) == marshal(
        declare, 1
    )
    delete = commands.Exchange.Delete(exchange="x")
    assert frames.exchange_delete(1, "x") == marshal(delete, 1)


def test_basic_methods_match_pamqp() -> None:
    assert frames.basic_qos(1, 1000) == marshal(
        commands.Basic.Qos(prefetch_count=1000), 1
    )
    assert frames.basic_consume(1, "q", "tag") == marshal(
        commands.Basic.Consume(queue="q", consumer_tag="tag", arguments={}), 1
    )
    assert frames.confirm_select(1) == marshal(commands.Confirm.Select(), 1)


@given(tag=st.integers(min_value=1, max_value=2**63 - 1), multiple=st.booleans())
def test_basic_ack_matches_pamqp(tag: int, multiple: bool) -> None:
    expected = commands.Basic.Ack(delivery_tag=tag, multiple=multiple)
    built = frames.basic_ack(1, tag, multiple=multiple)
    assert built == marshal(expected, 1)
    assert frames.U64.unpack_from(built, frames.ACK_TAG_OFFSET)[0] == tag


@given(exchange=names, key=names)
def test_basic_publish_matches_pamqp(exchange: str, key: str) -> None:
    expected = commands.Basic.Publish(exchange=exchange, routing_key=key)
    assert frames.basic_publish(5, exchange, key) == marshal(expected, 5)


@pytest.mark.parametrize("persistent", [False, True])
def test_content_header_matches_pamqp(persistent: bool) -> None:
    props = commands.Basic.Properties(delivery_mode=2 if persistent else None)
    expected = header.ContentHeader(0, 1234, props)
    built = frames.content_header(2, 1234, persistent=persistent)
    assert built == marshal(expected, 2)


def test_body_frames_split_at_frame_max() -> None:
    payload = bytes(range(256)) * 40  # 10,240 bytes
    built = frames.body_frames(1, payload, 4096)
    pos, parts = 0, []
    while pos < len(built):
        used, channel, value = pamqp_frame.unmarshal(built[pos:])
        assert channel == 1 and isinstance(value, body.ContentBody)
        assert used <= 4096
        parts.append(value.value)
        pos += used
    assert b"".join(parts) == payload
    assert len(parts) == 3


def test_shortstr_refuses_more_than_255_bytes() -> None:
    with pytest.raises(ValueError, match="255"):
        frames.shortstr("é" * 128)


def test_table_encodes_ints_and_refuses_other_types() -> None:
    assert frames.table({"n": 5}) == struct.pack(">I", 11) + b"\x01nl" + (5).to_bytes(
        8, "big"
    )
    with pytest.raises(TypeError):
        frames.table({"f": 1.5})


@pytest.mark.parametrize("size", [16, 100, 1024, 200_000])
def test_message_template_batch_decodes_with_stamps(size: int) -> None:
    template = frames.message_template(
        1, "ex", "rk", size, persistent=True, frame_max=131072
    )
    buf, offsets = template.batch(3)
    for seq, offset in enumerate(offsets):
        frames.STAMP.pack_into(buf, offset, 100 + seq, 42)
    data = bytes(buf)
    pos = 0
    for seq in range(3):
        used, _ch, publish = pamqp_frame.unmarshal(data[pos:])
        assert isinstance(publish, commands.Basic.Publish)
        assert (publish.exchange, publish.routing_key) == ("ex", "rk")
        pos += used
        used, _ch, head = pamqp_frame.unmarshal(data[pos:])
        assert isinstance(head, header.ContentHeader)
        assert head.body_size == size and head.properties.delivery_mode == 2
        pos += used
        content = b""
        while len(content) < size:
            used, _ch, part = pamqp_frame.unmarshal(data[pos:])
            assert isinstance(part, body.ContentBody)
            content += part.value
            pos += used
        assert frames.STAMP.unpack_from(content) == (100 + seq, 42)
        assert len(content) == size
    assert pos == len(data)


def test_message_template_refuses_small_bodies_and_frames() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        frames.message_template(1, "", "q", 15, persistent=False, frame_max=131072)
    with pytest.raises(ValueError, match="4096"):
        frames.message_template(1, "", "q", 16, persistent=False, frame_max=1024)
