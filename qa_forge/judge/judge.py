"""compare: an LLM judge scores base and fine-tuned answers.

- accuracy: each answer judged 0/1 against the reference;
- win rate: the judge picks the better of the two answers, asked in both orders; a win counts
  only when both orders agree, otherwise it is a tie.
A verdict the judge did not write in the asked format is unparsable: it is left out of the scores
(never counted as incorrect or as a tie) and counted, every score carries the N it was computed on,
and a judge with more than `judge.max_unparsable` of its verdicts unparsable fails the stage. The
judge runs through the LLM layer (cached). The embedded default's SmolLM2 cannot judge, so the
default turns the judge off (`judge.enabled: false`); use a strong model (`judge.llm`) for real runs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.io import UserError, read_jsonl
from qa_forge.core.prompts import fill, parse_fields, user
from qa_forge.eval import metrics
from qa_forge.eval.tasks import TASKS, Prediction
from qa_forge.llm import LLM, LLMParams, Request


class JudgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool  # false: compare records that the judge was off and writes no scores
    llm: LLMParams
    max_unparsable: float = Field(ge=0, le=1)  # share of unparsable verdicts above which compare fails
    max_tokens: int = Field(gt=0)
    unanswerable_reference: str  # the reference answer of a question with no gold answer
    bootstrap: int = Field(gt=0)
    seed: int


def read_rows(path: Path) -> dict[str, dict]:
    """Predictions by id, through the one read path (file, line and field named on a bad row)."""
    return {r.id: r.model_dump() for r in read_jsonl(path, Prediction)}


def reference(row: dict, p: JudgeParams) -> str:
    return row["gold"][0] if row["gold"] else p.unanswerable_reference


def verdict(text: str) -> float | None:
    v = parse_fields(text, ["Verdict"]).get("Verdict", "").lower()
    return 0.0 if v.startswith("incorrect") else 1.0 if v.startswith("correct") else None


def preference(text: str) -> str | None:
    v = parse_fields(text, ["Better"]).get("Better", "").strip().strip(".").upper()
    return v if v in ("A", "B", "TIE") else None


def accuracy_request(row: dict, p: JudgeParams) -> Request:
    prompt = fill("judge_accuracy", question=row["question"], reference=reference(row, p), candidate=row["final_message"] or "(no answer)")
    return Request.chat(user(prompt), 0.0, p.max_tokens)


def pairwise_request(row: dict, a: dict, b: dict, p: JudgeParams) -> Request:
    """Which of answers A and B is better, for the question and reference of `row`."""
    prompt = fill(
        "judge_pairwise",
        question=row["question"],
        reference=reference(row, p),
        answer_a=a["final_message"] or "(no answer)",
        answer_b=b["final_message"] or "(no answer)",
    )
    return Request.chat(user(prompt), 0.0, p.max_tokens)


def pair_outcome(x: str | None, y: str | None) -> str | None:
    """x: the verdict with base as A, y: with fine-tuned as A. None when either is unparsable."""
    if x is None or y is None:
        return None
    if x == "B" and y == "A":
        return "finetuned"
    if x == "A" and y == "B":
        return "base"
    return "tie"


def judge_source(llm: LLM, base: dict[str, dict], tuned: dict[str, dict], p: JudgeParams, desc: str) -> dict:
    ids = [i for i in base if i in tuned]
    n = len(ids)
    acc = [
        verdict(r.text)
        for r in llm.complete([accuracy_request(rows[i], p) for rows in (base, tuned) for i in ids], desc=f"{desc} accuracy")
    ]
    first = llm.complete([pairwise_request(base[i], base[i], tuned[i], p) for i in ids], desc=f"{desc} base vs fine-tuned")
    second = llm.complete([pairwise_request(base[i], tuned[i], base[i], p) for i in ids], desc=f"{desc} fine-tuned vs base")
    prefs = [(preference(a.text), preference(b.text)) for a, b in zip(first, second)]
    outcomes = [o for o in (pair_outcome(x, y) for x, y in prefs) if o is not None]

    def score(vals: list[float | None]) -> dict:  # parsed verdicts only
        return metrics.summarize([v for v in vals if v is not None], n=p.bootstrap, seed=p.seed)

    def paired(tuned: list[float | None], base: list[float | None]) -> dict:  # questions with both verdicts parsed
        both = [(t, b) for t, b in zip(tuned, base) if t is not None and b is not None]
        return metrics.paired_difference([t for t, _ in both], [b for _, b in both], n=p.bootstrap, seed=p.seed)

    def share(outcome: str) -> dict:
        return metrics.summarize([float(o == outcome) for o in outcomes], n=p.bootstrap, seed=p.seed)

    unparsable = sum(v is None for v in acc) + sum((x is None) + (y is None) for x, y in prefs)
    return {
        "n": n,
        "accuracy": {"base": score(acc[:n]), "finetuned": score(acc[n:]), "difference": paired(acc[n:], acc[:n])},
        "win_rate": {"n": len(outcomes), "finetuned": share("finetuned"), "base": share("base"), "tie": share("tie")},
        "wins": {k: outcomes.count(k) for k in ("finetuned", "base", "tie")},
        "unparsable": {
            "accuracy": {"base": sum(v is None for v in acc[:n]), "finetuned": sum(v is None for v in acc[n:])},
            "pairs": n - len(outcomes),
            "verdicts": unparsable,
            "of": 4 * n,
        },
    }


def check_parsable(name: str, report: dict, p: JudgeParams) -> None:
    u = report["unparsable"]
    if u["of"] and u["verdicts"] / u["of"] > p.max_unparsable:
        raise UserError(
            f"judge {p.llm.model}: {u['verdicts']} of {u['of']} verdicts on {name} were unparsable "
            f"(more than judge.max_unparsable = {p.max_unparsable:.0%}): use a judge model that follows the format (judge.llm)"
        )


def judge(p: JudgeParams, base: Path, finetuned: Path) -> dict:
    """Every eval set with predictions of both models, judged; plus the judge's LLM stats."""
    if not p.enabled:
        return {"enabled": False}
    report: dict = {"judge": p.llm.model, "enabled": True}
    with LLM(p.llm) as llm:  # leaving the block stops a server serve_command started
        for name in TASKS:
            if (base / f"{name}.jsonl").is_file():
                report[name] = judge_source(
                    llm, read_rows(base / f"{name}.jsonl"), read_rows(finetuned / f"{name}.jsonl"), p, f"judge {name}"
                )
                check_parsable(name, report[name], p)
    report["llm"] = llm.stats
    return report
