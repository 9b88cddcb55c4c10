"""Grouping metric rows (by question type, by number of retrieve calls, ...)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any


def group_rows(rows: Iterable[Mapping[str, Any]], key: str | Callable[[Mapping[str, Any]], Hashable]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows by a field (or a function of the row), groups in first-seen order; keys as strings."""
    get = (lambda r: r.get(key)) if isinstance(key, str) else key
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        out[str(get(r))].append(r)
    return dict(out)
