"""The report's Markdown, from the two sides' file texts (no git, no disk: `report(rev, this)`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import yaml

from qa_forge.report import diff, plots
from qa_forge.report.mermaid import Series, xychart

PARAMS = "params.yaml"
SUMMARY = "metrics/summary.json"
MAX_PARAMS = 80  # rows of the params diff
MAX_NUMBERS = 40  # rows of the other metrics' numbers
MAX_CELL = 80  # characters of a params value

FLAGS = {
    diff.DROP: "⚠ below REV",
    diff.DROP_DISJOINT: "⚠⚠ below REV, disjoint",
    diff.RISE: "▲ above REV",
    diff.RISE_DISJOINT: "▲▲ above REV, disjoint",
    "": "",
}
VERDICTS = {diff.BETTER: "▲ fine-tuned better", diff.WORSE: "▼ fine-tuned worse", diff.UNCLEAR: "≈ includes 0", "": ""}


@dataclass(frozen=True)
class Side:
    """One side of the comparison: its name in the report and the texts of its files (path -> text;
    a file the side does not have is absent)."""

    label: str
    files: dict[str, str]


# --- Markdown pieces ---------------------------------------------------------------------------


def cell(x: Any) -> str:
    """Text for a table cell: one line, pipes escaped."""
    return " ".join(str(x).split()).replace("|", "\\|")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def code(x: Any) -> str:
    """A params value as inline code (JSON-ish), cut at MAX_CELL characters; "—" when absent."""
    if x is diff.MISSING:
        return "—"
    s = json.dumps(x, ensure_ascii=False, default=str) if not isinstance(x, str) else x
    s = " ".join(s.split())
    if len(s) > MAX_CELL:
        s = s[: MAX_CELL - 1] + "…"
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def score(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def interval(i: dict | None) -> str:
    """0.350 [0.181, 0.567]; the value alone without bounds; — when absent."""
    if not i or i.get("value") is None:
        return "—"
    if i.get("ci95_lo") is None or i.get("ci95_hi") is None:
        return score(i["value"])
    return f"{score(i['value'])} [{score(i['ci95_lo'])}, {score(i['ci95_hi'])}]"


def signed(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def value_change(a: dict | None, b: dict | None) -> float | None:
    va, vb = (a or {}).get("value"), (b or {}).get("value")
    return None if va is None or vb is None else vb - va


def plain(x: Any) -> str:
    """A number of a metrics file, compactly (6 significant digits)."""
    if x is diff.MISSING:
        return "—"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def parse(side: Side, path: str, loader) -> tuple[Any, str | None]:
    """(content, None), (None, None) when the side has no such file, (None, why) when unreadable."""
    if path not in side.files:
        return None, None
    try:
        return loader(side.files[path]), None
    except (ValueError, yaml.YAMLError) as e:
        return None, f"{side.label}'s {path} does not parse ({type(e).__name__}): left out"


# --- sections ----------------------------------------------------------------------------------


def params_section(rev: Side, this: Side) -> tuple[str, int]:
    old, err_old = parse(rev, PARAMS, yaml.safe_load)
    new, err_new = parse(this, PARAMS, yaml.safe_load)
    notes = [e for e in (err_old, err_new) if e]
    if PARAMS not in rev.files:
        notes.append(f"REV has no {PARAMS}: every key of this run's is new.")
    if PARAMS not in this.files:
        notes.append(f"This run has no {PARAMS}.")
    changes = diff.params_diff(old if isinstance(old, dict) else None, new if isinstance(new, dict) else None)
    body = [f"`{PARAMS}`, flattened to dotted keys: the changed keys (— where a side has none)."]
    if changes:
        rows = [[f"`{c.key}`", code(c.old), code(c.new)] for c in changes[:MAX_PARAMS]]
        body.append(table(["param", "REV", "this run"], rows))
        if len(changes) > MAX_PARAMS:
            body.append(f"… and {len(changes) - MAX_PARAMS} more changed keys (`dvc params diff` lists them all).")
    else:
        body.append("No param changed.")
    return _section("Params", notes + body), len(changes)


def summary_section(rev: Side, this: Side) -> tuple[str, str]:
    """(the section, its one-line headline)."""
    old, err_old = parse(rev, SUMMARY, json.loads)
    new, err_new = parse(this, SUMMARY, json.loads)
    notes = [e for e in (err_old, err_new) if e]
    if SUMMARY not in this.files:
        notes.append(f"This run has no `{SUMMARY}` (it is written by the compare stage): no scores to compare.")
        return _section("Scores", notes), "scores: none in this run"
    if SUMMARY not in rev.files:
        notes.append(f"REV has no `{SUMMARY}` (a run from before the summary existed): this run's scores alone, nothing to compare.")
    for side, s in ((rev, old), (this, new)):
        off = [g.name for g in diff.groups(s) if g.enabled is False and not g.scores]
        if off:
            notes.append(f"{'REV' if side is rev else 'This run'}: {', '.join(off)} off (`enabled: false`).")
    rows = diff.summary_diff(old, new)
    changed = sum(r.changed for r in rows)
    flagged = sum(r.flag in (diff.DROP, diff.DROP_DISJOINT) for r in rows)
    ns = {g.name: g.n for g in diff.groups(new)}
    ns_old = {g.name: g.n for g in diff.groups(old)}
    body = []
    if rows and SUMMARY in rev.files:
        body.append("No score changed." if not changed else f"{changed} of {len(rows)} scores changed, {flagged} flagged as a drop.")
    lines = []
    for r in rows:
        # a score's own N where it has one (SQuAD v2 abstention counts only the no-answer questions)
        n_new = score_n(r.finetuned[1], ns.get(r.group))
        n_old = score_n(r.finetuned[0], ns_old.get(r.group))
        n = "—" if n_new is None and n_old is None else str(n_new if n_old in (None, n_new) else f"{n_old} → {n_new}")
        b_old, b_new = r.base
        base = interval(b_new) if diff.same(diff._key(b_old), diff._key(b_new)) else f"{interval(b_old)} → {interval(b_new)}"
        lines.append(
            [
                f"{r.group} · **{r.metric}**",
                n,
                base,
                interval(r.finetuned[0]),
                interval(r.finetuned[1]),
                "=" if value_change(*r.finetuned) == 0 else signed(value_change(*r.finetuned)),
                FLAGS.get(r.flag, r.flag),
            ]
        )
    if lines:
        body.append(
            table(
                ["eval set · score", "n", "base (REV → this run)", "fine-tuned, REV", "fine-tuned, this run", "Δ fine-tuned", "flag"], lines
            )
        )
        body.append(
            "Values with their 95 % interval [lo, hi]. **Flag**, of the fine-tuned value: ⚠ below REV = this run's value is "
            "below REV's interval (< REV's ci95_lo); ⚠⚠ disjoint = this run's whole interval is below it (ci95_hi < REV's "
            "ci95_lo); ▲ / ▲▲ the same upwards. Every score is better high. A score with one interval (the judge's win rate "
            "of fine-tuned over base) stands in the fine-tuned columns."
        )
    if SUMMARY not in rev.files:
        headline = "scores: none in REV to compare with"
    else:
        headline = f"scores: {changed} changed, {flagged} flagged as a drop"
    return _section("Scores: this run vs REV", notes + body), headline


def score_n(score: dict | None, group_n: int | None) -> int | None:
    n = score.get("n") if isinstance(score, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else group_n


def difference_section(this: Side) -> str:
    new, _ = parse(this, SUMMARY, json.loads)
    rows = [
        [
            f"{g.name} · **{metric}**",
            score_n(s.get("difference"), g.n) if score_n(s.get("difference"), g.n) is not None else "—",
            interval(s.get("base")),
            interval(s.get("finetuned")),
            interval(s["difference"]),
            VERDICTS[diff.verdict(s["difference"])],
        ]
        for g, metric, s in diff.paired_scores(new)
    ]
    if not rows:
        return _section("Base vs fine-tuned (this run)", ["No paired scores in this run's summary."])
    legend = (
        "Difference = fine-tuned − base with its paired 95 % interval (by question). ▲ / ▼: the interval lies above / below 0; "
        "≈: it includes 0 (no clear difference at this n)."
    )
    return _section(
        "Base vs fine-tuned (this run)", [table(["eval set · score", "n", "base", "fine-tuned", "difference", ""], rows), legend]
    )


def _grouped_chart(text: str, group: str, title: str, x_title: str) -> list[str]:
    g = plots.grouped(plots.rows(text), group)
    if not g.groups:
        return ["(no rows)"]
    base, tuned = g.values("base", "containing_accuracy"), g.values("finetuned", "containing_accuracy")
    chart = xychart(
        title,
        g.groups,
        [Series("bar", "fine-tuned", [v or 0.0 for v in tuned]), Series("line", "base", [v or 0.0 for v in base])],
        x_title=x_title,
        y_title="containing accuracy",
        y_range=(0, 1),
    )
    rows = []
    for i, k in enumerate(g.groups):
        n = [g.cells.get(m, {}).get(k, {}).get("n", "") for m in plots.MODELS]
        cis = [_csv_interval(g.cells.get(m, {}).get(k)) for m in plots.MODELS]
        rows.append([k, " / ".join(x or "—" for x in n), cis[0], cis[1]])
    legend = "Bars: fine-tuned; line: base (Mermaid draws no legend; a missing value is drawn as 0)."
    return [legend, chart, table([x_title, "n (base / fine-tuned)", "base", "fine-tuned"], rows)]


def _csv_interval(r: dict[str, str] | None) -> str:
    if not r:
        return "—"
    return interval(
        {"value": plots.num(r.get("containing_accuracy")), "ci95_lo": plots.num(r.get("ci95_lo")), "ci95_hi": plots.num(r.get("ci95_hi"))}
    )


def plots_section(this: Side) -> str:
    body: list[str] = []
    missing = [p for p in plots.FILES if p not in this.files and p != plots.EVAL_LOSS]
    for path, group, title, x_title in (
        (plots.BY_TYPE, "type", "Containing accuracy by question type", "question type"),
        (plots.BY_RETRIEVE_CALLS, "retrieve_calls", "Containing accuracy by retrieve calls", "retrieve calls"),
    ):
        if path in this.files:
            body += [f"**{title}** (`{path}`)", *_grouped_chart(this.files[path], group, title, x_title)]
    if plots.TRAIN_LOSS in this.files or plots.EVAL_LOSS in this.files:
        lo = plots.loss(plots.rows(this.files.get(plots.TRAIN_LOSS, ""), "\t"), plots.rows(this.files.get(plots.EVAL_LOSS, ""), "\t"))
        if lo:
            series = [Series("line", "train loss", lo.train)] + ([Series("bar", "eval loss", lo.eval)] if lo.eval else [])
            body += [
                f"**Train vs eval loss** ({'line: train, bars: eval; ' if lo.eval else ''}{lo.note})",
                xychart("Train vs eval loss", lo.steps, series, x_title="step", y_title="loss"),
            ]
    if plots.RECALL_AT_K in this.files:
        for r in plots.recall_at_k(plots.rows(this.files[plots.RECALL_AT_K])):
            if r.ks:
                series = [Series("bar", "recall@k", [v or 0.0 for v in r.recall])]
                legend = "bars: recall@k, the share of supporting passages in the top k"
                if r.all is not None:
                    series.append(Series("line", "all@k", [v or 0.0 for v in r.all]))
                    legend += "; line: all@k, the share of questions with all of them there"
                body += [
                    f"**Retrieval recall@k, {cell(r.source)}** ({legend})",
                    xychart(f"Retrieval recall@k: {r.source}", r.ks, series, x_title="k", y_title="recall", y_range=(0, 1)),
                ]
    if plots.OUTCOMES in this.files:
        keys, counts = plots.outcome_counts(plots.rows(this.files[plots.OUTCOMES]))
        if keys:
            rows = [[s, o, *(counts.get(m, {}).get((s, o), "—") for m in plots.MODELS)] for s, o in keys]
            body += ["**How the conversations ended**", table(["eval set", "outcome", "base", "fine-tuned"], rows)]
    if missing:
        body.append("Not in this run: " + ", ".join(f"`{p}`" for p in missing) + ".")
    return _section("Plots (this run)", body or ["No plot data in this run."])


def other_metrics_section(rev: Side, this: Side) -> tuple[str, int]:
    def metric_files(side: Side) -> dict[str, Any]:
        out = {}
        for p in side.files:
            if p.startswith("metrics/") and p.endswith(".json") and p != SUMMARY:
                out[p], _ = parse(side, p, json.loads)
        return out

    changes = diff.numbers_diff(metric_files(rev), metric_files(this))
    body = ["The numbers of the other git-tracked `metrics/**/*.json` files (not `metrics/timings/`), as `dvc metrics diff` compares them."]
    if changes:
        rows = [[f"`{c.file}`", f"`{c.key}`", plain(c.old), plain(c.new), _delta(c.old, c.new)] for c in changes[:MAX_NUMBERS]]
        body.append(table(["file", "key", "REV", "this run", "Δ"], rows))
        if len(changes) > MAX_NUMBERS:
            body.append(f"… and {len(changes) - MAX_NUMBERS} more changed numbers (`dvc metrics diff --all` lists them).")
    else:
        body.append("No other metric number changed.")
    return _section("Other metrics", body), len(changes)


def _delta(a: Any, b: Any) -> str:
    if a is diff.MISSING or b is diff.MISSING or not (math.isfinite(a) and math.isfinite(b)):
        return ""
    return f"{b - a:+.6g}"


def _section(title: str, parts: list[str]) -> str:
    return "\n\n".join([f"### {title}", *parts])


def report(rev: Side, this: Side) -> str:
    """The whole report: this run against REV."""
    params, n_params = params_section(rev, this)
    scores, score_line = summary_section(rev, this)
    others, n_numbers = other_metrics_section(rev, this)
    head = [
        "## qa-forge run report",
        f"- **This run**: {this.label}\n- **REV**: {rev.label}",
        f"> params: {n_params} changed · {score_line} · other metric numbers: {n_numbers} changed",
    ]
    return "\n\n".join([*head, params, scores, difference_section(this), plots_section(this), others]) + "\n"
