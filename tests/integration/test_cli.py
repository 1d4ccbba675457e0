"""The ``amqpd`` command as an operator meets it: start, readiness, errors, stop.

Every test runs the broker as a child process, reads its stderr on a thread
(so a chatty broker never blocks on a full pipe), and kills the child by PID
in a ``finally`` block whatever happens.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from pika.exceptions import ConnectionClosedByBroker

from amqpd import __version__
from amqpd.config import Config

READY = re.compile(r"amqpd ready: listening on (.+)$")
LOG_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ amqpd[.\w]*: ")
START_TIMEOUT = 15.0
EXIT_TIMEOUT = 10.0

MODULE = [sys.executable, "-m", "amqpd"]
SCRIPT = [str(Path(sys.executable).parent / "amqpd")]
LAUNCHERS = [pytest.param(MODULE, id="python-m"), pytest.param(SCRIPT, id="script")]


class BrokerProcess:
    """An ``amqpd`` child process and the lines it writes to stderr."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._fresh: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._fresh.put(line.rstrip("\n"))
        self._fresh.put(None)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """The address list of the ready line; fails if the broker exits."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no ready line within {timeout}s: {self.lines}")
            try:
                line = self._fresh.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"amqpd exited before it was ready: {self.lines}")
            self.lines.append(line)
            match = READY.search(line)
            if match:
                return match.group(1)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """The exit code, once the process ended and its stderr is read."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while True:
            line = self._fresh.get_nowait() if not self._fresh.empty() else None
            if line is None:
                return code
            self.lines.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def spawn() -> Iterator[type[BrokerProcess]]:
    """Start amqpd children; every one is killed by PID at the end."""
    started: list[BrokerProcess] = []

    class Tracked(BrokerProcess):
        def __init__(self, argv: list[str], env: dict[str, str] | None = None):
            super().__init__(argv, env)
            started.append(self)

    try:
        yield Tracked
    finally:
        for child in started:
            child.kill()


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    """Run a command that must stop by itself: exit code and stderr lines."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _out, err = proc.communicate(timeout=START_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=EXIT_TIMEOUT)
    return proc.returncode, err.splitlines()


def errors(lines: list[str]) -> list[str]:
    """The lines that are not log records: what the command itself printed."""
    return [line for line in lines if not LOG_RECORD.match(line)]


def port_of(addresses: str) -> int:
    return int(addresses.rsplit(":", 1)[1])


def connect(port: int) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=5,
    )
    return pika.BlockingConnection(params)


def round_trip(port: int) -> None:
    conn = connect(port)
    try:
        ch = conn.channel()
        name = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", name, b"ping")
        _method, _props, body = ch.basic_get(name, auto_ack=True)
        assert body == b"ping"
    finally:
        conn.close()


def second_loopback() -> tuple[str, str]:
    """A second loopback address to bind, and how the ready line shows it."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return "127.0.0.2", "127.0.0.2"
    return "::1", "[::1]"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port of 127.0.0.1 that something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def base_args(data_dir: Path) -> list[str]:
    return ["--port", "0", "--bind", "127.0.0.1", "--data-dir", str(data_dir)]


# start and readiness


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_ready_line_names_address_and_port_clients_can_use(
    spawn: type[BrokerProcess], tmp_path: Path, launcher: list[str]
) -> None:
    broker = spawn([*launcher, *base_args(tmp_path)])
    addresses = broker.wait_ready()

    assert re.fullmatch(r"127\.0\.0\.1:\d+", addresses)
    port = port_of(addresses)
    assert port > 0
    round_trip(port)
    broker.proc.send_signal(signal.SIGTERM)
    assert broker.wait_exit() == 0
    assert sum("amqpd ready:" in line for line in broker.lines) == 1


def test_ready_line_lists_every_bound_address(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    other, shown = second_loopback()
    broker = spawn(
        [*MODULE, "--port", "0", "--bind", "127.0.0.1", "--bind", other,
         "--data-dir", str(tmp_path)]
    )  # fmt: skip
    addresses = broker.wait_ready()

    port = port_of(addresses)
    assert addresses == f"127.0.0.1:{port}, {shown}:{port}"
    round_trip(port)


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_version_flag_prints_the_package_version(launcher: list[str]) -> None:
    proc = subprocess.run(
        [*launcher, "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"amqpd {__version__}"


def test_default_data_dir_is_under_xdg_data_home(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    env["HOME"] = str(tmp_path / "home")
    broker = spawn([*MODULE, "--port", "0", "--bind", "127.0.0.1"], env=env)
    broker.wait_ready()

    lock = tmp_path / "xdg" / "amqpd" / "amqpd.lock"
    assert lock.read_text() == f"{broker.proc.pid}\n"
    assert not (tmp_path / "home").exists()


def test_default_data_dir_without_xdg_is_under_home(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_DATA_HOME"}
    env["HOME"] = str(tmp_path)
    broker = spawn([*MODULE, "--port", "0", "--bind", "127.0.0.1"], env=env)
    broker.wait_ready()

    assert (tmp_path / ".local" / "share" / "amqpd" / "amqpd.lock").exists()


# configuration file


def test_config_file_sets_bind_port_and_data_dir(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "from-file"
    config = tmp_path / "amqpd.toml"
    config.write_text(
        f'bind = ["127.0.0.1"]\nport = 0\ndata-dir = "{data_dir}"\n'
        'log_level = "info"\nheartbeat = 30\n'
    )
    broker = spawn([*MODULE, "--config", str(config)])
    addresses = broker.wait_ready()

    assert addresses.startswith("127.0.0.1:")
    assert (data_dir / "amqpd.lock").exists()
    conn = connect(port_of(addresses))
    try:
        assert conn._impl.params.heartbeat == 30
    finally:
        conn.close()


def test_flags_win_over_the_config_file(
    spawn: type[BrokerProcess], tmp_path: Path, held_port: int
) -> None:
    # were the file's port or log level used, the broker would fail to
    # start (port taken) or stay silent (no info line)
    config = tmp_path / "amqpd.toml"
    config.write_text(
        f'bind = "127.0.0.1"\nport = {held_port}\nlog_level = "error"\n'
        f'data_dir = "{tmp_path / "file-dir"}"\n'
    )
    broker = spawn(
        [*MODULE, "--config", str(config), "--port", "0", "--log-level", "info",
         "--data-dir", str(tmp_path / "flag-dir")]
    )  # fmt: skip
    addresses = broker.wait_ready()

    assert port_of(addresses) != held_port
    assert (tmp_path / "flag-dir" / "amqpd.lock").exists()
    assert not (tmp_path / "file-dir").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('colour = "blue"\n', "unknown configuration key 'colour'"),
        ('port = "5672"\n', "'port' must be a non-negative integer"),
        ("port = 70000\n", "'port' must be at most 65535"),
        ('log_level = "loud"\n', "'log_level' must be one of"),
        ("bind = [1, 2]\n", "'bind' must be an address or a list of addresses"),
        ("port = = 1\n", "is not valid TOML"),
    ],
    ids=["unknown-key", "port-type", "port-range", "log-level", "bind", "toml"],
)
def test_bad_config_file_exits_2_with_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "amqpd.toml"
    config.write_text(content)
    code, lines = run([*MODULE, "--config", str(config), *base_args(tmp_path)])

    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("amqpd: error: ")
    assert message in lines[0]


def test_missing_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    code, lines = run([*MODULE, "--config", str(missing)])

    assert code == 2
    assert lines == [
        f"amqpd: error: cannot read config file {missing}: No such file or directory"
    ]


# bad flags


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--port", "seventy"], "argument --port: invalid int value: 'seventy'"),
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--port", "-1"], "--port must be between 0 and 65535"),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
        (["--port"], "argument --port: expected one argument"),
    ],
    ids=["unknown", "port-text", "port-high", "port-negative", "log-level", "no-value"],
)
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_bad_flags_exit_2_with_one_line(
    launcher: list[str], flags: list[str], message: str
) -> None:
    code, lines = run([*launcher, *flags])

    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("amqpd: error: ")
    assert message in lines[0]


# start failures


def test_port_in_use_exits_1_with_one_line_naming_the_cause(
    tmp_path: Path, held_port: int
) -> None:
    code, lines = run(
        [*MODULE, "--port", str(held_port), "--bind", "127.0.0.1",
         "--data-dir", str(tmp_path)]
    )  # fmt: skip

    assert code == 1
    assert errors(lines) == [
        f"amqpd: cannot listen on 127.0.0.1:{held_port}: Address already in use"
    ]


def test_port_in_use_releases_the_data_dir_lock(
    spawn: type[BrokerProcess], tmp_path: Path, held_port: int
) -> None:
    code, _lines = run(
        [*MODULE, "--port", str(held_port), "--bind", "127.0.0.1",
         "--data-dir", str(tmp_path)]
    )  # fmt: skip
    assert code == 1

    broker = spawn([*MODULE, *base_args(tmp_path)])
    broker.wait_ready()


def test_second_broker_on_the_same_data_dir_exits_1(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    first = spawn([*MODULE, *base_args(tmp_path)])
    port = port_of(first.wait_ready())

    code, lines = run([*MODULE, *base_args(tmp_path)])

    assert code == 1
    assert errors(lines) == [
        f"amqpd: data directory {tmp_path} is in use by another amqpd (lock held)"
    ]
    round_trip(port)  # the first broker is unharmed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://db", "foo://db: SQLAlchemy has no database 'foo'"),
        ("garbage", "the URL does not parse (expected dialect+driver://...)"),
        ("sqlite:///defs.db", "sqlite:///defs.db: The asyncio extension requires"),
    ],
    ids=["unknown-scheme", "unparsable", "sync-driver"],
)
def test_definitions_url_no_async_driver_takes_exits_2_with_one_line(
    tmp_path: Path, url: str, message: str
) -> None:
    config = tmp_path / "amqpd.toml"
    config.write_text(f'definitions_url = "{url}"\n')
    data_dir = tmp_path / "data"

    code, lines = run([*MODULE, "--config", str(config), *base_args(data_dir)])

    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"amqpd: error: 'definitions_url': {message}")
    assert not data_dir.exists()  # refused before anything is opened


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port of 127.0.0.1 that is bound, not listening: connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_unreachable_definitions_server_exits_1_with_one_line(
    tmp_path: Path, refusing_port: int
) -> None:
    where = f"amqpd:{{}}@127.0.0.1:{refusing_port}/amqpd"
    config = tmp_path / "amqpd.toml"
    url = "postgresql+asyncpg://" + where.format("s3cret")
    config.write_text(f'definitions_url = "{url}"\n')

    code, lines = run([*MODULE, "--config", str(config), *base_args(tmp_path)])

    assert code == 1
    shown = "postgresql+asyncpg://" + where.format("***")
    assert len(errors(lines)) == 1, lines
    assert errors(lines)[0].startswith(f"amqpd: definitions store: {shown}: ")
    assert "[Errno 111]" in errors(lines)[0]  # ECONNREFUSED
    assert not any("s3cret" in line or "Traceback" in line for line in lines)


def test_lock_left_by_kill_9_does_not_block_the_next_start(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    first = spawn([*MODULE, *base_args(tmp_path)])
    first.wait_ready()
    first.proc.send_signal(signal.SIGKILL)
    assert first.wait_exit() == -signal.SIGKILL
    assert (tmp_path / "amqpd.lock").exists()

    second = spawn([*MODULE, *base_args(tmp_path)])
    round_trip(port_of(second.wait_ready()))
    assert (tmp_path / "amqpd.lock").read_text() == f"{second.proc.pid}\n"


# stopping


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_stop_signal_closes_clients_with_320_and_exits_0(
    spawn: type[BrokerProcess], tmp_path: Path, launcher: list[str], signum: int
) -> None:
    broker = spawn([*launcher, *base_args(tmp_path)])
    conn = connect(port_of(broker.wait_ready()))
    try:
        conn.channel()
        broker.proc.send_signal(signum)
        with pytest.raises(ConnectionClosedByBroker) as caught:
            deadline = time.monotonic() + EXIT_TIMEOUT
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
    finally:
        if conn.is_open:
            conn.close()

    assert caught.value.reply_code == 320
    assert caught.value.reply_text.startswith("CONNECTION_FORCED - ")
    assert broker.wait_exit() == 0
    name = signal.Signals(signum).name
    assert any(f"received {name}, stopping" in line for line in broker.lines)


def test_stop_signal_without_clients_exits_0_and_frees_the_port(
    spawn: type[BrokerProcess], tmp_path: Path
) -> None:
    broker = spawn([*MODULE, *base_args(tmp_path)])
    port = port_of(broker.wait_ready())
    broker.proc.send_signal(signal.SIGTERM)

    assert broker.wait_exit() == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# documentation


def test_every_config_key_is_in_the_configuration_reference() -> None:
    reference = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = reference.read_text()
    missing = [
        f.name for f in dataclasses.fields(Config) if f"| `{f.name}` |" not in text
    ]
    assert missing == [], "add these keys to docs/configuration.md"
