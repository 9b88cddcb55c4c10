"""Markdown pieces shared by the cards: tables and scores with their 95 % intervals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def number(x: Any, digits: int = 3, signed: bool = False) -> str:
    if not isinstance(x, int | float) or isinstance(x, bool):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def is_interval(obj: Any) -> bool:
    """{"value", "n", "ci95_lo", "ci95_hi"}: a score as metrics/summary.json stores it."""
    return isinstance(obj, dict) and "value" in obj and "ci95_lo" in obj and "ci95_hi" in obj


def interval(obj: Any, signed: bool = False) -> str:
    """`0.550 [0.342, 0.742]`: the value and its 95 % interval; n/a when there is no value."""
    if not is_interval(obj) or obj["value"] is None:
        return "n/a"
    text = number(obj["value"], signed=signed)
    if obj["ci95_lo"] is not None and obj["ci95_hi"] is not None:
        text += f" [{number(obj['ci95_lo'], signed=signed)}, {number(obj['ci95_hi'], signed=signed)}]"
    return text


def count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else "n/a"
