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

import typer
from pydantic import BaseModel, ConfigDict, Field

from stages import metrics
from stages.io import StageError, load_yaml, validate, write_json
from stages.llm import LLM, LLMParams, Request
from stages.prompting import fill, parse_fields, user


class JudgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    llm: LLMParams = LLMParams()
    max_tokens: int = Field(16, gt=0)
    bootstrap: int = 1000
    seed: int = 0


def read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise StageError(f"{path}: predictions not found (run the evaluate stages first)")
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def reference(row: dict) -> str:
    return row["gold"][0] if row["gold"] else "The question cannot be answered from the given knowledge."


def verdict(text: str) -> float | None:
    v = parse_fields(text, ["Verdict"]).get("Verdict", "").lower()
    return 0.0 if v.startswith("incorrect") else 1.0 if v.startswith("correct") else None


def preference(text: str) -> str | None:
    v = parse_fields(text, ["Better"]).get("Better", "").strip().strip(".").upper()
    return v if v in ("A", "B", "TIE") else None


def judge_source(llm: LLM, base: dict[str, dict], tuned: dict[str, dict], p: JudgeParams, desc: str) -> dict:
    ids = [i for i in base if i in tuned]
    acc_reqs = [Request.chat(user(fill("judge_accuracy", question=rows[i]["question"], reference=reference(rows[i]), candidate=rows[i]["final_message"] or "(no answer)")), 0.0, p.max_tokens)
                for rows in (base, tuned) for i in ids]
    acc = [verdict(r.text) for r in llm.complete(acc_reqs, desc=f"{desc} accuracy")]
    pair = lambda i, a, b: Request.chat(user(fill("judge_pairwise", question=base[i]["question"], reference=reference(base[i]), answer_a=a["final_message"] or "(no answer)", answer_b=b["final_message"] or "(no answer)")), 0.0, p.max_tokens)  # noqa: E731
    first = llm.complete([pair(i, base[i], tuned[i]) for i in ids], desc=f"{desc} base vs fine-tuned")
    second = llm.complete([pair(i, tuned[i], base[i]) for i in ids], desc=f"{desc} fine-tuned vs base")
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
    s = lambda vals: metrics.summarize([v or 0.0 for v in vals], n=p.bootstrap, seed=p.seed)  # noqa: E731
    return {
        "n": n,
        "accuracy": {"base": s(acc[:n]), "finetuned": s(acc[n:])},
        "win_rate": {k: round(v / n, 4) if n else None for k, v in wins.items()},
        "wins": wins,
        "judge_unparsable": unparsable,
    }


def main(
    base: Path = typer.Option(Path("data/eval/base")),
    finetuned: Path = typer.Option(Path("data/eval/finetuned")),
    params: Path = typer.Option(Path("params.yaml")),
    metrics_path: Path = typer.Option(Path("metrics/compare.json"), "--metrics"),
):
    """Judge base vs fine-tuned answers: accuracy and win rate."""
    p = validate(JudgeParams, load_yaml(params).get("judge", {}), "judge")
    llm = LLM(p.llm)
    report = {"judge": p.llm.model}
    for source in ("hotpotqa", "squad_v2"):
        if (base / f"{source}.jsonl").is_file():
            report[source] = judge_source(llm, read_rows(base / f"{source}.jsonl"), read_rows(finetuned / f"{source}.jsonl"), p, f"judge {source}")
    report["llm"] = llm.stats
    write_json(metrics_path, report)
    print(f"compare: {json.dumps({k: v for k, v in report.items() if k != 'llm'})[:400]}")
