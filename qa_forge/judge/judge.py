"""compare: an LLM judge scores base and fine-tuned answers.

- accuracy: each answer judged 0/1 against the reference;
- win rate: the judge picks the better of the two answers, asked in both orders; a win counts
  only when both orders agree, otherwise it is a tie.
The judge runs through the LLM layer (cached). The default judge is SmolLM2 itself: it only
proves the wiring; use a strong model (`judge.llm`) for real runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.io import UserError
from qa_forge.core.prompts import fill, parse_fields, user
from qa_forge.eval import metrics
from qa_forge.eval.tasks import TASKS
from qa_forge.llm import LLM, LLMParams, Request


class JudgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    llm: LLMParams
    max_tokens: int = Field(gt=0)
    unanswerable_reference: str  # the reference answer of a question with no gold answer
    bootstrap: int = Field(gt=0)
    seed: int


def read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise UserError(f"{path}: predictions not found (run the evaluate stages first)")
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


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


def judge_source(llm: LLM, base: dict[str, dict], tuned: dict[str, dict], p: JudgeParams, desc: str) -> dict:
    ids = [i for i in base if i in tuned]
    acc = [
        verdict(r.text)
        for r in llm.complete([accuracy_request(rows[i], p) for rows in (base, tuned) for i in ids], desc=f"{desc} accuracy")
    ]
    first = llm.complete([pairwise_request(base[i], base[i], tuned[i], p) for i in ids], desc=f"{desc} base vs fine-tuned")
    second = llm.complete([pairwise_request(base[i], tuned[i], base[i], p) for i in ids], desc=f"{desc} fine-tuned vs base")
    wins = {"finetuned": 0, "base": 0, "tie": 0}
    unparsable = sum(v is None for v in acc)
    for a, b in zip(first, second):
        x, y = preference(a.text), preference(b.text)  # x: A = base; y: A = fine-tuned
        unparsable += (x is None) + (y is None)
        if x == "B" and y == "A":
            wins["finetuned"] += 1
        elif x == "A" and y == "B":
            wins["base"] += 1
        else:
            wins["tie"] += 1
    n = len(ids)

    def s(vals: list[float | None]) -> dict:  # an unparsable verdict counts as incorrect
        return metrics.summarize([v or 0.0 for v in vals], n=p.bootstrap, seed=p.seed)

    return {
        "n": n,
        "accuracy": {"base": s(acc[:n]), "finetuned": s(acc[n:])},
        "win_rate": {k: round(v / n, 4) if n else None for k, v in wins.items()},
        "wins": wins,
        "judge_unparsable": unparsable,
    }


def judge(p: JudgeParams, base: Path, finetuned: Path) -> dict:
    """Every eval set with predictions of both models, judged; plus the judge's LLM stats."""
    llm = LLM(p.llm)
    report: dict = {"judge": p.llm.model}
    for name in TASKS:
        if (base / f"{name}.jsonl").is_file():
            report[name] = judge_source(llm, read_rows(base / f"{name}.jsonl"), read_rows(finetuned / f"{name}.jsonl"), p, f"judge {name}")
    report["llm"] = llm.stats
    return report
