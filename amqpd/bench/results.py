"""Result records: one JSON line per scenario and target, and the ratio math.

A line holds the scenario's name, the target's label and broker URL (no
password), the settings, every figure as min/median/max over the repeats
(with its unit and whether higher or lower is better), each repeat's
figures, counts, load average and place in the session's order, and whether
all counts added up.
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


_RANK = {name: rank for rank, name in enumerate(FIGURES)}


def in_figure_order(names: Iterable[str]) -> list[str]:
    """Figure names in the registry's order (rates first), unknown ones last."""
    return sorted(dict.fromkeys(names), key=lambda name: _RANK.get(name, len(_RANK)))


@dataclass
class RunRecord:
    """One repeat of one scenario."""

    figures: dict[str, float]
    counts: dict[str, int]
    counts_ok: bool
    load_average: list[float]
    error: str | None = None
    # the run's place among all runs of the session (0, 1, 2, ...): with
    # several targets it shows how their repeats alternated
    position: int | None = None


@dataclass
class ScenarioResult:
    """All repeats of one scenario, and their summary."""

    scenario: str
    broker: str
    settings: dict[str, Any]
    target: str = ""
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
            "target": self.target,
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


def read_targets(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Read a results file: target label -> scenario -> record.

    A scenario recorded twice for one target keeps its last line; lines
    written before targets had labels count as target "".
    """
    targets: dict[str, dict[str, dict[str, Any]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
        by_scenario = targets.setdefault(str(record.get("target", "")), {})
        by_scenario[str(record["scenario"])] = record
    return targets


def read_lines(path: Path, target: str | None = None) -> dict[str, dict[str, Any]]:
    """The records of one target of a results file, by scenario.

    ``target`` may be left out when the file holds a single target.
    """
    targets = read_targets(path)
    if target is None:
        if len(targets) > 1:
            labels = ", ".join(sorted(targets))
            raise ValueError(f"{path} holds targets {labels}: name one as FILE@LABEL")
        return next(iter(targets.values()), {})
    if target not in targets:
        labels = ", ".join(sorted(targets)) or "none"
        raise ValueError(f"{path} has no target {target!r} (it has: {labels})")
    return targets[target]


def read_spec(spec: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """Read ``FILE`` or ``FILE@LABEL``; return a column name and the records."""
    path = Path(spec)
    target: str | None = None
    if not path.exists() and "@" in spec:
        name, target = spec.rsplit("@", 1)
        path = Path(name)
    records = read_lines(path, target)
    return (target or path.name), records


@dataclass(frozen=True)
class Comparison:
    """One figure of one scenario on two targets (or in two result files)."""

    scenario: str
    figure: str
    unit: str
    better: str
    a: dict[str, float]  # min, median, max
    b: dict[str, float]

    @property
    def median_a(self) -> float:
        """A's median over its repeats."""
        return float(self.a["median"])

    @property
    def median_b(self) -> float:
        """B's median over its repeats."""
        return float(self.b["median"])

    @property
    def ratio(self) -> float | None:
        """median A / median B; None when B's median is zero."""
        return ratio_of(self.a, self.b)


def ratio_of(a: dict[str, float], b: dict[str, float]) -> float | None:
    """Ratio of two figures' medians, A over B; None when B's median is 0."""
    return a["median"] / b["median"] if b["median"] else None


def compare(
    a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]
) -> list[Comparison]:
    """Pair the figures both sides have, scenario by scenario, in A's order."""
    rows: list[Comparison] = []
    for scenario, record_a in a.items():
        record_b = b.get(scenario)
        if record_b is None:
            continue
        figures_a = record_a.get("figures", {})
        figures_b = record_b.get("figures", {})
        for name in in_figure_order(figures_a):
            fig_a, fig_b = figures_a[name], figures_b.get(name)
            if fig_b is None:
                continue
            rows.append(
                Comparison(
                    scenario,
                    name,
                    str(fig_a.get("unit", "")),
                    str(fig_a.get("better", "higher")),
                    _spread_of(fig_a),
                    _spread_of(fig_b),
                )
            )
    return rows


def _spread_of(figure: dict[str, Any]) -> dict[str, float]:
    return {key: float(figure[key]) for key in ("min", "median", "max")}


def variation(figure: dict[str, float]) -> float | None:
    """Half the min-max range as a fraction of the median (the +- of a cell)."""
    median = figure["median"]
    if not median:
        return None
    return (figure["max"] - figure["min"]) / 2 / abs(median)


def format_spread(figure: dict[str, float]) -> str:
    """A median and how far the repeats strayed from it: "1,234 +-5%"."""
    text = format_number(figure["median"])
    spread = variation(figure)
    if spread is None or figure["max"] == figure["min"]:
        return text
    return f"{text} ±{100 * spread:.0f}%"


def format_ratio(ratio: float | None) -> str:
    """A ratio of medians, two decimals; "-" when it cannot be formed."""
    return "-" if ratio is None else f"{ratio:.2f}"


def better_text(better: str) -> str:
    """The direction column: "higher is better" or "lower is better"."""
    return f"{better} is better"


def format_comparison(
    rows: Sequence[Comparison], name_a: str, name_b: str
) -> list[str]:
    """A text table of the comparison, one row per figure."""
    head = ("scenario", "figure", name_a, name_b, f"{name_a}/{name_b}", "better")
    body = [
        (
            row.scenario,
            f"{row.figure} [{row.unit}]" if row.unit else row.figure,
            format_spread(row.a),
            format_spread(row.b),
            format_ratio(row.ratio),
            better_text(row.better),
        )
        for row in rows
    ]
    return format_table(head, body)


EN_DASH = "\N{EN DASH}"


def format_markdown(rows: Sequence[Comparison], name_a: str, name_b: str) -> list[str]:
    """The comparison as a Markdown table: each median with (min - max) after.

    One repeat, or repeats that all agree, show the median alone.
    """

    def cell(figure: dict[str, float]) -> str:
        median = format_number(figure["median"])
        if figure["min"] == figure["max"]:
            return median
        low, high = format_number(figure["min"]), format_number(figure["max"])
        return f"{median} ({low} {EN_DASH} {high})"

    ratio = f"{name_a}/{name_b}"
    head = ["scenario", "figure", "unit", name_a, name_b, ratio, "better"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [
            row.scenario,
            row.figure,
            row.unit,
            cell(row.a),
            cell(row.b),
            format_ratio(row.ratio),
            row.better,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
