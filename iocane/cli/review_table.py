"""``iocane review`` as rich tables: the versions, then champion against challenger."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

# Right-aligned, so that digits line up.
NUMERIC = {"version", "clean", "robust", "eps", "flags", "hours", "gain_per_hour", "price"}


def _cell(value: object, digits: int | None = None, sign: str = "") -> str:
    if value is None or value != value:  # missing, or NaN
        return ""
    return f"{value:{sign}.{digits}f}" if digits is not None else str(value)


def print_review(name: str, rows: list[dict], comparison: dict) -> None:
    """The versions and the champion/challenger comparison as rich tables. Piped, the tables
    are drawn wide enough never to wrap a row (a terminal gets its own width)."""
    console = Console(highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, emoji=False, width=240)
    if not rows:
        console.print(f"no versions of {name} in the registry")
        return
    console.print(f"{name}: {len(rows)} version(s)\n")
    digits = {"hours": 3, "gain_per_hour": 3, "price": 2}
    columns = [column for column in rows[0] if column != "alias_reason"]
    # report.price_per_hour, evaluate.threats, evaluate.certify never set
    for optional in ("price", "threats", "certified"):
        if optional in columns and all(_cell(row.get(optional)) == "" for row in rows):
            columns.remove(optional)
    versions = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        versions.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in rows:
        versions.add_row(*(_cell(row[column], digits.get(column)) for column in columns))
    console.print(versions)
    console.print()
    console.print(comparison["summary"])
    if comparison["metrics"]:
        headers = list(comparison["metrics"][0])
        deltas = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for header in headers:
            deltas.add_column(header, justify="left" if header == "metric" else "right")
        for metric in comparison["metrics"]:
            deltas.add_row(
                metric["metric"],
                *(_cell(metric[header], 4) for header in headers[1:-1]),
                _cell(metric["delta"], 4, sign="+"),
            )
        console.print(deltas)
