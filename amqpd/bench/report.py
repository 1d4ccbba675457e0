"""The human-readable side of the results: one table per scenario."""

from __future__ import annotations

from amqpd.bench.results import ScenarioResult, format_number, format_table


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
    for number, run in enumerate(result.runs, 1):
        counts = " ".join(f"{key}={value}" for key, value in run.counts.items())
        load = "/".join(f"{value:.2f}" for value in run.load_average)
        status = "ok" if run.counts_ok else "MISMATCH"
        if run.error:
            status = f"ERROR {run.error}"
        lines.append(f"  repeat {number}: {counts} load={load} {status}".rstrip())
    return lines
