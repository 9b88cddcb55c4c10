"""The eval sets as a registry (the way lm-evaluation-harness declares tasks): each entry holds the
code of a set (how its prediction rows are scored, what the printout shows, which plot tables it
writes); the values (file, number of questions, retrieval scope, top-k) live in params
(`evaluate.sets.<name>`). evaluate, compare and the printout loop over the sets in params, each
looked up here: adding a dataset is one entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.io import UserError, read_jsonl
from qa_forge.core.textnorm import abstains, normalize_answer
from qa_forge.eval import metrics


@dataclass(frozen=True)
class Scoring:
    """The settings every scorer reads."""

    bootstrap: int  # resamples for the 95 % intervals
    seed: int
    max_calls: int  # retrieve calls allowed per question (the last bucket of by_retrieve_calls)
    abstain_phrases: tuple[str, ...]


@dataclass(frozen=True)
class PlotTable:
    """A CSV for `dvc plots`: one row per group of a report's `group` section, each score with its
    interval as plain columns (`<score>`, then `ci95_lo`, `ci95_hi` of the first score)."""

    file: str
    group: str  # e.g. "by_type"
    label: str  # the first column (the group's name)
    columns: dict[str, str]  # CSV column -> metric in the group


@dataclass(frozen=True)
class Headline:
    """A main score of a set for metrics/summary.json: the mean of a per-row score (the prediction
    rows carry it after scoring), over the rows `where` keeps (None: all)."""

    row_key: str
    where: Callable[[dict], bool] | None = None
    # the interval: None: Wilson when every value is 0/1, else a bootstrap; False: a bootstrap always
    # (a count such as retrieve_calls, whose values may all happen to be 0 or 1)
    binary: bool | None = None


@dataclass(frozen=True)
class EvalTask:
    score: Callable[[list[dict], Scoring], dict]  # prediction rows -> the set's report (rows get per-row scores)
    headline: tuple[str, ...]  # report keys printed after a run
    summary: dict[str, Headline]  # the scores metrics/summary.json compares, base vs fine-tuned
    plots: tuple[PlotTable, ...] = field(default_factory=tuple)
    groups: tuple[str, ...] = ()  # per-group report sections kept out of the metrics file (besides the plots' groups)


def value(report: dict, key: str):
    v = report[key]
    return v["value"] if isinstance(v, dict) else v


# --- HotpotQA (and 2WikiMultihopQA, scored the same way) ----------------------------------------

# the question types whose answer needs a chain of paragraphs, each found through the previous one
# (HotpotQA bridge, 2WikiMultihopQA compositional): where retrieving step by step should pay off
CHAIN_TYPES = ("bridge", "compositional")


def is_chain(row: dict) -> bool:
    """A multi-hop chain question whose row has its supporting-paragraph coverage."""
    return row.get("type") in CHAIN_TYPES and "covered" in row


def coverage_report(rows: list[dict], s: Scoring) -> dict:
    """On the chain questions: the share whose supporting paragraphs the model's retrieve calls all
    found (`covered`), the same for one retrieval with the question alone given as many paragraphs
    (`covered_single`), and their paired difference (model - single); {"n": 0} without such rows."""
    chains = [r for r in rows if is_chain(r)]
    if not chains:
        return {"n": 0}
    model, single = [float(r["covered"]) for r in chains], [float(r["covered_single"]) for r in chains]
    return {
        "n": len(chains),
        "model": metrics.summarize(model, n=s.bootstrap, seed=s.seed),
        "single": metrics.summarize(single, n=s.bootstrap, seed=s.seed),
        "difference": metrics.paired_difference(model, single, n=s.bootstrap, seed=s.seed),
    }


def score_hotpot(rows: list[dict], s: Scoring) -> dict:
    """The seeds' word recall and containing accuracy (whole message and extracted answer), official
    EM / F1 on the short-answer line, by question type and by number of retrieve calls; the retrieve
    calls with their interval and the supporting-paragraph coverage of the chain questions
    (`coverage_report`, from the rows' `covered` / `covered_single` evaluate wrote)."""
    for row in rows:
        gold = row["gold"][0] if row["gold"] else ""
        row.update(metrics.seed_scores(row["final_message"], gold, row["answer"] or ""))
        short = row["short_answer"] if row["short_answer"] is not None else (row["answer"] or "")
        row["em"], row["f1"] = metrics.hotpot_exact_match(short, gold), metrics.hotpot_f1(short, gold)

    def summary(values: list[float]) -> dict:
        return metrics.summarize(values, n=s.bootstrap, seed=s.seed)

    names = {
        "recall": "recall_message",
        "containing_accuracy": "containing_message",
        "answer_recall": "recall_answer",
        "answer_containing_accuracy": "containing_answer",
        "em": "em",
        "f1": "f1",
    }
    calls = [r["retrieve_calls"] for r in rows]
    grouped = ["containing_message", "em", "f1"]
    return {
        "n": len(rows),
        **{name: summary([r[key] for r in rows]) for name, key in names.items()},
        "multihop_rate": summary([float(c >= 2) for c in calls]),
        "mean_retrieve_calls": round(sum(calls) / max(len(calls), 1), 3),
        "retrieve_calls": metrics.summarize([float(c) for c in calls], n=s.bootstrap, seed=s.seed, binary=False),
        "coverage": coverage_report(rows, s),
        "unparsable": sum(r["status"] == "unparsable" for r in rows),
        "hop_cap_stops": sum(r["status"] == "hop_cap" for r in rows),
        "length_stops": sum(r["status"] == "length" for r in rows),
        "by_type": metrics.by_question_type(rows, grouped, n=s.bootstrap, seed=s.seed),
        "by_retrieve_calls": metrics.by_retrieve_calls(rows, grouped, cap=s.max_calls, n=s.bootstrap, seed=s.seed),
    }


# --- SQuAD v2 -----------------------------------------------------------------------------------


def squad_prediction(row: dict, phrases: tuple[str, ...]) -> str | None:
    """The answer string scored for SQuAD v2: the short answer, "" for an abstention, None if unparsable."""
    if row["answer"] is None:
        return None
    if row["short_answer"] not in (None, "", "none"):
        return row["short_answer"]
    return "" if abstains(row["answer"], phrases) else row["answer"]


def score_squad(rows: list[dict], s: Scoring) -> dict:
    """The llama_squad table (parseable, EM, correct no-answer / has-answer) plus F1, each with its
    interval; rows get their prediction, em, f1 and whether the question has no answer."""
    preds = [squad_prediction(r, s.abstain_phrases) for r in rows]
    for r, pred in zip(rows, preds):
        r["prediction"] = pred
        r["em"] = 0.0 if pred is None else metrics.squad_exact_match(pred, r["gold"])
        r["f1"] = 0.0 if pred is None else metrics.squad_f1(pred, r["gold"])
        r["no_answer"] = not any(normalize_answer(a) for a in r["gold"])

    def summary(values: list[float]) -> dict:
        return metrics.summarize(values, n=s.bootstrap, seed=s.seed)

    parsed = [r for r, pred in zip(rows, preds) if pred is not None]
    return {
        "n": len(rows),
        "n_no_answer": sum(r["no_answer"] for r in rows),
        "n_has_answer": sum(not r["no_answer"] for r in rows),
        "parseable": summary([float(pred is not None) for pred in preds]),
        "exact_match": summary([r["em"] for r in rows]),
        "exact_match_parseable": summary([r["em"] for r in parsed]),
        "correct_no_answer": summary([r["em"] for r in rows if r["no_answer"]]),
        "correct_has_answer": summary([r["em"] for r in rows if not r["no_answer"]]),
        "f1": summary([r["f1"] for r in rows]),
    }


# --- the registry -------------------------------------------------------------------------------

_BY_GROUP = {"containing_accuracy": "containing_message", "em": "em", "f1": "f1"}
_HOTPOT_GROUPS = ("by_type", "by_retrieve_calls")
_HOTPOT_HEADLINE = ("recall", "containing_accuracy", "em", "f1")
_HOTPOT_SUMMARY = {
    "containing_accuracy": Headline("containing_message"),
    "recall": Headline("recall_message"),
    "em": Headline("em"),
    "f1": Headline("f1"),
    "retrieve_calls": Headline("retrieve_calls", binary=False),
    # the chain questions whose supporting paragraphs the model's retrieve calls all found
    "coverage": Headline("covered", is_chain),
}

TASKS: dict[str, EvalTask] = {
    "hotpotqa": EvalTask(
        score=score_hotpot,
        headline=_HOTPOT_HEADLINE,
        summary=_HOTPOT_SUMMARY,
        plots=(
            PlotTable("by_type.csv", "by_type", "type", _BY_GROUP),
            PlotTable("by_retrieve_calls.csv", "by_retrieve_calls", "retrieve_calls", _BY_GROUP),
        ),
        groups=_HOTPOT_GROUPS,
    ),
    "squad_v2": EvalTask(
        score=score_squad,
        headline=("exact_match", "f1", "parseable"),
        summary={
            "exact_match": Headline("em"),
            "f1": Headline("f1"),
            # abstention: EM on the questions with no answer, where only declining to answer is right
            "abstention": Headline("em", lambda r: r["no_answer"]),
            "has_answer_em": Headline("em", lambda r: not r["no_answer"]),
        },
    ),
    # types compositional / comparison / inference / bridge_comparison; no plot tables (their file
    # names would collide with hotpotqa's); its per-group sections stay out of the metrics file, as hotpotqa's
    "2wikimultihopqa": EvalTask(score=score_hotpot, headline=_HOTPOT_HEADLINE, summary=_HOTPOT_SUMMARY, groups=_HOTPOT_GROUPS),
}


def plot_rows(table: PlotTable, report: dict) -> tuple[list[str], list[list]]:
    """(header, rows) of a plot table from a set's report: the label, n, the first score with its
    interval, then the other scores."""
    first, *rest = table.columns
    header = [table.label, "n", first, "ci95_lo", "ci95_hi", *rest]
    rows = []
    for g, grp in report[table.group].items():
        lead = grp[table.columns[first]]
        rows.append([g, grp["n"], lead["value"], lead["ci95_lo"], lead["ci95_hi"], *(grp[table.columns[m]]["value"] for m in rest)])
    return header, rows


def group_keys(task: EvalTask) -> set[str]:
    """The per-group report sections kept out of the metrics file (the plot tables show some)."""
    return {t.group for t in task.plots} | set(task.groups)


# --- predictions ---------------------------------------------------------------------------------


class Prediction(BaseModel):
    """The fields of an evaluate prediction row (`evaluate.prediction_row`) that compare reads."""

    model_config = ConfigDict(extra="allow")  # the steps, statuses and scores ride along
    id: str = Field(min_length=1)
    question: str
    gold: list[str]
    final_message: str | None


def read_predictions(path: Path) -> list[dict]:
    """A prediction file's rows with every field (scores included), through the one read path."""
    return [r.model_dump() for r in read_jsonl(path, Prediction)]


def check_predictions(base: Path, finetuned: Path) -> None:
    """Both models' prediction files for every set, read through the one read path before any
    judge call is paid: a missing, empty or corrupt one fails naming file, line and field."""
    names = [name for name in TASKS if (base / f"{name}.jsonl").exists()]
    if not names:
        raise UserError(f"{base}: no predictions ({', '.join(f'{n}.jsonl' for n in TASKS)}): run the evaluate stages first")
    for name in names:
        for folder in (base, finetuned):
            read_jsonl(folder / f"{name}.jsonl", Prediction)
