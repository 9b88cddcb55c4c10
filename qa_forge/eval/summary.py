"""How the run went, for a reviewer: each eval set's main scores (the registry's `summary`) for the
base and the fine-tuned model, and their difference paired by question, each with N and a 95 %
interval; plus the tables the plots draw with both models side by side.

Read from the two models' prediction files, whose rows carry their per-question scores (evaluate
writes them): a paired interval needs the questions, which the metrics files no longer hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qa_forge.core.io import UserError
from qa_forge.eval import metrics
from qa_forge.eval.tasks import TASKS, Headline, read_predictions

MODELS = ("base", "finetuned")
PLOT_FILES = ("by_type.csv", "by_retrieve_calls.csv", "outcomes.csv")
OUTCOMES = ("answered", "unparsable", "hop_cap", "length")  # how a conversation ended (agent.Conversation.status)


def scores(rows: list[dict], h: Headline, where: str) -> list[float]:
    """The per-question score `h` names, over the rows it keeps; a row without it names itself."""
    kept = [r for r in rows if h.where is None or h.where(r)]
    missing = next((r for r in kept if not isinstance(r.get(h.row_key), (int, float))), None)
    if missing is not None:
        raise UserError(f"{where}: record {missing['id']}: field '{h.row_key}': no score (written by an older evaluate? re-run it)")
    return [float(r[h.row_key]) for r in kept]


def paired_rows(base: list[dict], tuned: list[dict], where: str) -> tuple[list[dict], list[dict]]:
    """Both models' rows in the same question order; they must have answered the same questions."""
    by_id = {r["id"]: r for r in tuned}
    if set(by_id) != {r["id"] for r in base}:
        raise UserError(f"{where}: the base and fine-tuned predictions are not for the same questions: re-run both evaluate stages")
    return base, [by_id[r["id"]] for r in base]


def compare_set(name: str, base: list[dict], tuned: list[dict], bootstrap: int, seed: int, where: str) -> dict:
    """Each main score of the set: both models and the paired difference. A score whose filter
    keeps no question (a set without chain questions for `coverage`) has n 0 and no value."""
    base, tuned = paired_rows(base, tuned, where)
    out: dict = {"n": len(base)}
    for metric, h in TASKS[name].summary.items():
        b, t = scores(base, h, f"{where} (base)"), scores(tuned, h, f"{where} (finetuned)")
        if len(b) != len(t):  # e.g. one file from an evaluate that wrote no coverage
            raise UserError(
                f"{where}: score '{metric}': the base predictions have it for {len(b)} questions, the fine-tuned for {len(t)}: "
                "re-run both evaluate stages"
            )
        out[metric] = {
            "base": metrics.summarize(b, n=bootstrap, seed=seed, binary=h.binary),
            "finetuned": metrics.summarize(t, n=bootstrap, seed=seed, binary=h.binary),
            "difference": metrics.paired_difference(t, b, n=bootstrap, seed=seed, binary=h.binary),
        }
    return out


def load(folders: dict[str, Path]) -> dict[str, dict[str, list[dict]]]:
    """{set: {model: rows}} for every set of the registry both models have predictions for."""
    names = [n for n in TASKS if all((f / f"{n}.jsonl").is_file() for f in folders.values())]
    if not names:
        raise UserError(f"{', '.join(map(str, folders.values()))}: no predictions of both models: run the evaluate stages first")
    return {n: {m: read_predictions(f / f"{n}.jsonl") for m, f in folders.items()} for n in names}


def summarize_run(preds: dict[str, dict[str, list[dict]]], folders: dict[str, Path], bootstrap: int, seed: int, judged: dict) -> dict:
    """metrics/summary.json: per set, each main score of both models and the paired difference
    (fine-tuned - base); the judge's scores when it ran."""
    out = {
        name: compare_set(name, rows["base"], rows["finetuned"], bootstrap, seed, str(folders["finetuned"] / f"{name}.jsonl"))
        for name, rows in preds.items()
    }
    out["judge"] = judge_summary(judged)
    return out


def judge_summary(judged: dict) -> dict:
    if not judged.get("enabled"):
        return {"enabled": False}
    return {
        "enabled": True,
        **{n: {"accuracy": judged[n]["accuracy"], "win_rate": judged[n]["win_rate"]["finetuned"]} for n in TASKS if n in judged},
    }


# --- plot tables: one row per (model, group) -----------------------------------------------------


def grouped(preds: dict, key: Callable[[dict], str], label: str, score: str, row_key: str, bootstrap: int, seed: int) -> tuple[list, list]:
    """(header, rows): the score per model and group, with its interval, for the sets whose rows
    have the group field."""
    header = ["model", label, "n", score, "ci95_lo", "ci95_hi"]
    rows = []
    for by_model in preds.values():
        if not any(row_key in r for r in by_model["base"]):
            continue
        for model in MODELS:
            groups: dict[str, list[float]] = {}
            for r in by_model[model]:
                groups.setdefault(key(r), []).append(float(r[row_key]))
            for g in sorted(groups, key=_natural):
                s = metrics.summarize(groups[g], n=bootstrap, seed=seed)
                rows.append([model, g, s["n"], s["value"], s["ci95_lo"], s["ci95_hi"]])
    return header, rows


def _natural(g: str) -> tuple:
    return (0, int(g), "") if g.isdigit() else (1, 0, g)


def outcomes(preds: dict) -> tuple[list, list]:
    """(header, rows): how each model's conversations ended per set, as a count and a share with its
    interval (zero counts included); `label` is the bar's name (set and outcome)."""
    header = ["model", "eval_set", "outcome", "label", "count", "n", "share", "ci95_lo", "ci95_hi"]
    rows = []
    for name, by_model in preds.items():
        for model in MODELS:
            ended = [r.get("status") for r in by_model[model]]
            for o in OUTCOMES:
                s = metrics.summarize([float(e == o) for e in ended])
                rows.append([model, name, o, f"{name} {o}", ended.count(o), s["n"], s["value"], s["ci95_lo"], s["ci95_hi"]])
    return header, rows


def plot_tables(preds: dict, bootstrap: int, seed: int) -> dict[str, tuple[list, list]]:
    """{file name: (header, rows)} of the side-by-side plots."""
    hotpot = {n: v for n, v in preds.items() if n == "hotpotqa"}
    return {
        "by_type.csv": grouped(hotpot, lambda r: str(r.get("type")), "type", "containing_accuracy", "containing_message", bootstrap, seed),
        "by_retrieve_calls.csv": grouped(
            hotpot,
            lambda r: str(r.get("retrieve_calls", 0)),
            "retrieve_calls",
            "containing_accuracy",
            "containing_message",
            bootstrap,
            seed,
        ),
        "outcomes.csv": outcomes(preds),
    }
