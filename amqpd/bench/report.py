"""The human-readable side of the results: one table per scenario.

With one target the table gives min, median and max of each figure. With
several, it puts the targets' medians side by side (each with how far its
repeats strayed, as +- percent of the median) and the ratio of the first
target's median to each other's, with the direction that is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from amqpd.bench.results import (
    ScenarioResult,
    better_text,
    format_number,
    format_ratio,
    format_spread,
    format_table,
    in_figure_order,
    ratio_of,
)


def scenario_lines(result: ScenarioResult) -> list[str]:
    """Figures (min, median, max over repeats), counts and their verdict."""
    verdict = "counts add up" if result.counts_ok else "COUNTS DO NOT ADD UP"
    lines = [f"== {result.scenario}  ({len(result.runs)} repeats, {verdict})"]
    rows = [
        (
            name,
            format_number(fig["min"]),
            format_number(fig["median"]),
            format_number(fig["max"]),
            fig["unit"],
        )
        for name, fig in result.summary().items()
    ]
    if rows:
        lines += format_table(("figure", "min", "median", "max", "unit"), rows)
    lines += repeat_lines(result)
    return lines


def repeat_lines(result: ScenarioResult, prefix: str = "") -> list[str]:
    """One line per repeat: its counts, the load average after it, a verdict."""
    lines = []
    for number, run in enumerate(result.runs, 1):
        counts = " ".join(f"{key}={value}" for key, value in run.counts.items())
        load = "/".join(f"{value:.2f}" for value in run.load_average)
        status = "ok" if run.counts_ok else "MISMATCH"
        if run.error:
            status = f"ERROR {run.error}"
        line = f"  {prefix}repeat {number}: {counts} load={load} {status}"
        lines.append(line.rstrip())
    return lines


def side_by_side_lines(results: Sequence[ScenarioResult]) -> list[str]:
    """One scenario on several targets: medians, ratios to the first, counts."""
    first = results[0]
    verdict = (
        "counts add up"
        if all(result.counts_ok for result in results)
        else "COUNTS DO NOT ADD UP"
    )
    repeats = max(len(result.runs) for result in results)
    lines = [f"== {first.scenario}  ({repeats} repeats per target, {verdict})"]
    summaries = [result.summary() for result in results]
    labels = [result.target for result in results]
    head = [
        "figure",
        "unit",
        *labels,
        *(f"{labels[0]}/{label}" for label in labels[1:]),
        "better",
    ]
    names = in_figure_order(name for summary in summaries for name in summary)
    rows = [_figure_row(name, summaries) for name in names]
    if rows:
        lines += format_table(head, rows)
    for result in results:
        lines += repeat_lines(result, prefix=f"{result.target} ")
    return lines


def _figure_row(name: str, summaries: list[dict[str, dict[str, Any]]]) -> list[str]:
    figures = [summary.get(name) for summary in summaries]
    known = next(fig for fig in figures if fig is not None)
    cells = [format_spread(_spread(fig)) if fig else "-" for fig in figures]
    first = figures[0]
    ratios = [
        format_ratio(ratio_of(_spread(first), _spread(other)))
        if first and other
        else "-"
        for other in figures[1:]
    ]
    return [
        name,
        str(known["unit"]),
        *cells,
        *ratios,
        better_text(str(known["better"])),
    ]


def _spread(figure: dict[str, Any]) -> dict[str, float]:
    return {key: float(figure[key]) for key in ("min", "median", "max")}
