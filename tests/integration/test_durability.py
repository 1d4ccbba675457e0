"""What a restart on the same data directory keeps, and what it must not.

Most tests stop the broker cleanly and start a new one on the same data
directory, in this process (BrokerThread). The journal key tests run the
``amqpd`` command, since a refused start must exit 1 with one error line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from amqpd.persistence.definitions.cli import main as definitions_main
from amqpd.testing import BrokerThread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from crashloop import BrokerProcess

PERSISTENT = pika.BasicProperties(delivery_mode=2)
TRANSIENT = pika.BasicProperties(delivery_mode=1)
SECRET = b"top-secret-payload"


@contextmanager
def running(data_dir: Path, **options: Any) -> Iterator[BrokerThread]:
    with BrokerThread(data_dir=data_dir, **options) as broker:
        yield broker


@contextmanager
def channel(
    port: int, user: str = "guest", password: str = "guest"
) -> Iterator[BlockingChannel]:
    params = pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials(user, password)
    )
    conn = pika.BlockingConnection(params)
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def drain(ch: BlockingChannel, queue: str) -> list[tuple[bytes, bool]]:
    """Every ready message of ``queue`` (body, redelivered), acked."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, bool(method.redelivered)))


def count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def exported(data_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """The stored definitions of a stopped broker, as RabbitMQ JSON."""
    target = tmp_path / "exported.json"
    assert definitions_main(["export", str(target), "--data-dir", str(data_dir)]) == 0
    document: dict[str, Any] = json.loads(target.read_text())
    return document


# definitions


def test_restart_keeps_durable_exchanges_queues_bindings_policies_and_users(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with running(data) as broker:
        with channel(broker.port) as ch:
            ch.exchange_declare("d.topic", "topic", durable=True)
            ch.exchange_declare("d.fanout", "fanout", durable=True)
            ch.exchange_bind("d.fanout", "d.topic", "orders.#")
            ch.queue_declare(
                "d.orders", durable=True,
                arguments={"x-max-priority": 3, "x-message-ttl": 60000},
            )  # fmt: skip
            ch.queue_bind("d.orders", "d.fanout")
            ch.queue_declare("d.limited", durable=True)
        broker.call(
            broker.broker.node.set_policy, "/", "cap", "^d\\.limited$",
            {"max-length": 2},
        )  # fmt: skip
        broker.call(broker.broker.node.add_user, "carol", "s3cret", ["monitoring"])
        broker.call(broker.broker.node.set_permission, "carol", "/")

    with running(data) as broker:
        with channel(broker.port, "carol", "s3cret") as ch:
            # same type and arguments, or 406
            ch.exchange_declare("d.topic", "topic", durable=True)
            ch.queue_declare(
                "d.orders", durable=True,
                arguments={"x-max-priority": 3, "x-message-ttl": 60000},
            )  # fmt: skip
            ch.confirm_delivery()
            ch.basic_publish("d.topic", "orders.new", b"routed", PERSISTENT)
            assert drain(ch, "d.orders") == [(b"routed", False)]
            for n in range(3):
                ch.basic_publish("", "d.limited", f"m{n}".encode())
            assert count(ch, "d.limited") == 2  # the stored policy applies
        node = broker.broker.node
        assert broker.call(lambda: node.users["carol"].tags) == ["monitoring"]


def test_non_durable_entities_are_never_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as broker:
        with channel(broker.port) as ch:
            ch.exchange_declare("t.direct", "direct", durable=False)
            ch.queue_declare("t.queue", durable=False)
            ch.queue_declare("d.queue", durable=True)
            ch.queue_bind("d.queue", "t.direct", "k")  # a transient end
            ch.queue_bind("t.queue", "amq.direct", "k")
    document = exported(data, tmp_path)
    assert [q["name"] for q in document["queues"]] == ["d.queue"]
    assert document["exchanges"] == []
    assert document["bindings"] == []

    with running(data) as broker, channel(broker.port) as ch:
        with pytest.raises(ChannelClosedByBroker) as closed:
            ch.exchange_declare("t.direct", passive=True)
        assert closed.value.reply_code == 404
        ch = ch.connection.channel()
        with pytest.raises(ChannelClosedByBroker) as closed:
            ch.queue_declare("t.queue", passive=True)
        assert closed.value.reply_code == 404
        ch = ch.connection.channel()
        ch.queue_declare("d.queue", passive=True)


def test_exclusive_durable_queue_does_not_survive_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("mine", durable=True, exclusive=True)
        ch.confirm_delivery()
        ch.basic_publish("", "mine", b"persistent", PERSISTENT)
    assert exported(data, tmp_path)["queues"] == []
    with running(data) as broker, channel(broker.port) as ch:
        with pytest.raises(ChannelClosedByBroker) as closed:
            ch.queue_declare("mine", passive=True)
        assert closed.value.reply_code == 404


# messages


def test_persistent_messages_come_back_in_order_redelivered_transient_do_not(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("mixed", durable=True)
        ch.confirm_delivery()
        for n in range(6):
            props = PERSISTENT if n % 2 else TRANSIENT
            ch.basic_publish("", "mixed", f"m{n}".encode(), props)
        ch.basic_publish("", "mixed", b"no-properties")
    with running(data) as broker, channel(broker.port) as ch:
        assert drain(ch, "mixed") == [(b"m1", True), (b"m3", True), (b"m5", True)]


def test_persistent_message_keeps_its_properties_across_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    props = pika.BasicProperties(
        delivery_mode=2, content_type="application/json", correlation_id="c-1",
        headers={"tenant": "acme", "attempt": 3}, priority=4,
    )  # fmt: skip
    with running(data) as broker, channel(broker.port) as ch:
        ch.exchange_declare("props.x", "direct", durable=True)
        ch.queue_declare("props", durable=True)
        ch.queue_bind("props", "props.x", "rk")
        ch.confirm_delivery()
        ch.basic_publish("props.x", "rk", b"{}", props)
    with running(data) as broker, channel(broker.port) as ch:
        method, got, body = ch.basic_get("props", auto_ack=True)
        assert (method.exchange, method.routing_key, body) == ("props.x", "rk", b"{}")
        assert (got.content_type, got.correlation_id, got.priority) == (
            "application/json", "c-1", 4,
        )  # fmt: skip
        assert got.headers == {"tenant": "acme", "attempt": 3}
        assert got.delivery_mode == 2


def test_delivery_count_survives_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": 2}
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("limited", durable=True, arguments=arguments)
        ch.confirm_delivery()
        ch.basic_publish("", "limited", b"poison", PERSISTENT)
        for _ in range(2):
            method, _props, _body = ch.basic_get("limited")
            ch.basic_nack(method.delivery_tag, requeue=True)
    with running(data) as broker, channel(broker.port) as ch:
        method, props, body = ch.basic_get("limited")
        assert body == b"poison"
        assert props.headers["x-delivery-count"] == 2
        # a third return is over the limit: the message is dropped
        ch.basic_nack(method.delivery_tag, requeue=True)
        assert count(ch, "limited") == 0
    with running(data) as broker, channel(broker.port) as ch:
        assert count(ch, "limited") == 0


def test_ttl_deadline_survives_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("short", durable=True)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, expiration="2000")
        ch.basic_publish("", "short", b"soon", props)
        published = time.monotonic()
        time.sleep(0.8)  # leaves the restart 1.2 s before the deadline
    with running(data) as broker, channel(broker.port) as ch:
        assert count(ch, "short") == 1
        while count(ch, "short") and time.monotonic() - published < 4.0:
            time.sleep(0.05)
        gone_after = time.monotonic() - published
    # expired 2 s after the publish, not 2 s after the restart
    assert 1.9 <= gone_after < 2.7, gone_after


def test_dead_lettered_persistent_message_survives_restart_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("dlq", durable=True)
        ch.queue_declare("work", durable=True, arguments=arguments)
        ch.confirm_delivery()
        ch.basic_publish("", "work", b"bad", PERSISTENT)
        method, _props, _body = ch.basic_get("work")
        ch.basic_reject(method.delivery_tag, requeue=False)
        assert count(ch, "dlq") == 1
    for _ in range(2):
        with running(data) as broker, channel(broker.port) as ch:
            assert count(ch, "work") == 0
            assert count(ch, "dlq") == 1
    with running(data) as broker, channel(broker.port) as ch:
        method, props, body = ch.basic_get("dlq", auto_ack=True)
        assert body == b"bad"
        death = props.headers["x-death"][0]
        assert (death["queue"], death["reason"], death["count"]) == (
            "work", "rejected", 1,
        )  # fmt: skip
        assert count(ch, "dlq") == 0


@pytest.mark.parametrize("dlx", ["", "no-such-exchange"])
def test_persistent_message_refused_by_reject_publish_dlx_is_kept_elsewhere(
    tmp_path: Path, dlx: str
) -> None:
    # the refusing queue never held the message, in memory or in the
    # journal: dead-lettering it must not record a removal from it
    data = tmp_path / "data"
    arguments = {
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dlq",
    }  # fmt: skip
    with running(data) as broker, channel(broker.port) as ch:
        ch.exchange_declare("both", "fanout", durable=True)
        ch.queue_declare("dlq", durable=True)
        ch.queue_declare("full", durable=True, arguments=arguments)
        ch.queue_declare("keep", durable=True)
        ch.queue_bind("full", "both")
        ch.queue_bind("keep", "both")
        ch.confirm_delivery()
        ch.basic_publish("both", "", b"m0", PERSISTENT)
        for body in (b"m1", b"m2"):
            with pytest.raises(pika.exceptions.NackError):
                ch.basic_publish("both", "", body, PERSISTENT)
        assert ch.is_open
        assert (count(ch, "full"), count(ch, "keep")) == (1, 3)
        assert count(ch, "dlq") == (2 if dlx == "" else 0)
    for _ in range(2):
        with running(data) as broker, channel(broker.port) as ch:
            assert (count(ch, "full"), count(ch, "keep")) == (1, 3)
            assert count(ch, "dlq") == (2 if dlx == "" else 0)
    with running(data) as broker, channel(broker.port) as ch:
        assert [body for body, _ in drain(ch, "keep")] == [b"m0", b"m1", b"m2"]
        assert [body for body, _ in drain(ch, "dlq")] == (
            [b"m1", b"m2"] if dlx == "" else []
        )


@pytest.mark.parametrize("order", [("src", "dlq"), ("dlq", "src")])
def test_limit_lowered_while_stopped_dead_letters_behind_the_targets_messages(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    # restore puts every queue back before a lowered limit drops anything,
    # whichever queue the journal lists first
    data = tmp_path / "data"
    with running(data) as broker, channel(broker.port) as ch:
        for name in order:
            ch.queue_declare(name, durable=True)
        ch.confirm_delivery()
        for i in range(30):
            ch.basic_publish("", "src", b"src-%d" % i, PERSISTENT)
        for i in range(5):
            ch.basic_publish("", "dlq", b"old-%d" % i, PERSISTENT)
    limit = [{
        "name": "short", "pattern": "^src$", "apply-to": "queues",
        "definition": {"max-length": 10, "overflow": "drop-head",
                       "dead-letter-exchange": "",
                       "dead-letter-routing-key": "dlq"},
    }]  # fmt: skip
    with running(data, policies=limit) as broker, channel(broker.port) as ch:
        assert [b for b, _ in drain(ch, "src")] == [
            b"src-%d" % i for i in range(20, 30)
        ]
        assert [b for b, _ in drain(ch, "dlq")] == [b"old-%d" % i for i in range(5)] + [
            b"src-%d" % i for i in range(20)
        ]


def test_message_expired_while_stopped_is_dead_lettered_once_at_start(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "late"}
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("late", durable=True)
        ch.queue_declare("brief", durable=True, arguments=arguments)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, expiration="300")
        ch.basic_publish("", "brief", b"stale", props)
    time.sleep(0.4)
    for _ in range(2):
        with running(data) as broker, channel(broker.port) as ch:
            assert count(ch, "brief") == 0
            assert count(ch, "late") == 1
    with running(data) as broker, channel(broker.port) as ch:
        _method, props, body = ch.basic_get("late", auto_ack=True)
        assert body == b"stale"
        assert props.headers["x-death"][0]["reason"] == "expired"


def test_unacked_message_of_a_deleted_queue_is_gone_for_good(tmp_path: Path) -> None:
    data = tmp_path / "data"
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("dlq", durable=True)
        ch.queue_declare("doomed", durable=True, arguments=arguments)
        ch.confirm_delivery()
        ch.basic_publish("", "doomed", b"taken", PERSISTENT)
        with channel(broker.port) as other:
            method, _props, _body = other.basic_get("doomed")
            ch.queue_delete("doomed")
            # as in RabbitMQ: not dead-lettered, and the connection stays up
            other.basic_reject(method.delivery_tag, requeue=False)
            other.basic_qos(prefetch_count=1)  # a round trip after the reject
        ch.queue_declare("doomed", durable=True, arguments=arguments)
        ch.basic_publish("", "doomed", b"fresh", PERSISTENT)
        assert count(ch, "dlq") == 0
    with running(data) as broker, channel(broker.port) as ch:
        assert count(ch, "dlq") == 0
        assert drain(ch, "doomed") == [(b"fresh", True)]


def test_purge_and_delete_survive_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as broker, channel(broker.port) as ch:
        ch.confirm_delivery()
        for name in ("purged", "deleted", "reborn"):
            ch.queue_declare(name, durable=True)
            for n in range(3):
                ch.basic_publish("", name, f"{name}-{n}".encode(), PERSISTENT)
        assert ch.queue_purge("purged").method.message_count == 3
        ch.queue_delete("deleted")
        ch.queue_delete("reborn")
        ch.queue_declare("reborn", durable=True)
        ch.basic_publish("", "reborn", b"new", PERSISTENT)
    with running(data) as broker, channel(broker.port) as ch:
        assert count(ch, "purged") == 0
        assert drain(ch, "reborn") == [(b"new", True)]
        with pytest.raises(ChannelClosedByBroker) as closed:
            ch.queue_declare("deleted", passive=True)
        assert closed.value.reply_code == 404
        ch = ch.connection.channel()
        ch.queue_declare("deleted", durable=True)
        assert count(ch, "deleted") == 0


def test_committed_persistent_messages_survive_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as broker, channel(broker.port) as ch:
        ch.queue_declare("tx", durable=True)
        ch.tx_select()
        for n in range(3):
            ch.basic_publish("", "tx", f"kept-{n}".encode(), PERSISTENT)
        ch.tx_commit()
        ch.basic_publish("", "tx", b"rolled-back", PERSISTENT)
        ch.tx_rollback()
    with running(data) as broker, channel(broker.port) as ch:
        assert drain(ch, "tx") == [(b"kept-0", True), (b"kept-1", True),
                                   (b"kept-2", True)]  # fmt: skip


def test_interval_fsync_keeps_confirmed_messages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    options = {"journal_fsync": "interval", "journal_fsync_interval_ms": 20}
    with running(data, **options) as broker, channel(broker.port) as ch:
        ch.queue_declare("lazy", durable=True)
        ch.confirm_delivery()
        for n in range(50):
            ch.basic_publish("", "lazy", f"m{n}".encode(), PERSISTENT)
    with running(data, **options) as broker, channel(broker.port) as ch:
        bodies = [body for body, _ in drain(ch, "lazy")]
        assert bodies == [f"m{n}".encode() for n in range(50)]


# a definitions file loaded at start


def rabbit_hash(password: str) -> str:
    """A password hash as RabbitMQ's rabbit_password_hashing_sha256 makes it."""
    salt = os.urandom(4)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def test_load_definitions_file_is_loaded_at_start(tmp_path: Path) -> None:
    document = {
        "rabbit_version": "3.13.7",
        "users": [{
            "name": "dave", "password_hash": rabbit_hash("hunter2"),
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [],
        }],
        "vhosts": [{"name": "/"}],
        "permissions": [{
            "user": "dave", "vhost": "/", "configure": ".*", "write": ".*",
            "read": ".*",
        }],
        "queues": [{
            "name": "loaded.q", "vhost": "/", "durable": True,
            "auto_delete": False, "arguments": {"x-max-length": 5},
        }],
        "exchanges": [{
            "name": "loaded.x", "vhost": "/", "type": "direct", "durable": True,
            "auto_delete": False, "internal": False, "arguments": {},
        }],
        "bindings": [{
            "source": "loaded.x", "vhost": "/", "destination": "loaded.q",
            "destination_type": "queue", "routing_key": "in", "arguments": {},
        }],
    }  # fmt: skip
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(document))
    with running(tmp_path / "data", load_definitions=path) as broker:
        with channel(broker.port, "dave", "hunter2") as ch:
            ch.queue_declare("loaded.q", durable=True, arguments={"x-max-length": 5})
            ch.basic_publish("loaded.x", "in", b"via-binding")
            assert drain(ch, "loaded.q") == [(b"via-binding", False)]
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            with channel(broker.port, "dave", "wrong"):
                pass


# journal encryption (the amqpd command)


@pytest.fixture
def brokers() -> Iterator[list[BrokerProcess]]:
    started: list[BrokerProcess] = []
    try:
        yield started
    finally:
        for broker in started:
            broker.kill()


def key_file(path: Path, hex_text: bool = False) -> Path:
    key = os.urandom(32)
    if hex_text:
        path.write_text(key.hex() + "\n")
    else:
        path.write_bytes(key)
    return path


def config_with_keys(tmp_path: Path, *specs: str) -> Path:
    config = tmp_path / f"amqpd-{len(list(tmp_path.glob('amqpd-*.toml')))}.toml"
    config.write_text(f"journal_keys = {json.dumps(list(specs))}\n")
    return config


def launch(
    brokers: list[BrokerProcess], data: Path, config: Path | None = None,
    env_key: str | None = None,
) -> BrokerProcess:  # fmt: skip
    env = dict(os.environ)
    env.pop("AMQPD_JOURNAL_KEY", None)
    if env_key is not None:
        env["AMQPD_JOURNAL_KEY"] = env_key
    broker = BrokerProcess(data, config, env)
    brokers.append(broker)
    return broker


def journal_bytes(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data / "journal").iterdir())}


def segments_text(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (data / "journal").glob("*.seg"))


def publish_secrets(port: int, tag: str, big: bool = False) -> None:
    with channel(port) as ch:
        ch.queue_declare("vault", durable=True)
        ch.confirm_delivery()
        for n in range(3):
            ch.basic_publish("", "vault", SECRET + f"-{tag}-{n}".encode(), PERSISTENT)
        if big:  # compressed, then encrypted
            ch.basic_publish("", "vault", SECRET * 1000, PERSISTENT)


def expect_refused(broker: BrokerProcess, *words: str) -> str:
    """The broker exits 1 with one ``amqpd: journal: ...`` line last."""
    code = broker.proc.wait(15)
    broker.kill()
    assert code == 1, broker.tail()
    last = broker.lines[-1]
    assert last.startswith("amqpd: journal: "), broker.tail()
    for word in words:
        assert word in last, last
    return last


def test_encrypted_journal_hides_bodies_and_needs_its_key(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    k1 = key_file(tmp_path / "k1.key")
    config = config_with_keys(tmp_path, f"k1={k1}")
    broker = launch(brokers, data, config)
    broker.wait_ready()
    publish_secrets(broker.port, "a", big=True)
    assert broker.stop() == 0
    assert SECRET not in segments_text(data)
    before = journal_bytes(data)

    expect_refused(launch(brokers, data), "k1")
    assert journal_bytes(data) == before
    wrong = config_with_keys(tmp_path, f"k1={key_file(tmp_path / 'wrong.key')}")
    expect_refused(launch(brokers, data, wrong), "k1")
    assert journal_bytes(data) == before

    broker = launch(brokers, data, config)
    broker.wait_ready()
    with channel(broker.port) as ch:
        bodies = [body for body, again in drain(ch, "vault") if again]
    assert bodies == [SECRET + b"-a-0", SECRET + b"-a-1", SECRET + b"-a-2",
                      SECRET * 1000]  # fmt: skip
    assert broker.stop() == 0


def test_new_key_first_keeps_old_messages_readable(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    k1 = key_file(tmp_path / "k1.key")
    k2 = key_file(tmp_path / "k2.key", hex_text=True)
    broker = launch(brokers, data, config_with_keys(tmp_path, f"k1={k1}"))
    broker.wait_ready()
    publish_secrets(broker.port, "old")
    assert broker.stop() == 0

    rotated = config_with_keys(tmp_path, f"k2={k2}", f"k1={k1}")
    broker = launch(brokers, data, rotated)
    broker.wait_ready()
    publish_secrets(broker.port, "new")
    assert broker.stop() == 0
    assert SECRET not in segments_text(data)

    # the old records still need the old key
    expect_refused(launch(brokers, data, config_with_keys(tmp_path, f"k2={k2}")), "k1")
    broker = launch(brokers, data, rotated)
    broker.wait_ready()
    with channel(broker.port) as ch:
        bodies = [body.decode() for body, _ in drain(ch, "vault")]
    assert [b.removeprefix(SECRET.decode()) for b in bodies] == [
        "-old-0", "-old-1", "-old-2", "-new-0", "-new-1", "-new-2",
    ]  # fmt: skip
    assert broker.stop() == 0


def test_journal_key_from_environment(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env_key = "env1=" + os.urandom(32).hex()
    broker = launch(brokers, data, env_key=env_key)
    broker.wait_ready()
    publish_secrets(broker.port, "env")
    assert broker.stop() == 0
    assert SECRET not in segments_text(data)
    expect_refused(launch(brokers, data), "env1")
    broker = launch(brokers, data, env_key=env_key)
    broker.wait_ready()
    with channel(broker.port) as ch:
        assert len(drain(ch, "vault")) == 3
    assert broker.stop() == 0
