"""The plot tables a run commits, read as chart series:

- metrics/plots/by_type.csv, by_retrieve_calls.csv: model,GROUP,n,containing_accuracy,ci95_lo,ci95_hi
  (model "base" or "finetuned"; written by compare);
- metrics/plots/recall_at_k.csv: k,SOURCE1,SOURCE2,... (recall@k per source, written by retrieve),
  or long: source,k,recall,all;
- metrics/plots/outcomes.csv: model,eval_set,outcome,count (and more columns, unread);
- dvclive's loss logs, tab-separated step,loss: metrics/train/plots/metrics/{train,eval}/loss.tsv.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

BY_TYPE = "metrics/plots/by_type.csv"
BY_RETRIEVE_CALLS = "metrics/plots/by_retrieve_calls.csv"
OUTCOMES = "metrics/plots/outcomes.csv"
RECALL_AT_K = "metrics/plots/recall_at_k.csv"
TRAIN_LOSS = "metrics/train/plots/metrics/train/loss.tsv"
EVAL_LOSS = "metrics/train/plots/metrics/eval/loss.tsv"
FILES = (BY_TYPE, BY_RETRIEVE_CALLS, OUTCOMES, RECALL_AT_K, TRAIN_LOSS, EVAL_LOSS)
MODELS = ("base", "finetuned")


def rows(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    return [
        {k.strip(): (v or "").strip() for k, v in r.items() if k is not None}
        for r in csv.DictReader(io.StringIO(text), delimiter=delimiter)
    ]


def num(s: str | None) -> float | None:
    """A cell as a finite number; empty, NaN and text are None."""
    try:
        x = float(s)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def natural(values: list[str]) -> list[str]:
    """Numbers in numeric order when every value is one, else first-seen order."""
    if values and all(num(v) is not None for v in values):
        return sorted(values, key=lambda v: num(v))  # type: ignore[arg-type,return-value]
    return values


def distinct(values) -> list[str]:
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Grouped:
    """One score per model and group, e.g. containing accuracy by question type."""

    groups: list[str]
    cells: dict[str, dict[str, dict[str, str]]]  # model -> group -> the CSV row

    def values(self, model: str, column: str) -> list[float | None]:
        return [num(self.cells.get(model, {}).get(g, {}).get(column)) for g in self.groups]


def grouped(table: list[dict[str, str]], group: str) -> Grouped:
    """The rows of a model,GROUP,... table by model and group; groups in natural order."""
    cells: dict[str, dict[str, dict[str, str]]] = {}
    for r in table:
        cells.setdefault(r.get("model", ""), {})[r.get(group, "")] = r
    return Grouped(natural(distinct(r.get(group, "") for r in table)), cells)


@dataclass(frozen=True)
class Loss:
    steps: list[str]
    train: list[float]
    eval: list[float] | None  # None: no eval loss logged
    note: str


def loss(train: list[dict[str, str]], evals: list[dict[str, str]], max_points: int = 60) -> Loss | None:
    """Train and eval loss on one x axis. With an eval loss the points are its steps, and the train
    loss at a point is the mean of the train losses logged since the previous point (after the
    last eval step nothing is drawn). Without one, the train loss in at most `max_points` points,
    each the mean of consecutive steps."""
    tr = [(s, v) for s, v in ((num(r.get("step")), num(r.get("loss"))) for r in train) if s is not None and v is not None]
    ev = [(s, v) for s, v in ((num(r.get("step")), num(r.get("loss"))) for r in evals) if s is not None and v is not None]
    if not tr and not ev:
        return None
    if ev:
        steps, t, e, prev = [], [], [], -math.inf
        for s, v in sorted(ev):
            window = [x for st, x in tr if prev < st <= s]
            if window:
                steps.append(_step(s))
                t.append(sum(window) / len(window))
                e.append(v)
            prev = s
        if steps:
            return Loss(steps, t, e, "train loss: the mean over the steps since the previous eval point")
        if not tr:
            return Loss([_step(s) for s, _ in sorted(ev)], [v for _, v in sorted(ev)], None, "eval loss only (no train loss logged)")
    tr.sort()
    size = max(1, math.ceil(len(tr) / max_points))
    chunks = [tr[i : i + size] for i in range(0, len(tr), size)]
    note = "train loss" + (f", each point the mean of {size} steps" if size > 1 else "") + ("" if ev else "; no eval loss logged")
    return Loss([_step(c[-1][0]) for c in chunks], [sum(v for _, v in c) / len(c) for c in chunks], None, note)


def _step(s: float) -> str:
    return str(int(s)) if s == int(s) else str(s)


@dataclass(frozen=True)
class Recall:
    source: str
    ks: list[str]
    recall: list[float | None]
    all: list[float | None] | None  # None: the table has no all@k


def recall_at_k(table: list[dict[str, str]]) -> list[Recall]:
    """Per retrieval source: recall@k (the share of supporting passages in the top k) and, when the
    table has it, all@k (the share of questions with all of them there), k in numeric order. The
    table is long (source,k,recall,all) or wide (k,SOURCE1,SOURCE2,...: recall@k per source, one
    column each, as retrieve writes it for `dvc plots`)."""
    if not table:
        return []
    if "source" not in table[0]:
        by_k = {r.get("k", ""): r for r in table}
        ks = natural(list(by_k))
        return [Recall(src, ks, [num(by_k[k].get(src)) for k in ks], None) for src in table[0] if src != "k"]
    out = []
    for source in distinct(r.get("source", "") for r in table):
        mine = {r.get("k", ""): r for r in table if r.get("source", "") == source}
        ks = natural(list(mine))
        alls = [num(mine[k].get("all")) for k in ks] if "all" in table[0] else None
        out.append(Recall(source, ks, [num(mine[k].get("recall")) for k in ks], alls))
    return out


def outcome_counts(table: list[dict[str, str]]) -> tuple[list[tuple[str, str]], dict[str, dict[tuple[str, str], int]]]:
    """((eval set, outcome) rows in file order, {model: {row: count}})."""
    keys = distinct((r.get("eval_set", ""), r.get("outcome", "")) for r in table)
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for r in table:
        c = num(r.get("count"))
        counts.setdefault(r.get("model", ""), {})[(r.get("eval_set", ""), r.get("outcome", ""))] = int(c) if c is not None else 0
    return keys, counts
