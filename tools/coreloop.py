"""Measure the broker core's CPU cost per message without sockets.

Feeds publish frames straight into a ConnectionMachine and acks from a
consumer ConnectionMachine, so the figure is the protocol and broker code
alone (no event loop, no kernel). Usage: python tools/coreloop.py [N] [SIZE]
"""

from __future__ import annotations

import struct
import sys
import time

from pamqp import commands as spec

from amqpd.broker.node import Node
from amqpd.codec.fastpath import shortstr
from amqpd.codec.frames import PROTOCOL_HEADER, build_frame, build_method
from amqpd.config import Config
from amqpd.protocol.connection import ConnectionMachine


def handshake(node: Node) -> ConnectionMachine:
    conn = ConnectionMachine(node, ("127.0.0.1", 1), lambda: None)
    conn.receive(PROTOCOL_HEADER)
    conn.receive(
        build_method(
            0,
            spec.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
            ),
        )
    )
    conn.receive(
        build_method(
            0, spec.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=0)
        )
    )
    conn.receive(build_method(0, spec.Connection.Open(virtual_host="/")))
    conn.receive(build_method(1, spec.Channel.Open()))
    conn.take_output()
    return conn


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    node = Node(Config())
    node.ensure_defaults()
    pub, sub = handshake(node), handshake(node)
    pub.receive(build_method(1, spec.Queue.Declare(queue="q")))
    sub.receive(build_method(1, spec.Basic.Qos(prefetch_count=1000)))
    sub.receive(build_method(1, spec.Basic.Consume(queue="q", no_ack=False)))
    sub.take_output()
    msg = (
        build_frame(
            1, 1, b"\x00\x3c\x00\x28\x00\x00" + shortstr("") + shortstr("q") + b"\x00"
        )
        + build_frame(2, 1, b"\x00\x3c\x00\x00" + struct.pack(">Q", size) + b"\x00\x00")
        + build_frame(3, 1, b"x" * size)
    )
    batch = 100
    chunk = msg * batch
    tag = 0
    start = time.process_time()
    for _ in range(n // batch):
        pub.receive(chunk)
        pub.take_output()
        out = sub.take_output()
        tag += batch
        sub.receive(build_frame(1, 1, b"\x00\x3c\x00\x50" + struct.pack(">QB", tag, 1)))
        assert out
    elapsed = time.process_time() - start
    print(f"{n / elapsed:,.0f} msg/s of core CPU time ({size}-byte bodies)")


if __name__ == "__main__":
    main()
