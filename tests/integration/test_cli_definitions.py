"""``amqpd definitions export|import FILE --data-dir DIR`` on real data dirs.

Both work on a stopped broker only: a running broker holds DATA/amqpd.lock
and they exit 1 saying so. A file exported from one data directory and
imported into a fresh one gives a broker there the same topology and users.
A file with entries the broker would refuse is refused whole, and so is the
start of a broker whose ``load_definitions`` file has any. A damaged or
unreadable store stops the start, the export and the import with one line
and exit 1, and changes nothing in the data directory.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from amqpd.testing import BrokerThread

PRIORITY_ARGS = {"x-max-priority": 7, "x-dead-letter-exchange": "defs.topic"}


def definitions(
    *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "amqpd", "definitions", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, input=stdin)


@contextmanager
def channel(
    broker: BrokerThread, user: str = "guest", password: str = "guest"
) -> Iterator[BlockingChannel]:
    params = pika.ConnectionParameters(
        "127.0.0.1", broker.port, credentials=pika.PlainCredentials(user, password)
    )
    conn = pika.BlockingConnection(params)
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def declare_topology(broker: BrokerThread) -> None:
    with channel(broker) as ch:
        ch.exchange_declare("defs.topic", "topic", durable=True)
        ch.exchange_declare("defs.fanout", "fanout", durable=True)
        ch.exchange_bind("defs.fanout", "defs.topic", "a.#")
        ch.queue_declare("defs.q", durable=True, arguments=PRIORITY_ARGS)
        ch.queue_bind("defs.q", "defs.fanout", "")
        ch.queue_declare("defs.capped", durable=True)
        ch.queue_declare("defs.transient", durable=False)
    assert broker.broker is not None
    node = broker.broker.node
    broker.call(node.add_user, "erin", "pa55word", ["management"])
    broker.call(node.set_permission, "erin", "/", "^defs\\.", ".*", ".*")
    broker.call(node.set_policy, "/", "cap", "^defs\\.capped$", {"max-length": 1})


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A stopped broker's data directory holding some topology and a user."""
    path = tmp_path / "source"
    with BrokerThread(data_dir=path) as broker:
        declare_topology(broker)
    return path


def export(data_dir: Path, target: Path) -> dict[str, Any]:
    done = definitions("export", str(target), "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(target.read_text())
    return document


def test_export_writes_the_stored_definitions_as_rabbitmq_json(
    source: Path, tmp_path: Path
) -> None:
    document = export(source, tmp_path / "defs.json")

    assert document["rabbit_version"].startswith("3.")
    assert {q["name"]: q["arguments"] for q in document["queues"]} == {
        "defs.q": PRIORITY_ARGS,
        "defs.capped": {},
    }
    assert sorted(e["name"] for e in document["exchanges"]) == [
        "defs.fanout", "defs.topic",
    ]  # fmt: skip
    bindings = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in document["bindings"]
    }
    assert bindings == {
        ("defs.topic", "defs.fanout", "exchange", "a.#"),
        ("defs.fanout", "defs.q", "queue", ""),
    }
    erin = next(u for u in document["users"] if u["name"] == "erin")
    assert erin["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert erin["tags"] == ["management"]
    assert "pa55word" not in json.dumps(document)
    assert [p["name"] for p in document["policies"]] == ["cap"]


def test_export_to_stdout(source: Path) -> None:
    done = definitions("export", "-", "--data-dir", str(source))
    assert done.returncode == 0, done.stderr
    assert "defs.q" in {q["name"] for q in json.loads(done.stdout)["queues"]}


def test_export_and_import_refuse_a_running_broker(
    source: Path, tmp_path: Path
) -> None:
    document = export(source, tmp_path / "defs.json")
    document["queues"].append({
        "name": "sneaked.in", "vhost": "/", "durable": True, "auto_delete": False,
        "arguments": {},
    })  # fmt: skip
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(document))

    with BrokerThread(data_dir=source):
        for args in (
            ("export", str(tmp_path / "out.json")),
            ("import", str(changed)),
        ):
            done = definitions(*args, "--data-dir", str(source))
            assert done.returncode == 1
            assert done.stderr == (
                f"amqpd definitions {args[0]}: a broker is running on {source} "
                f"(it holds {source / 'amqpd.lock'}); stop it first\n"
            )
    assert not (tmp_path / "out.json").exists()
    after = export(source, tmp_path / "after.json")
    assert "sneaked.in" not in {q["name"] for q in after["queues"]}


def test_export_then_import_into_a_fresh_data_dir_brings_the_topology(
    source: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "defs.json"
    export(source, exported)
    target = tmp_path / "fresh"  # does not exist yet

    done = definitions("import", str(exported), "--data-dir", str(target))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("imported ")
    assert f"into {target}" in done.stderr

    with BrokerThread(data_dir=target) as broker:
        with channel(broker, "erin", "pa55word") as ch:
            ch.queue_declare("defs.q", durable=True, arguments=PRIORITY_ARGS)
            ch.confirm_delivery()
            ch.basic_publish("defs.topic", "a.b", b"through-two-exchanges")
            _method, _props, body = ch.basic_get("defs.q", auto_ack=True)
            assert body == b"through-two-exchanges"
            for n in range(3):
                ch.basic_publish("", "defs.capped", f"m{n}".encode())
            count = ch.queue_declare("defs.capped", passive=True).method
            assert count.message_count == 1  # the imported policy applies
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            with channel(broker) as ch:
                ch.queue_declare("defs.transient", passive=True)
        assert closed.value.reply_code == 404
    assert (
        export(target, tmp_path / "again.json")["queues"]
        == export(source, tmp_path / "once-more.json")["queues"]
    )


def test_import_adds_and_replaces_but_deletes_nothing(
    source: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "defs.json"
    export(source, exported)
    target = tmp_path / "target"
    with BrokerThread(data_dir=target) as broker, channel(broker) as ch:
        ch.queue_declare("already.there", durable=True)

    done = definitions("import", str(exported), "--data-dir", str(target))
    assert done.returncode == 0, done.stderr

    names = {q["name"] for q in export(target, tmp_path / "merged.json")["queues"]}
    assert names == {"already.there", "defs.q", "defs.capped"}


def test_import_from_stdin(source: Path, tmp_path: Path) -> None:
    text = tmp_path / "defs.json"
    export(source, text)
    target = tmp_path / "target"
    done = definitions("import", "-", "--data-dir", str(target), stdin=text.read_text())
    assert done.returncode == 0, done.stderr
    assert "defs.q" in {
        q["name"] for q in export(target, tmp_path / "out.json")["queues"]
    }


def test_import_of_a_bad_file_touches_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queues": [{"name": "no-vhost-field"}]}))
    target = tmp_path / "target"

    done = definitions("import", str(bad), "--data-dir", str(target))

    assert done.returncode == 1
    assert done.stderr.startswith("amqpd definitions import: ")
    assert len(done.stderr.splitlines()) == 1
    assert not target.exists()


def test_export_of_a_data_dir_without_definitions_exits_1(tmp_path: Path) -> None:
    tmp_path.joinpath("empty").mkdir()
    done = definitions(
        "export", str(tmp_path / "out.json"), "--data-dir", str(tmp_path / "empty")
    )
    assert done.returncode == 1
    assert "holds no definitions.sqlite3" in done.stderr
    assert not (tmp_path / "out.json").exists()


# entries the broker would refuse, refused at import -----------------------

REFUSED_QUEUES: dict[str, dict[str, Any]] = {
    "bad.priority": {"arguments": {"x-max-priority": 300}},
    "bad.stream": {"arguments": {"x-queue-type": "stream"}},
    "bad.ttl": {"arguments": {"x-message-ttl": -5}},
    "bad.overflow": {"arguments": {"x-overflow": "bogus"}},
    "bad.quorum": {"auto_delete": True, "arguments": {"x-queue-type": "quorum"}},
}


def with_refused_entries(document: dict[str, Any]) -> dict[str, Any]:
    """`document` plus one entry of each kind that the broker refuses."""
    queues = [
        {"name": name, "vhost": "/", "durable": True, "auto_delete": False, **fields}
        for name, fields in REFUSED_QUEUES.items()
    ]
    return {
        **document,
        "queues": document["queues"] + queues,
        "exchanges": document["exchanges"] + [{
            "name": "bad.type", "vhost": "/", "type": "x-consistent-hash",
            "durable": True, "auto_delete": False, "internal": False,
            "arguments": {},
        }],
        "bindings": document["bindings"] + [{
            "source": "defs.topic", "vhost": "/", "destination": "no.such.queue",
            "destination_type": "queue", "routing_key": "k", "arguments": {},
        }],
        "policies": document["policies"] + [
            {"vhost": "/", "name": "bad-pattern", "pattern": "[",
             "apply-to": "all", "definition": {"max-length": 1}, "priority": 0},
            {"vhost": "/", "name": "shovel", "pattern": ".*", "apply-to": "all",
             "definition": {"shovel-uri": "amqp://"}, "priority": 0},
        ],
    }  # fmt: skip


REFUSED_LINES = [
    "policy 'bad-pattern' in vhost '/': invalid pattern '[': unterminated "
    "character set at position 0",
    "policy 'shovel' in vhost '/': unknown policy key 'shovel-uri'",
    "exchange 'bad.type' in vhost '/': unknown exchange type 'x-consistent-hash'",
    "queue 'bad.overflow' in vhost '/': invalid arg 'x-overflow': invalid_overflow",
    "queue 'bad.priority' in vhost '/': invalid arg 'x-max-priority': "
    "{max_value_exceeded,300}",
    "queue 'bad.quorum' in vhost '/': invalid property 'auto-delete'",
    "queue 'bad.stream' in vhost '/': invalid arg 'x-queue-type': stream queues "
    "are not supported by this broker yet; declare a classic or quorum queue",
    "queue 'bad.ttl' in vhost '/': invalid arg 'x-message-ttl': {value_negative,-5}",
    "binding from exchange 'defs.topic' to queue 'no.such.queue' with routing "
    "key 'k' in vhost '/': no queue 'no.such.queue' in the file or the store",
]


def test_import_refuses_the_whole_file_naming_each_entry_the_broker_refuses(
    source: Path, tmp_path: Path
) -> None:
    before = export(source, tmp_path / "before.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(with_refused_entries(before)))

    done = definitions("import", str(bad), "--data-dir", str(source))

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"amqpd definitions import: {line}" for line in REFUSED_LINES
    ] + ["amqpd definitions import: 9 entries refused, nothing imported"]
    assert export(source, tmp_path / "after.json") == before


def test_a_refused_import_into_a_fresh_data_dir_creates_nothing(
    source: Path, tmp_path: Path
) -> None:
    document = export(source, tmp_path / "defs.json")
    document["queues"].append({
        "name": "q1", "vhost": "/", "durable": True, "auto_delete": False,
        "arguments": {"x-max-priority": 0},
    })  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    target = tmp_path / "fresh"

    done = definitions("import", str(bad), "--data-dir", str(target))

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "amqpd definitions import: queue 'q1' in vhost '/': invalid arg "
        "'x-max-priority': {value_zero,0}",
        "amqpd definitions import: 1 entry refused, nothing imported",
    ]
    assert not target.exists()


# Shaped like `rabbitmqctl export_definitions` of RabbitMQ 3.13.
RABBITMQ_EXPORT: dict[str, Any] = {
    "rabbit_version": "3.13.7",
    "rabbitmq_version": "3.13.7",
    "product_name": "RabbitMQ",
    "product_version": "3.13.7",
    "users": [{
        # RabbitMQ's salted SHA-256 of "guest"
        "name": "guest",
        "password_hash": "YQxYCLyS5/5f8lS8QdCWVDrgzTu9lbVOkhc/AkEeRWeoeSxH",
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": ["administrator"], "limits": {},
    }],
    "vhosts": [{
        "name": "/", "description": "Default virtual host", "tags": [],
        "default_queue_type": "classic",
        "metadata": {"description": "Default virtual host", "tags": [],
                     "default_queue_type": "classic"},
    }],
    "permissions": [{
        "user": "guest", "vhost": "/", "configure": ".*", "write": ".*",
        "read": ".*",
    }],
    "topic_permissions": [],
    "parameters": [],
    "global_parameters": [{"name": "cluster_name", "value": "rabbit@host"}],
    "policies": [{
        "vhost": "/", "name": "cap", "pattern": "^orders$", "apply-to": "queues",
        "definition": {"max-length": 2, "overflow": "reject-publish"},
        "priority": 0,
    }],
    "queues": [
        {"name": "orders", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-queue-type": "quorum"}, "type": "quorum"},
        {"name": "urgent", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {"x-max-priority": 10, "x-queue-type": "classic"}},
    ],
    "exchanges": [
        {"name": "shop", "vhost": "/", "type": "topic", "durable": True,
         "auto_delete": False, "internal": False, "arguments": {}},
        {"name": "amq.rabbitmq.trace", "vhost": "/", "type": "topic",
         "durable": True, "auto_delete": False, "internal": True,
         "arguments": {}},
    ],
    "bindings": [
        {"source": "shop", "vhost": "/", "destination": "orders",
         "destination_type": "queue", "routing_key": "order.#", "arguments": {}},
        {"source": "amq.topic", "vhost": "/", "destination": "urgent",
         "destination_type": "queue", "routing_key": "urgent", "arguments": {}},
    ],
}  # fmt: skip


def test_a_rabbitmq_export_imports_and_the_broker_serves_it(
    tmp_path: Path,
) -> None:
    exported = tmp_path / "rabbit.json"
    exported.write_text(json.dumps(RABBITMQ_EXPORT))
    target = tmp_path / "target"

    done = definitions("import", str(exported), "--data-dir", str(target))

    assert done.returncode == 0, done.stderr
    assert "skipped exchange 'amq.rabbitmq.trace'" in done.stderr
    with BrokerThread(data_dir=target) as broker, channel(broker) as ch:
        ch.confirm_delivery()
        ch.basic_publish("shop", "order.new", b"o1")
        ch.basic_publish("amq.topic", "urgent", b"u1")
        orders = ch.queue_declare("orders", passive=True).method
        urgent = ch.queue_declare("urgent", passive=True).method
    assert (orders.message_count, urgent.message_count) == (1, 1)


def test_start_with_a_refused_load_definitions_file_exits_1_changing_nothing(
    source: Path, tmp_path: Path
) -> None:
    before = export(source, tmp_path / "before.json")
    bad = tmp_path / "load.json"
    bad.write_text(json.dumps(with_refused_entries(before)))
    config = tmp_path / "amqpd.toml"
    config.write_text(f"load_definitions = {json.dumps(str(bad))}\n")
    argv = [sys.executable, "-m", "amqpd", "--port", "0", "--bind", "127.0.0.1",
            "--data-dir", str(source), "--config", str(config)]  # fmt: skip

    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)

    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"amqpd: definitions store: definitions file {bad} refused: "
        + "; ".join(REFUSED_LINES)
    )
    assert export(source, tmp_path / "after.json") == before


# a damaged or unreadable store: one line, exit 1, nothing changed ----------

LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ amqpd[.\w]*: ")
DAMAGE_HINT = "restore it from a backup or an export, or move it away to start empty"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped broker's data dir: topology, a user, a journaled message."""
    path = tmp_path_factory.mktemp("pristine") / "data"
    with BrokerThread(data_dir=path) as broker:
        declare_topology(broker)
        with channel(broker) as ch:
            ch.confirm_delivery()
            persistent = pika.BasicProperties(delivery_mode=2)
            ch.basic_publish("", "defs.q", b"kept", persistent)
    return path


def overwrite_the_header(store: Path) -> str:
    with store.open("r+b") as stream:
        stream.write(bytes(range(100)))
    return f"file is not a database ({DAMAGE_HINT})"


def truncate_to_half(store: Path) -> str:
    os.truncate(store, store.stat().st_size // 2)
    return f"database disk image is malformed ({DAMAGE_HINT})"


def replace_with_random_bytes(store: Path) -> str:
    size = store.stat().st_size
    store.write_bytes(random.Random(7).randbytes(size))
    return f"file is not a database ({DAMAGE_HINT})"


def damage_the_queues_table(store: Path) -> str:
    # the schema reads fine; the store is found damaged only by load()
    with closing(sqlite3.connect(store)) as db:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (root,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'amqpd_queues'"
        ).fetchone()
    with store.open("r+b") as stream:
        stream.seek((root - 1) * page_size)
        stream.write(b"\xff" * page_size)
    return f"database disk image is malformed ({DAMAGE_HINT})"


def make_it_a_directory(store: Path) -> str:
    store.unlink()
    store.mkdir()
    return f"is a directory ({DAMAGE_HINT})"


def make_it_a_symlink_loop(store: Path) -> str:
    store.unlink()
    store.symlink_to(store.name)
    return f"too many levels of symbolic links ({DAMAGE_HINT})"


# chmod 000 is not among them: these tests run as root, which reads the
# file all the same (the broker then starts). As another user, the line
# says "permission denied" and that the broker's user must be able to read
# and write the file.
DAMAGES = [
    pytest.param(damage, id=damage.__name__.replace("_", "-"))
    for damage in (
        overwrite_the_header,
        truncate_to_half,
        replace_with_random_bytes,
        damage_the_queues_table,
        make_it_a_directory,
        make_it_a_symlink_loop,
    )
]


@pytest.fixture(params=DAMAGES)
def damaged(
    request: pytest.FixtureRequest, pristine: Path, tmp_path: Path
) -> tuple[Path, str]:
    """A copy of `pristine` with its store damaged, and the problem that
    the one line names."""
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir, symlinks=True)
    problem: str = request.param(data_dir / "definitions.sqlite3")
    return data_dir, problem


def snapshot(data_dir: Path) -> dict[str, bytes | str]:
    """Every entry under data_dir (file bytes, link targets, directories)
    but amqpd.lock, which each command rewrites with its PID."""
    found: dict[str, bytes | str] = {}
    for parent, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            path = Path(parent, name)
            key = str(path.relative_to(data_dir))
            if path.is_symlink():
                found[key] = f"symlink to {os.readlink(path)}"
            elif path.is_dir():
                found[key] = "directory"
            elif key != "amqpd.lock":
                found[key] = path.read_bytes()
    return found


def test_start_on_a_damaged_store_exits_1_with_one_line_changing_nothing(
    damaged: tuple[Path, str],
) -> None:
    data_dir, problem = damaged
    before = snapshot(data_dir)
    argv = [sys.executable, "-m", "amqpd", "--port", "0", "--bind", "127.0.0.1",
            "--data-dir", str(data_dir)]  # fmt: skip

    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    store = data_dir / "definitions.sqlite3"
    printed = [line for line in done.stderr.splitlines() if not LOG_RECORD.match(line)]
    assert printed == [f"amqpd: definitions store: {store}: {problem}"]
    assert snapshot(data_dir) == before


def test_export_of_a_damaged_store_exits_1_with_one_line_changing_nothing(
    damaged: tuple[Path, str], tmp_path: Path
) -> None:
    data_dir, problem = damaged
    before = snapshot(data_dir)

    done = definitions(
        "export", str(tmp_path / "out.json"), "--data-dir", str(data_dir)
    )

    assert done.returncode == 1
    store = data_dir / "definitions.sqlite3"
    assert done.stderr == f"amqpd definitions export: {store}: {problem}\n"
    assert snapshot(data_dir) == before
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("damage", [overwrite_the_header, damage_the_queues_table])
def test_import_into_a_damaged_store_exits_1_with_one_line_changing_nothing(
    pristine: Path, tmp_path: Path, damage: Callable[[Path], str]
) -> None:
    exported = tmp_path / "defs.json"
    export(pristine, exported)
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    problem = damage(data_dir / "definitions.sqlite3")
    before = snapshot(data_dir)

    done = definitions("import", str(exported), "--data-dir", str(data_dir))

    assert done.returncode == 1
    store = data_dir / "definitions.sqlite3"
    assert done.stderr == f"amqpd definitions import: {store}: {problem}\n"
    assert snapshot(data_dir) == before


def test_a_damaged_store_moved_away_starts_empty_and_keeps_the_messages(
    pristine: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    overwrite_the_header(data_dir / "definitions.sqlite3")
    (data_dir / "definitions.sqlite3").rename(tmp_path / "damaged.sqlite3")

    # as the one line says: the broker starts with an empty store, and the
    # journal's message comes back in a plain durable queue of that name
    with BrokerThread(data_dir=data_dir) as broker, channel(broker) as ch:
        _method, _props, body = ch.basic_get("defs.q", auto_ack=True)
        assert body == b"kept"
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            ch.exchange_declare("defs.topic", passive=True)
    assert closed.value.reply_code == 404


def test_export_with_a_url_no_async_driver_takes_exits_2(tmp_path: Path) -> None:
    done = definitions("export", "-", "--data-dir", str(tmp_path), "--url", "foo://db")
    assert done.returncode == 2
    assert done.stderr == (
        "amqpd definitions export: --url: foo://db: SQLAlchemy has no database 'foo'\n"
    )


def test_export_from_an_unreachable_server_exits_1_with_one_line(
    tmp_path: Path,
) -> None:
    with socket.socket() as refusing:  # bound, not listening
        refusing.bind(("127.0.0.1", 0))
        where = f"amqpd:{{}}@127.0.0.1:{refusing.getsockname()[1]}/amqpd"
        url = "postgresql+asyncpg://" + where.format("s3cret")
        done = definitions("export", "-", "--data-dir", str(tmp_path), "--url", url)

    assert done.returncode == 1
    shown = "postgresql+asyncpg://" + where.format("***")
    assert done.stderr.startswith(f"amqpd definitions export: {shown}: [Errno 111]")
    assert len(done.stderr.splitlines()) == 1
    assert "s3cret" not in done.stderr
    assert done.stdout == ""
