"""``amqpd bench``: run the load scenarios against a broker, or compare runs.

    amqpd bench --url amqp://guest:guest@127.0.0.1:5672/ [--scenarios a,b]
                [--quick] [--duration S] [--size N] [--prefetch N]
                [--confirm-window N] [--rate N] [--repeat 3]
                [--broker-pid PID] [--json out.jsonl]
    amqpd bench --compare A.jsonl B.jsonl

Exit status: 0 when every scenario ran and its counts added up, 1 when the
broker cannot be reached or a scenario failed or lost or doubled a message,
2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amqpd.bench.catalog import SCENARIOS
from amqpd.bench.client import BenchConnection, BenchError, BrokerUrl
from amqpd.bench.report import scenario_lines
from amqpd.bench.results import append_line, compare, format_comparison, read_lines
from amqpd.bench.runner import Options, Progress, run_scenario

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"

# --quick: one repeat of everything, small counts, about a minute in all
QUICK = {
    "duration": 1.0,
    "repeat": 1,
    "backlog": 100_000,
    "connections": 100,
    "queues": 1_000,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``amqpd bench``."""
    parser = argparse.ArgumentParser(
        prog="amqpd bench",
        description="Load generator for AMQP 0-9-1 brokers (amqpd, RabbitMQ).",
    )
    add = parser.add_argument
    add("--url", default=DEFAULT_URL, help="broker URL (default: %(default)s)")
    add("--scenarios", help="comma-separated names (default: all); see --list")
    add("--list", action="store_true", help="list the scenarios and exit")
    add("--quick", action="store_true", help="one short pass of everything")
    add("--duration", type=float, help="seconds per timed scenario (default 5)")
    add("--size", type=int, help="body bytes where the scenario does not fix it")
    add("--prefetch", type=int, default=1000, help="consumer prefetch count")
    add("--confirm-window", type=int, default=1000, help="unconfirmed messages")
    add("--rate", type=float, help="msg/s: latency's fixed rate, elsewhere a cap")
    add("--repeat", type=int, help="repeats per scenario (default 3, quick 1)")
    add("--broker-pid", type=int, help="broker process to read CPU and RSS of")
    add("--json", type=Path, help="write one JSON line per scenario here")
    add("--backlog", type=int, help="messages in the backlog scenario")
    add("--connections", type=int, help="cycles in the conn-churn scenario")
    add("--queues", type=int, help="queues in the many-queues scenario")
    add(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("A", "B"),
        help="print the ratios of medians of two --json files and exit",
    )
    return parser


def options_from(args: argparse.Namespace) -> Options:
    """Turn parsed arguments into run options, --quick first, flags over it."""
    base = dict(QUICK) if args.quick else {}
    for name in ("duration", "repeat", "backlog", "connections", "queues"):
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    return Options(
        url=args.url,
        size=args.size,
        prefetch=args.prefetch,
        confirm_window=args.confirm_window,
        rate=args.rate,
        broker_pid=args.broker_pid,
        **base,  # type: ignore[arg-type]
    )


def pick_scenarios(spec: str | None) -> list[str]:
    """Scenario names from --scenarios, checked; all of them by default."""
    if not spec:
        return list(SCENARIOS)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise BenchError(f"unknown scenario(s): {', '.join(unknown)}")
    return names


def check(options: Options) -> None:
    """Refuse settings the scenarios cannot run with."""
    if options.size is not None and options.size < 16:
        raise BenchError("--size must be at least 16: bodies carry a 16-byte stamp")
    for name in ("prefetch", "confirm_window", "repeat", "backlog"):
        if getattr(options, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if options.duration <= 0:
        raise BenchError("--duration must be positive")
    if (
        options.broker_pid is not None
        and not Path(f"/proc/{options.broker_pid}").exists()
    ):
        raise BenchError(f"no process {options.broker_pid} to read from /proc")
    BrokerUrl.parse(options.url)


def run_compare(path_a: Path, path_b: Path) -> int:
    """Print B/A for the median of every figure both files hold."""
    rows = compare(read_lines(path_a), read_lines(path_b))
    if not rows:
        print("the two files share no scenario figures", file=sys.stderr)
        return 1
    for line in format_comparison(rows, f"A={path_a.name}", f"B={path_b.name}"):
        print(line)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``amqpd bench``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.compare:
            return run_compare(*args.compare)
        if args.list:
            for scenario in SCENARIOS.values():
                print(f"{scenario.name:20} {scenario.describe}")
            return 0
        options = options_from(args)
        check(options)
        names = pick_scenarios(args.scenarios)
    except (BenchError, ValueError, OSError) as exc:
        print(f"amqpd bench: {exc}", file=sys.stderr)
        return 2
    if any(SCENARIOS[name].needs_broker for name in names):
        try:
            BenchConnection.open(BrokerUrl.parse(options.url), timeout=10).close()
        except BenchError as exc:
            print(f"amqpd bench: {exc}", file=sys.stderr)
            return 1
    return run_all(options, names, args.json)


def run_all(options: Options, names: list[str], json_path: Path | None) -> int:
    """Run the scenarios in order, printing and recording each as it ends."""
    if json_path is not None:
        json_path.write_text("", encoding="utf-8")
    progress = Progress(say=lambda text: print(text, file=sys.stderr, flush=True))
    status = 0
    for name in names:
        result = run_scenario(SCENARIOS[name], options, progress)
        print("\n".join(scenario_lines(result)), flush=True)
        if json_path is not None:
            append_line(json_path, result.to_json())
        if not result.counts_ok:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
