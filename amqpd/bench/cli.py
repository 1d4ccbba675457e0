"""``amqpd bench``: run the load scenarios against brokers, or compare runs.

    amqpd bench --url amqp://guest:guest@127.0.0.1:5672/ [--broker-pid PID]
                [--scenarios a,b] [--quick] [--duration S] [--size N]
                [--prefetch N] [--confirm-window N] [--rate N] [--repeat 3]
                [--warmup S] [--json out.jsonl]
    amqpd bench --target amqpd=URL --target-pid amqpd=PID
                --target rabbitmq=URL --target-pid rabbitmq=PID
                [--restart-command CMD] [other options as above]
    amqpd bench --compare A.jsonl[@LABEL] B.jsonl[@LABEL] [--markdown]

With several targets each repeat of each scenario runs on every target in
turn (see ``session``).

Exit status: 0 when every scenario ran and its counts added up, 1 when the
broker cannot be reached or a scenario failed or lost or doubled a message,
2 for a usage error.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from amqpd.bench.catalog import SCENARIOS
from amqpd.bench.client import BenchConnection, BenchError, BrokerUrl
from amqpd.bench.report import scenario_lines, side_by_side_lines
from amqpd.bench.results import (
    append_line,
    compare,
    format_comparison,
    format_markdown,
    read_spec,
)
from amqpd.bench.runner import Options, Progress
from amqpd.bench.session import Session, Target

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
LABEL = re.compile(r"[A-Za-z0-9_.-]+")

# --quick: one repeat of everything, small counts, about a minute in all
QUICK = {
    "duration": 1.0,
    "repeat": 1,
    "backlog": 100_000,
    "connections": 100,
    "queues": 1_000,
    "warmup": 0.5,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``amqpd bench``."""
    parser = argparse.ArgumentParser(
        prog="amqpd bench",
        description="Load generator for AMQP 0-9-1 brokers (amqpd, RabbitMQ).",
    )
    add = parser.add_argument
    add("--url", help=f"the one broker's URL (default: {DEFAULT_URL})")
    add("--broker-pid", type=int, help="the one broker's PID, for CPU and RSS")
    add(
        "--target",
        action="append",
        default=[],
        metavar="LABEL=URL",
        help="a broker to run on (repeat it: repeats alternate between targets)",
    )
    add(
        "--target-pid",
        action="append",
        default=[],
        metavar="LABEL=PID",
        help="the PID of a target's broker process, for CPU and RSS",
    )
    add(
        "--restart-command",
        metavar="CMD",
        help="run as CMD LABEL before each repeat of a scenario that weighs "
        "memory; it restarts that target's broker and prints the new PID last",
    )
    add("--scenarios", help="comma-separated names (default: all); see --list")
    add("--list", action="store_true", help="list the scenarios and exit")
    add("--quick", action="store_true", help="one short pass of everything")
    add("--duration", type=float, help="seconds per timed scenario (default 5)")
    add("--size", type=int, help="body bytes where the scenario does not fix it")
    add("--prefetch", type=int, default=1000, help="consumer prefetch count")
    add("--confirm-window", type=int, default=1000, help="unconfirmed messages")
    add("--rate", type=float, help="msg/s: latency's fixed rate, elsewhere a cap")
    add("--repeat", type=int, help="repeats per scenario (default 3, quick 1)")
    add("--warmup", type=float, help="seconds of unrecorded flow first (default 1)")
    add("--json", type=Path, help="write one JSON line per scenario and target")
    add("--backlog", type=int, help="messages in the backlog scenario")
    add("--connections", type=int, help="cycles in the conn-churn scenario")
    add("--queues", type=int, help="queues in the many-queues scenario")
    add(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="print the medians of two --json files (FILE or FILE@LABEL) "
        "and their ratios A/B, then exit",
    )
    add("--markdown", action="store_true", help="--compare prints Markdown")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    """Turn parsed arguments into run options, --quick first, flags over it."""
    base = dict(QUICK) if args.quick else {}
    for name in ("duration", "repeat", "backlog", "connections", "queues", "warmup"):
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    return Options(
        url=args.url or DEFAULT_URL,
        size=args.size,
        prefetch=args.prefetch,
        confirm_window=args.confirm_window,
        rate=args.rate,
        broker_pid=args.broker_pid,
        **base,  # type: ignore[arg-type]
    )


def targets_from(args: argparse.Namespace) -> list[Target]:
    """The brokers to run on: every --target, or the one of --url."""
    if not args.target:
        return [Target("broker", args.url or DEFAULT_URL, args.broker_pid)]
    if args.url or args.broker_pid is not None:
        raise BenchError("use --target and --target-pid, or --url and --broker-pid")
    targets: dict[str, Target] = {}
    for spec in args.target:
        label, url = _pair(spec, "--target", "LABEL=URL")
        if label in targets:
            raise BenchError(f"--target {label} given twice")
        targets[label] = Target(label, url)
    for spec in args.target_pid:
        label, pid = _pair(spec, "--target-pid", "LABEL=PID")
        if label not in targets:
            raise BenchError(f"--target-pid names {label!r}, which is no --target")
        if not pid.isdigit():
            raise BenchError(f"--target-pid {spec}: the PID must be a number")
        targets[label].pid = int(pid)
    return list(targets.values())


def _pair(spec: str, flag: str, form: str) -> tuple[str, str]:
    label, sep, value = spec.partition("=")
    if not sep or not value or not LABEL.fullmatch(label):
        raise BenchError(f"{flag} {spec!r}: expected {form}, LABEL of [A-Za-z0-9_.-]")
    return label, value


def pick_scenarios(spec: str | None) -> list[str]:
    """Scenario names from --scenarios, checked; all of them by default."""
    if not spec:
        return list(SCENARIOS)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise BenchError(f"unknown scenario(s): {', '.join(unknown)}")
    return names


def check(options: Options, targets: list[Target]) -> None:
    """Refuse settings the scenarios cannot run with."""
    if options.size is not None and options.size < 16:
        raise BenchError("--size must be at least 16: bodies carry a 16-byte stamp")
    for name in ("prefetch", "confirm_window", "repeat", "backlog"):
        if getattr(options, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
    if options.duration <= 0:
        raise BenchError("--duration must be positive")
    if options.warmup < 0:
        raise BenchError("--warmup must not be negative")
    for target in targets:
        if target.pid is not None and not Path(f"/proc/{target.pid}").exists():
            raise BenchError(f"no process {target.pid} to read from /proc")
        BrokerUrl.parse(target.url)


def run_compare(spec_a: str, spec_b: str, *, markdown: bool = False) -> int:
    """Print both medians and A/B for every figure the two sides share."""
    name_a, records_a = read_spec(spec_a)
    name_b, records_b = read_spec(spec_b)
    if name_a == name_b:
        name_a, name_b = f"A={name_a}", f"B={name_b}"
    rows = compare(records_a, records_b)
    if not rows:
        print("the two sides share no scenario figures", file=sys.stderr)
        return 1
    table = format_markdown if markdown else format_comparison
    for line in table(rows, name_a, name_b):
        print(line)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``amqpd bench``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.compare:
            return run_compare(*args.compare, markdown=args.markdown)
        if args.list:
            for scenario in SCENARIOS.values():
                print(f"{scenario.name:20} {scenario.describe}")
            return 0
        options = options_from(args)
        targets = targets_from(args)
        check(options, targets)
        names = pick_scenarios(args.scenarios)
        restart = shlex.split(args.restart_command) if args.restart_command else None
    except (BenchError, ValueError, OSError) as exc:
        print(f"amqpd bench: {exc}", file=sys.stderr)
        return 2
    if any(SCENARIOS[name].needs_broker for name in names):
        try:
            for target in targets:
                BenchConnection.open(BrokerUrl.parse(target.url), timeout=10).close()
        except BenchError as exc:
            print(f"amqpd bench: {exc}", file=sys.stderr)
            return 1
    say = Progress(say=lambda text: print(text, file=sys.stderr, flush=True))
    session = Session(targets, options, restart_command=restart, progress=say)
    try:
        return run_all(session, names, args.json)
    except KeyboardInterrupt:
        # the run in progress has deleted what it declared on the way out
        print("amqpd bench: interrupted", file=sys.stderr)
        return 130


def run_all(session: Session, names: list[str], json_path: Path | None) -> int:
    """Run the scenarios in order, printing and recording each as it ends."""
    if json_path is not None:
        json_path.write_text("", encoding="utf-8")
    status = 0
    for name in names:
        results = session.run(SCENARIOS[name])
        if len(results) == 1:
            lines = scenario_lines(results[0])
        else:
            lines = side_by_side_lines(results)
        print("\n".join(lines), flush=True)
        for result in results:
            if json_path is not None:
                append_line(json_path, result.to_json())
            if not result.counts_ok:
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
