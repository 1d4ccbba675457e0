"""The sink plays a broker's handshake, then counts and discards input."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from amqpd.bench import frames
from amqpd.bench.client import BenchConnection, BenchError, BrokerUrl
from amqpd.bench.sink import Sink, SinkReport


class Served:
    def __init__(self, sink: Sink) -> None:
        self.report: SinkReport | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, args=(sink,))
        self.thread.start()

    def _serve(self, sink: Sink) -> None:
        try:
            self.report = sink.serve_one(timeout=5, max_duration=10)
        except BaseException as exc:
            self.error = exc

    def wait(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    yield server
    server.close()


def test_client_completes_the_handshake_and_bytes_are_counted(sink: Sink) -> None:
    served = Served(sink)
    conn = BenchConnection.open(BrokerUrl.parse(f"amqp://a:b@127.0.0.1:{sink.port}/"))
    assert conn.frame_max == 131072 and conn.channel_max == 2047
    conn.open_channel(3)
    template = frames.message_template(
        3, "", "q", 16, persistent=False, frame_max=conn.frame_max
    )
    batch, _offsets = template.batch(1000)
    conn.send(batch)
    conn.sock.shutdown(socket.SHUT_WR)
    served.wait()
    conn.sock.close()
    assert served.error is None and served.report is not None
    assert served.report.channel == 3
    assert served.report.discarded_bytes == len(batch)
    assert served.report.first_ns <= served.report.last_ns


def test_sink_refuses_a_wrong_protocol_header(sink: Sink) -> None:
    served = Served(sink)
    with socket.create_connection(("127.0.0.1", sink.port)) as sock:
        sock.sendall(b"AMQP\x01\x01\x00\x0a")
        served.wait()
    assert isinstance(served.error, BenchError)
    assert "protocol header" in str(served.error)


def test_sink_gives_up_without_a_client() -> None:
    lonely = Sink()
    try:
        with pytest.raises(BenchError, match="no client"):
            lonely.serve_one(timeout=0.1)
    finally:
        lonely.close()
