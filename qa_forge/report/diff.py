"""What changed between two runs, as data: params, the metric files' numbers, and the scores of
metrics/summary.json with a flag for a fine-tuned score that left its interval.

An interval object is {"value", "n", "ci95_lo", "ci95_hi"}; a paired score is {"base": I,
"finetuned": I, "difference": I} (difference = fine-tuned - base, paired by question). Eval-set and
metric names are data: whatever summary.json holds is reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class _Missing:
    """A key one side does not have."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> leaf values. Lists and scalars are leaves; so is an empty mapping."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def same(a: Any, b: Any) -> bool:
    """Equal values of the same kind: 1 and 1.0 are the same number, True and 1 are not."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@dataclass(frozen=True)
class Change:
    key: str
    old: Any  # MISSING when added
    new: Any  # MISSING when removed


def params_diff(old: dict | None, new: dict | None) -> list[Change]:
    """The changed, added and removed dotted keys: the new file's key order, then removed keys."""
    fo, fn = flatten(old or {}), flatten(new or {})
    keys = [*fn, *(k for k in fo if k not in fn)]
    changes = [Change(k, fo.get(k, MISSING), fn.get(k, MISSING)) for k in keys]
    return [c for c in changes if c.old is MISSING or c.new is MISSING or not same(c.old, c.new)]


def numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics file under dotted keys, as `dvc metrics diff` sees them: nested
    mappings are walked, lists, text and booleans left out."""
    out: dict[str, float] = {}
    if not isinstance(tree, dict):
        return out
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numbers(v, f"{key}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


@dataclass(frozen=True)
class NumberChange:
    file: str
    key: str
    old: Any  # a number, or MISSING
    new: Any


def numbers_diff(old: dict[str, Any], new: dict[str, Any]) -> list[NumberChange]:
    """The changed numbers of metric files ({path: parsed JSON}), file by file in path order."""
    rows = []
    for path in sorted(set(old) | set(new)):
        no, nn = numbers(old.get(path)), numbers(new.get(path))
        for key in [*nn, *(k for k in no if k not in nn)]:
            a, b = no.get(key, MISSING), nn.get(key, MISSING)
            if a is MISSING or b is MISSING or not same(float(a), float(b)):
                rows.append(NumberChange(path, key, a, b))
    return rows


# --- summary.json ------------------------------------------------------------------------------


def is_interval(x: Any) -> bool:
    return isinstance(x, dict) and "value" in x and "ci95_lo" in x and "ci95_hi" in x


def is_paired(x: Any) -> bool:
    """{"base": I, "finetuned": I, "difference": I} (any of the three may be absent)."""
    parts = [x.get(k) for k in ("base", "finetuned", "difference")] if isinstance(x, dict) else []
    return any(p is not None for p in parts) and all(p is None or is_interval(p) for p in parts)


@dataclass(frozen=True)
class Group:
    """One eval set (or a nested group, e.g. the judge's per-set scores) of summary.json."""

    name: str  # "hotpotqa", "judge · hotpotqa"
    n: int | None
    enabled: bool | None  # the `enabled` flag of a group that has one (the judge)
    scores: dict[str, dict]  # metric -> paired score, or a lone interval (e.g. the judge's win rate)


def groups(summary: dict | None) -> list[Group]:
    """Every group of summary.json with its scores, in file order; groups without scores are kept
    when they say something (an `enabled: false` judge)."""
    out: list[Group] = []

    def walk(node: dict, path: tuple[str, ...]) -> None:
        scores = {k: v for k, v in node.items() if is_paired(v) or is_interval(v)}
        n = node.get("n") if isinstance(node.get("n"), int) and not isinstance(node.get("n"), bool) else None
        enabled = node.get("enabled") if isinstance(node.get("enabled"), bool) else None
        if path and (scores or enabled is not None):
            out.append(Group(" · ".join(path), n, enabled, scores))
        for k, v in node.items():
            if isinstance(v, dict) and k not in scores:
                walk(v, (*path, str(k)))

    if isinstance(summary, dict):
        walk(summary, ())
    return out


def parts(score: dict | None) -> tuple[dict | None, dict | None, dict | None]:
    """(base, fine-tuned, difference) of a score; a lone interval counts as the fine-tuned value
    (the judge's win rate of fine-tuned over base)."""
    if score is None:
        return None, None, None
    if is_interval(score):
        return None, score, None
    return score.get("base"), score.get("finetuned"), score.get("difference")


DROP = "drop"  # the new value is below REV's 95 % interval
DROP_DISJOINT = "drop, disjoint"  # ... and the two intervals do not overlap
RISE = "rise"
RISE_DISJOINT = "rise, disjoint"


def flag(old: dict | None, new: dict | None) -> str:
    """How this run's value sits against REV's interval of the same score: DROP when it is below
    REV's ci95_lo (DROP_DISJOINT when this run's whole interval is), RISE / RISE_DISJOINT above
    REV's ci95_hi, "" inside it or when either side has no number. Every score here is better
    high (accuracies, F1, recall, abstention, win rate)."""
    if not old or not new:
        return ""
    v, lo, hi, nlo, nhi = new.get("value"), old.get("ci95_lo"), old.get("ci95_hi"), new.get("ci95_lo"), new.get("ci95_hi")
    if v is None or lo is None or hi is None:
        return ""
    if v < lo:
        return DROP_DISJOINT if nhi is not None and nhi < lo else DROP
    if v > hi:
        return RISE_DISJOINT if nlo is not None and nlo > hi else RISE
    return ""


BETTER, WORSE, UNCLEAR = "better", "worse", "includes 0"


def verdict(difference: dict | None) -> str:
    """Whether a paired interval of fine-tuned - base excludes 0: BETTER (all above), WORSE (all
    below), UNCLEAR (0 inside or on its edge); "" without an interval."""
    if not difference or difference.get("ci95_lo") is None or difference.get("ci95_hi") is None:
        return ""
    if difference["ci95_lo"] > 0:
        return BETTER
    if difference["ci95_hi"] < 0:
        return WORSE
    return UNCLEAR


@dataclass(frozen=True)
class ScoreChange:
    group: str
    metric: str
    base: tuple[dict | None, dict | None]  # (REV, this run)
    finetuned: tuple[dict | None, dict | None]
    flag: str  # of the fine-tuned value

    @property
    def changed(self) -> bool:
        return any(not same(_key(a), _key(b)) for a, b in (self.base, self.finetuned))


def _key(i: dict | None) -> tuple | None:
    return None if i is None else (i.get("value"), i.get("ci95_lo"), i.get("ci95_hi"), i.get("n"))


def summary_diff(old: dict | None, new: dict | None) -> list[ScoreChange]:
    """Every score of either run (this run's order, then REV-only ones), REV vs this run."""
    go = {g.name: g for g in groups(old)}
    gn = {g.name: g for g in groups(new)}
    rows = []
    for name in [*gn, *(k for k in go if k not in gn)]:
        so, sn = (go[name].scores if name in go else {}), (gn[name].scores if name in gn else {})
        for metric in [*sn, *(k for k in so if k not in sn)]:
            bo, fo, _ = parts(so.get(metric))
            bn, fn, _ = parts(sn.get(metric))
            rows.append(ScoreChange(name, metric, (bo, bn), (fo, fn), flag(fo, fn)))
    return rows


def paired_scores(summary: dict | None) -> Iterator[tuple[Group, str, dict]]:
    """(group, metric, paired score) of every score with a difference."""
    for g in groups(summary):
        for metric, score in g.scores.items():
            if is_paired(score) and score.get("difference") is not None:
                yield g, metric, score
