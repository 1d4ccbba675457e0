"""Running out of file descriptors must not stop the broker: it keeps the
connections it has and accepts again once descriptors are free."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pika

LIMIT = 64


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "amqpd", "--bind", "127.0.0.1", "--port", "0",
         "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE, text=True, preexec_fn=_limit_files,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "amqpd ready: listening on 127.0.0.1:" in line:
            return proc, int(line.rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("broker did not start")


def test_broker_survives_running_out_of_file_descriptors(tmp_path: Path) -> None:
    proc, port = _start(tmp_path / "data")
    try:
        survivor = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = survivor.channel()
        channel.queue_declare("kept")
        flood = []
        for _ in range(2 * LIMIT):  # far more than the broker has descriptors
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            flood.append(sock)
        time.sleep(1.5)  # the broker hits EMFILE, and its resource check runs
        assert proc.poll() is None, "the broker exited"
        channel.basic_publish("", "kept", b"still here")
        _method, _props, body = channel.basic_get("kept", auto_ack=True)
        assert body == b"still here"
        for sock in flood:
            sock.close()
        time.sleep(0.5)
        late = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        assert late.channel().queue_declare("kept", passive=True)
        late.close()
        survivor.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
