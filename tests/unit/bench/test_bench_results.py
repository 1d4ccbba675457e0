"""Result lines written and read back, --compare math, command-line checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amqpd.bench import cli
from amqpd.bench.client import BenchError, BrokerUrl
from amqpd.bench.results import (
    RunRecord,
    ScenarioResult,
    append_line,
    compare,
    format_number,
    read_lines,
)


def result(scenario: str, rates: list[float], ok: bool = True) -> ScenarioResult:
    record = ScenarioResult(scenario, "amqp://guest@127.0.0.1:5672/", {"size": 16})
    for value in rates:
        figures = {"publish_rate": value, "e2e_p99_ms": value / 1000}
        record.runs.append(RunRecord(figures, {"published": 10}, ok, [0.1, 0.2, 0.3]))
    return record


def test_summary_has_min_median_max_unit_and_direction() -> None:
    summary = result("pubsub-16B", [300.0, 100.0, 200.0]).summary()
    assert summary["publish_rate"] == {
        "min": 100.0,
        "median": 200.0,
        "max": 300.0,
        "unit": "msg/s",
        "better": "higher",
    }
    assert summary["e2e_p99_ms"]["better"] == "lower"


def test_counts_ok_needs_every_repeat_clean() -> None:
    assert result("a", [1.0, 2.0]).counts_ok
    assert not result("a", [1.0], ok=False).counts_ok
    assert not ScenarioResult("a", "url", {}).counts_ok
    failed = result("a", [1.0])
    failed.runs.append(RunRecord({}, {}, True, [0, 0, 0], error="boom"))
    assert not failed.counts_ok


def test_lines_round_trip_and_last_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    append_line(path, result("pubsub-16B", [1.0]).to_json())
    append_line(path, result("latency", [5.0]).to_json())
    append_line(path, result("pubsub-16B", [2.0, 4.0]).to_json())
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    record = json.loads(lines[0])
    assert record["runs"][0]["load_average"] == [0.1, 0.2, 0.3]
    read = read_lines(path)
    assert list(read) == ["pubsub-16B", "latency"]
    assert read["pubsub-16B"]["figures"]["publish_rate"]["median"] == 3.0
    assert read["pubsub-16B"]["repeats"] == 2


def test_read_lines_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"scenario": "a"}\n\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        read_lines(path)


def test_compare_divides_medians_of_shared_figures() -> None:
    a = {
        "x": result("x", [100.0, 200.0, 300.0]).to_json(),
        "only-a": result("only-a", [1.0]).to_json(),
    }
    b = {"x": result("x", [400.0, 500.0, 600.0]).to_json()}
    rows = compare(a, b)
    by_figure = {row.figure: row for row in rows}
    assert set(by_figure) == {"publish_rate", "e2e_p99_ms"}
    assert by_figure["publish_rate"].ratio == 0.4
    assert by_figure["publish_rate"].a == {"min": 100.0, "median": 200.0, "max": 300.0}
    assert by_figure["e2e_p99_ms"].ratio == pytest.approx(0.4)
    zero = compare(b, {"x": result("x", [0.0]).to_json()})
    assert zero[0].ratio is None


def test_compare_command_prints_ratios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "rabbitmq.jsonl", tmp_path / "amqpd.jsonl"
    append_line(a, result("pubsub-16B", [100.0]).to_json())
    append_line(b, result("pubsub-16B", [50.0]).to_json())
    assert cli.main(["--compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    head = out.splitlines()[0].split()
    assert head[2:5] == ["rabbitmq.jsonl", "amqpd.jsonl", "rabbitmq.jsonl/amqpd.jsonl"]
    row = next(line for line in out.splitlines() if "publish_rate" in line)
    assert row.split()[-4:] == ["2.00", "higher", "is", "better"]


def test_compare_picks_targets_of_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.jsonl"
    for target, rates in (("amqpd", [30.0, 10.0, 20.0]), ("rabbitmq", [40.0])):
        record = result("pubsub-16B", rates)
        record.target = target
        append_line(path, record.to_json())
    assert cli.main(["--compare", f"{path}@amqpd", f"{path}@rabbitmq"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "publish" in ln)
    assert row.split()[3:7] == ["20.00", "±50%", "40.00", "0.50"]
    assert cli.main(["--compare", str(path), f"{path}@rabbitmq"]) == 2
    assert "holds targets amqpd, rabbitmq" in capsys.readouterr().err
    assert cli.main(["--compare", f"{path}@nope", f"{path}@amqpd"]) == 2


def test_compare_prints_markdown_with_min_and_max(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "amqpd.jsonl", tmp_path / "rabbitmq.jsonl"
    append_line(a, result("latency", [1000.0, 3000.0, 2000.0]).to_json())
    append_line(b, result("latency", [4000.0]).to_json())
    assert cli.main(["--compare", str(a), str(b), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "| scenario | figure | unit | amqpd.jsonl | rabbitmq.jsonl "
        "| amqpd.jsonl/rabbitmq.jsonl | better |"
    )
    assert lines[1] == "| --- | --- | --- | --- | --- | --- | --- |"
    assert lines[2] == (
        "| latency | publish_rate | msg/s | 2,000 (1,000 \N{EN DASH} 3,000) "
        "| 4,000 | 0.50 | higher |"
    )
    assert lines[3].startswith("| latency | e2e_p99_ms | ms | 2.00 (1.00 ")
    assert lines[3].endswith("| 0.50 | lower |")


def test_compare_command_fails_without_shared_figures(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append_line(a, result("x", [1.0]).to_json())
    append_line(b, result("y", [1.0]).to_json())
    assert cli.main(["--compare", str(a), str(b)]) == 1


def test_quick_sets_small_counts_and_flags_override() -> None:
    args = cli.build_parser().parse_args(["--quick", "--duration", "2"])
    options = cli.options_from(args)
    assert (options.repeat, options.duration, options.backlog) == (1, 2.0, 100_000)
    assert options.warmup == 0.5
    full = cli.options_from(cli.build_parser().parse_args([]))
    assert (full.repeat, full.duration, full.backlog) == (3, 5.0, 1_000_000)
    assert full.warmup == 1.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--size", "8"],
        ["--scenarios", "pubsub-16B,nope"],
        ["--url", "http://127.0.0.1/"],
        ["--repeat", "0"],
        ["--warmup", "-1"],
        ["--broker-pid", "999999999"],
        ["--target", "a=amqp://127.0.0.1:1/", "--target-pid", "a=999999999"],
        ["--target", "a=amqp://127.0.0.1:1/", "--target", "a=amqp://127.0.0.1:2/"],
        ["--target", "a b=amqp://127.0.0.1:1/"],
        ["--target", "amqp://127.0.0.1:1/"],
        ["--target", "a=http://127.0.0.1:1/"],
        ["--target", "a=amqp://127.0.0.1:1/", "--target-pid", "b=1"],
        ["--target", "a=amqp://127.0.0.1:1/", "--target-pid", "a=one"],
        ["--target", "a=amqp://127.0.0.1:1/", "--url", "amqp://127.0.0.1:2/"],
    ],
)
def test_bad_settings_exit_2(argv: list[str]) -> None:
    assert cli.main(argv) == 2


def test_targets_keep_their_order_labels_and_pids() -> None:
    argv = ["--target", "amqpd=amqp://g:g@127.0.0.1:5680/", "--target-pid", "amqpd=7"]
    argv += ["--target", "rabbitmq=amqp://g:g@127.0.0.1:5673/"]
    targets = cli.targets_from(cli.build_parser().parse_args(argv))
    assert [(t.label, t.url, t.pid) for t in targets] == [
        ("amqpd", "amqp://g:g@127.0.0.1:5680/", 7),
        ("rabbitmq", "amqp://g:g@127.0.0.1:5673/", None),
    ]
    [one] = cli.targets_from(cli.build_parser().parse_args(["--broker-pid", "9"]))
    assert (one.label, one.url, one.pid) == ("broker", cli.DEFAULT_URL, 9)


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("client-ceiling", "pubsub-1KiB", "many-queues", "backlog"):
        assert name in out


def test_url_parts_and_redaction() -> None:
    url = BrokerUrl.parse("amqp://bob:s%40cret@localhost:5673/%2Fprod")
    assert (url.user, url.password, url.host, url.port) == (
        "bob",
        "s@cret",
        "localhost",
        5673,
    )
    assert url.vhost == "/prod"
    assert "cret" not in url.redacted()
    assert BrokerUrl.parse("amqp://127.0.0.1").vhost == "/"
    assert BrokerUrl.parse("amqp://g:g@127.0.0.1:5672/").vhost == "/"
    with pytest.raises(BenchError):
        BrokerUrl.parse("amqps://127.0.0.1/")


def test_numbers_read_well() -> None:
    assert format_number(123456.7) == "123,457"
    assert format_number(12.345) == "12.35"
    assert format_number(0.1234) == "0.123"
