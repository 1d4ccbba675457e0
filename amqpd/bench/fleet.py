"""Worker processes of one scenario run, and the pipe protocol they speak.

Every publisher and consumer is its own spawned process so that the client
side of the bench can use every core the broker leaves free. The parent and
a worker talk over a pipe:

    worker -> parent   ("ready", {})       connected, declared, consuming
    worker -> parent   ("checkpoint", {})  a phase is done; waits for go
    parent -> worker   ("go", None)        start now
    parent -> worker   ("expect", n)       a consumer may stop after n messages
    parent -> worker   ("stop", None)      a consumer stops now
    worker -> parent   ("result", {...})   figures and counts, JSON-friendly
    worker -> parent   ("error", text)     the run failed, with the reason
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from amqpd.bench.client import BenchError

Result = dict[str, Any]


class Link:
    """The worker's end of the pipe."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.expected: int | None = None
        self.stopped = False

    def ready(self, info: Result | None = None) -> None:
        """Tell the parent this worker is set up, with anything it should know."""
        self.pipe.send(("ready", info or {}))

    def checkpoint(self, info: Result, timeout: float = 120.0) -> int:
        """Report a finished phase and wait for go before the next one."""
        self.pipe.send(("checkpoint", info))
        return self.wait_go(timeout)

    def wait_go(self, timeout: float = 120.0) -> int:
        """Block until the parent says go; return the monotonic time in ns."""
        if not self.pipe.poll(timeout):
            raise BenchError("parent never said go")
        while True:
            kind, value = self.pipe.recv()
            if kind == "go":
                return time.monotonic_ns()
            self._note(kind, value)
            if not self.pipe.poll(timeout):
                raise BenchError("parent never said go")

    def poll(self) -> None:
        """Take in any expect or stop message without blocking."""
        while self.pipe.poll():
            kind, value = self.pipe.recv()
            self._note(kind, value)

    def _note(self, kind: str, value: Any) -> None:
        if kind == "expect":
            self.expected = int(value)
        elif kind == "stop":
            self.stopped = True


WorkerFn = Callable[[Any, Link], Result]


def worker_main(run: WorkerFn, plan: Any, pipe: Connection) -> None:
    """Entry point of every worker process: run, then report on the pipe."""
    try:
        result = run(plan, Link(pipe))
    except BaseException as exc:  # report everything, the parent decides
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        pipe.send(("error", f"{detail}\n{traceback.format_exc()}"))
    else:
        pipe.send(("result", result))
    finally:
        pipe.close()


@dataclass
class Worker:
    """The parent's handle on one worker process."""

    name: str
    process: BaseProcess
    pipe: Connection
    result: Result | None = None

    def send(self, kind: str, value: Any = None) -> None:
        """Send one protocol message; a worker that already quit is ignored."""
        try:
            self.pipe.send((kind, value))
        except (BrokenPipeError, OSError):
            pass

    def receive(self, want: str, timeout: float) -> Any:
        """Wait for a message of kind ``want``; raise on error or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.pipe.poll(left):
                raise BenchError(f"{self.name}: no {want!r} within {timeout:.0f} s")
            try:
                kind, value = self.pipe.recv()
            except EOFError as exc:
                code = self.process.exitcode
                raise BenchError(f"{self.name} exited ({code})") from exc
            if kind == "error":
                raise BenchError(f"{self.name} failed: {value}")
            if kind == want:
                return value


class Fleet:
    """Starts workers, steps them through the protocol, and cleans up."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.workers: list[Worker] = []

    def start(self, name: str, run: WorkerFn, plan: Any) -> Worker:
        """Spawn a worker process running ``run(plan, link)``."""
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, args=(run, plan, child_end), name=name, daemon=True
        )
        process.start()
        child_end.close()
        worker = Worker(name, process, parent_end)
        self.workers.append(worker)
        return worker

    def wait_ready(self, workers: list[Worker], timeout: float = 60.0) -> list[Result]:
        """Wait until every given worker reported ready; return what each said."""
        return [dict(worker.receive("ready", timeout)) for worker in workers]

    def result(self, worker: Worker, timeout: float) -> Result:
        """Wait for a worker's result."""
        if worker.result is None:
            worker.result = dict(worker.receive("result", timeout))
        return worker.result

    def close(self) -> None:
        """Stop and join every worker; terminate any that overstay."""
        for worker in self.workers:
            if worker.process.is_alive():
                worker.send("stop")
        for worker in self.workers:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)
            worker.pipe.close()
        self.workers.clear()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
