"""Result records: one JSON line per scenario, and the --compare math.

A line holds the scenario's name, the broker URL (no password), the
settings, every figure as min/median/max over the repeats (with its unit and
whether higher or lower is better), each repeat's figures, counts and load
average, and whether all counts added up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from amqpd.bench.stats import spread

# figure name -> (unit, which direction is better)
FIGURES: dict[str, tuple[str, str]] = {
    "publish_rate": ("msg/s", "higher"),
    "consume_rate": ("msg/s", "higher"),
    "deliver_rate": ("msg/s", "higher"),
    "fill_rate": ("msg/s", "higher"),
    "drain_rate": ("msg/s", "higher"),
    "e2e_p50_ms": ("ms", "lower"),
    "e2e_p99_ms": ("ms", "lower"),
    "e2e_p999_ms": ("ms", "lower"),
    "confirm_p50_ms": ("ms", "lower"),
    "confirm_p99_ms": ("ms", "lower"),
    "confirm_p999_ms": ("ms", "lower"),
    "churn_rate": ("conn/s", "higher"),
    "cycle_p50_ms": ("ms", "lower"),
    "cycle_p99_ms": ("ms", "lower"),
    "declare_rate": ("queue/s", "higher"),
    "delete_rate": ("queue/s", "higher"),
    "rss_per_message": ("B", "lower"),
    "rss_per_queue": ("B", "lower"),
    "broker_cpu_pct": ("%", "lower"),
    "broker_rss_mib": ("MiB", "lower"),
    "publisher_cpu_pct": ("%", "lower"),
    "consumer_cpu_pct": ("%", "lower"),
}


def figure_unit(name: str) -> str:
    """Unit of a figure ("" for one the registry does not know)."""
    return FIGURES.get(name, ("", "higher"))[0]


@dataclass
class RunRecord:
    """One repeat of one scenario."""

    figures: dict[str, float]
    counts: dict[str, int]
    counts_ok: bool
    load_average: list[float]
    error: str | None = None


@dataclass
class ScenarioResult:
    """All repeats of one scenario, and their summary."""

    scenario: str
    broker: str
    settings: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    started: str = ""

    @property
    def counts_ok(self) -> bool:
        """True when every repeat ran and its counts added up."""
        return bool(self.runs) and all(
            run.counts_ok and run.error is None for run in self.runs
        )

    def summary(self) -> dict[str, dict[str, Any]]:
        """Each figure as min/median/max over the repeats that measured it."""
        names: dict[str, None] = {}
        for run in self.runs:
            names.update(dict.fromkeys(run.figures))
        out: dict[str, dict[str, Any]] = {}
        for name in names:
            values = [run.figures[name] for run in self.runs if name in run.figures]
            unit, better = FIGURES.get(name, ("", "higher"))
            out[name] = {**spread(values), "unit": unit, "better": better}
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON-lines record of this scenario."""
        return {
            "scenario": self.scenario,
            "broker": self.broker,
            "started": self.started,
            "settings": self.settings,
            "repeats": len(self.runs),
            "counts_ok": self.counts_ok,
            "figures": self.summary(),
            "runs": [asdict(run) for run in self.runs],
            "machine": self.machine,
        }


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON record as a line; the file is readable after each."""
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")


def read_lines(path: Path) -> dict[str, dict[str, Any]]:
    """Read a results file; a scenario recorded twice keeps its last line."""
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
        records[str(record["scenario"])] = record
    return records


@dataclass(frozen=True)
class Comparison:
    """One figure of one scenario in two result files."""

    scenario: str
    figure: str
    unit: str
    better: str
    median_a: float
    median_b: float

    @property
    def ratio(self) -> float | None:
        """median B / median A; None when A's median is zero."""
        return self.median_b / self.median_a if self.median_a else None


def compare(
    a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]
) -> list[Comparison]:
    """Pair the medians of every figure both files have, scenario by scenario."""
    rows: list[Comparison] = []
    for scenario, record_a in a.items():
        record_b = b.get(scenario)
        if record_b is None:
            continue
        figures_b = record_b.get("figures", {})
        for name, fig_a in record_a.get("figures", {}).items():
            fig_b = figures_b.get(name)
            if fig_b is None:
                continue
            rows.append(
                Comparison(
                    scenario,
                    name,
                    str(fig_a.get("unit", "")),
                    str(fig_a.get("better", "higher")),
                    float(fig_a["median"]),
                    float(fig_b["median"]),
                )
            )
    return rows


def format_comparison(
    rows: Sequence[Comparison], name_a: str, name_b: str
) -> list[str]:
    """A text table of the comparison, one row per figure."""
    head = ("scenario", "figure", name_a, name_b, "B/A", "better")
    body = [
        (
            row.scenario,
            f"{row.figure} [{row.unit}]" if row.unit else row.figure,
            format_number(row.median_a),
            format_number(row.median_b),
            "-" if row.ratio is None else f"{row.ratio:.2f}",
            row.better,
        )
        for row in rows
    ]
    return format_table(head, body)


def format_number(value: float) -> str:
    """Short human form: thousands separated, three significant decimals."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned text columns, a rule under the header."""
    rows = [list(head), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return [line.rstrip() for line in lines]
