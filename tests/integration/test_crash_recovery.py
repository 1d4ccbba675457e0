"""SIGKILL the broker under load and restart it on the same data directory.

The kill cycles come from tools/crashloop.py (its docstring lists what a
restart must bring back); here they run short, in four journal settings.
The seed is printed and named in every failure; set AMQPD_CRASH_SEED to
replay one. A few single-kill tests pin the cases one by one.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import crashloop
from crashloop import BrokerProcess, abandon, connect

BASE_SEED = int(
    os.environ.get("AMQPD_CRASH_SEED") or random.SystemRandom().randrange(2**32)
)
CYCLES = 5
KILL_AFTER = (0.2, 0.8)
PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def brokers() -> Iterator[list[BrokerProcess]]:
    """Broker processes a test starts; each is killed by PID at the end."""
    started: list[BrokerProcess] = []
    try:
        yield started
    finally:
        for broker in started:
            broker.kill()


def start(brokers: list[BrokerProcess], data_dir: Path) -> BrokerProcess:
    broker = BrokerProcess(data_dir, env=_env())
    brokers.append(broker)
    broker.wait_ready()
    return broker


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AMQPD_JOURNAL_KEY", None)
    return env


def journal_check(data_dir: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "amqpd", "journal", "check"]
    argv += ["--data-dir", str(data_dir)]
    for key in keys:
        argv += ["--key", key]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def _variant(name: str, tmp_path: Path) -> tuple[Path | None, list[str]]:
    """A config file for a journal setting, and the --key specs to check it."""
    if name == "batch":
        return None, []
    lines = []
    keys: list[str] = []
    if name == "interval":
        lines += ['journal_fsync = "interval"', "journal_fsync_interval_ms = 50"]
    elif name == "small-segments":
        lines += ["journal_segment_size = 4096", "journal_compress_threshold = 16"]
        # past this budget bodies are read back from the compacted journal
        lines.append("message_memory_budget = 4096")
    elif name == "encrypted":
        key = tmp_path / "journal.key"
        key.write_bytes(os.urandom(32))
        keys.append(f"k1={key}")
        lines.append(f'journal_keys = ["k1={key}"]')
    config = tmp_path / "amqpd.toml"
    config.write_text("\n".join(lines) + "\n")
    return config, keys


@pytest.mark.parametrize(
    "variant", ["batch", "interval", "small-segments", "encrypted"]
)
def test_confirmed_messages_survive_repeated_sigkill(
    variant: str, tmp_path: Path
) -> None:
    seed = BASE_SEED + ["batch", "interval", "small-segments", "encrypted"].index(
        variant
    )
    print(f"crash seed {seed} (AMQPD_CRASH_SEED={BASE_SEED})")
    config, keys = _variant(variant, tmp_path)
    data_dir = tmp_path / "data"
    stats = crashloop.crash_loop(
        data_dir, cycles=CYCLES, seed=seed, kill_after=KILL_AFTER, config=config,
        env=_env(),
    )  # fmt: skip
    assert stats.cycles == CYCLES
    assert stats.confirmed > 0
    assert stats.recovered > 0
    # recovery cut every torn tail off; a clean stop leaves a clean journal
    checked = journal_check(data_dir, *keys)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1] == "clean"


def test_unacked_delivery_at_kill_comes_back_redelivered(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    ch.queue_declare("held", durable=True)
    ch.confirm_delivery()
    for n in range(3):
        ch.basic_publish("", "held", f"m{n}".encode(), PERSISTENT)
    taken = [ch.basic_get("held") for _ in range(3)]
    assert [body for _, _, body in taken] == [b"m0", b"m1", b"m2"]
    assert [m.redelivered for m, _, _ in taken] == [False, False, False]
    broker.kill()
    abandon(conn)

    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    back = [ch.basic_get("held", auto_ack=True) for _ in range(4)]
    assert [body for _, _, body in back[:3]] == [b"m0", b"m1", b"m2"]
    assert [m.redelivered for m, _, _ in back[:3]] == [True, True, True]
    assert back[3][0] is None
    conn.close()


def test_settled_ack_does_not_come_back_after_kill(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    ch.queue_declare("acked", durable=True)
    ch.queue_declare("marks", durable=True)
    ch.confirm_delivery()
    for n in range(4):
        ch.basic_publish("", "acked", f"m{n}".encode(), PERSISTENT)
    for _ in range(2):
        method, _props, _body = ch.basic_get("acked")
        ch.basic_ack(method.delivery_tag)
    # confirmed after the acks on the same channel: the acks are on disk
    ch.basic_publish("", "marks", b"mark", PERSISTENT)
    broker.kill()
    abandon(conn)

    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    assert ch.queue_declare("acked", passive=True).method.message_count == 2
    bodies = [ch.basic_get("acked", auto_ack=True)[2] for _ in range(2)]
    assert bodies == [b"m2", b"m3"]
    conn.close()


def test_messages_of_a_queue_declared_moments_before_the_kill_survive(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    # the declaration may not be stored yet at the kill (it is written a
    # moment after declare-ok); the journal still holds the confirmed
    # messages and the queue comes back as a plain durable queue
    data_dir = tmp_path / "data"
    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    ch.queue_declare("sudden", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "sudden", b"kept", PERSISTENT)
    broker.kill()
    abandon(conn)

    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    method, _props, body = ch.basic_get("sudden", auto_ack=True)
    assert body == b"kept"
    assert method.redelivered is True
    conn.close()


def test_transient_messages_and_non_durable_queues_are_gone_after_kill(
    brokers: list[BrokerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    ch.queue_declare("mixed", durable=True)
    ch.queue_declare("scratch", durable=False)
    ch.confirm_delivery()
    ch.basic_publish("", "mixed", b"transient", pika.BasicProperties(delivery_mode=1))
    ch.basic_publish("", "mixed", b"persistent", PERSISTENT)
    ch.basic_publish("", "scratch", b"persistent", PERSISTENT)
    broker.kill()
    abandon(conn)

    broker = start(brokers, data_dir)
    conn = connect(broker.port)
    ch = conn.channel()
    assert ch.queue_declare("mixed", passive=True).method.message_count == 1
    assert ch.basic_get("mixed", auto_ack=True)[2] == b"persistent"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        ch.queue_declare("scratch", passive=True)
    assert closed.value.reply_code == 404
    conn.close()


def test_crash_check_names_lost_duplicated_reordered_and_undone_messages() -> None:
    # the checker itself, on made-up drains: it must not pass bad recoveries
    publisher = crashloop.PublisherLog("c1p0", confirmed=4, sent=5)
    consumer = crashloop.ConsumerLog(settled={b"c1p0:1"}, unsettled={b"c1p0:2"})
    load = crashloop.CycleLoad([publisher], consumer)

    def found(fifo: list[bytes], again: bool = True) -> dict[str, list[Any]]:
        every = [b"c1p0:1", b"c1p0:2", b"c1p0:3", b"c1p0:4"]
        return {
            crashloop.FIFO: [(body, again) for body in fifo],
            crashloop.PRIORITY: [
                (b, True) for b in sorted(every, key=_priority, reverse=True)
            ],
            crashloop.TTL: [(body, True) for body in every],
        }

    # an unsettled ack may come back once; the in-flight seq 5 may be there
    assert crashloop.check(found([b"c1p0:2", b"c1p0:3", b"c1p0:4"]), load) == []
    assert crashloop.check(found([b"c1p0:3", b"c1p0:4", b"c1p0:5"]), load) == []
    cases = {
        "is lost": [b"c1p0:4"],
        "came back 2 times": [b"c1p0:3", b"c1p0:3", b"c1p0:4"],
        "out of order": [b"c1p0:4", b"c1p0:3"],
        "settled ack": [b"c1p0:1", b"c1p0:3", b"c1p0:4"],
        "never sent": [b"c1p0:3", b"c1p0:4", b"c1p0:6"],
        "not from the last cycle": [b"c0p0:9", b"c1p0:3", b"c1p0:4"],
    }
    for words, fifo in cases.items():
        problems = crashloop.check(found(fifo), load)
        assert any(words in p for p in problems), (words, problems)
    problems = crashloop.check(found([b"c1p0:3", b"c1p0:4"], again=False), load)
    assert problems == ["crash.fifo: 2 recovered messages not marked redelivered, "
                        "first b'c1p0:3'"]  # fmt: skip


def _priority(body: bytes) -> int:
    return crashloop.priority_of(int(body.rpartition(b":")[2]))
