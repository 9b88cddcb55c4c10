"""Mermaid `xychart-beta` charts, which GitHub draws from a ```mermaid code block.

Mermaid's xychart grammar (packages/mermaid/src/diagrams/xychart/parser/xychart.jison) sets what
must be quoted and how:
- a text (title, axis title, category, series name) is one word, or "anything but a double
  quote": a string has no escape, so a `"` inside a label becomes `'`; "" (empty) is no string
  at all, so an empty label becomes "(none)"; a string opening with a backtick ("`...`") is read
  as Markdown, so backticks become `'` too (they would also end the Markdown code fence); `"%%`
  starts a comment (the lexer's `[^}]%%` rule comes before the string's), so `%%` becomes `% %`;
- a data value matches [+-]?(\\d+(\\.\\d+)?|\\.\\d+): no exponent, no NaN or infinity, so numbers
  are written in fixed notation and a missing value must be filled in by the caller;
- several `bar` lines are drawn on top of each other, not side by side, and no legend is drawn:
  the charts here use at most one bar and one line series and say in text which is which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


def label(text: object) -> str:
    """A quoted text for any position of the chart."""
    s = " ".join(str(text).replace('"', "'").replace("`", "'").split())
    while "%%" in s:
        s = s.replace("%%", "% %")
    return f'"{s or "(none)"}"'


def number(x: float, digits: int = 4) -> str:
    """A data value in the grammar's fixed notation, rounded to `digits` decimals."""
    if x is None or not math.isfinite(x):
        raise ValueError(f"a chart value must be a finite number, got {x!r}")
    s = f"{round(float(x), digits):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


@dataclass(frozen=True)
class Series:
    kind: Literal["bar", "line"]
    name: str
    values: Sequence[float]


def xychart(
    title: str,
    categories: Sequence[object],
    series: Sequence[Series],
    x_title: str = "",
    y_title: str = "",
    y_range: tuple[float, float] | None = None,
) -> str:
    """A fenced ```mermaid block: one x category per value of each series."""
    if not categories:
        raise ValueError("a chart needs at least one category")
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(categories)} categories")
    x_axis = f"[{', '.join(label(c) for c in categories)}]"
    y_axis = " ".join(
        filter(None, [label(y_title) if y_title else "", f"{number(y_range[0])} --> {number(y_range[1])}" if y_range else ""])
    )
    lines = ["```mermaid", "xychart-beta", f"    title {label(title)}", f"    x-axis {label(x_title) + ' ' if x_title else ''}{x_axis}"]
    if y_axis:
        lines.append(f"    y-axis {y_axis}")
    lines += [f"    {s.kind} {label(s.name)} [{', '.join(number(v) for v in s.values)}]" for s in series]
    return "\n".join([*lines, "```"])
