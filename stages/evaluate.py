"""evaluate: the model answers eval questions by calling retrieve as often as it needs.

HotpotQA (distractor: each question's own paragraphs are its index): the seeds' word recall and
answer-containing accuracy on the whole final message and on the extracted answer, official EM
and F1 on the short-answer line, by question type and by number of retrieve calls; SQuAD v2 the
same way (retrieve returns the question's paragraph): the llama_squad columns plus F1. Every
score comes with N and a 95 % bootstrap interval. Predictions with every step go to data/eval/.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stages import agent, metrics, render
from stages.io import StageError, atomic_path, load_yaml, read_records, validate, write_json
from stages.retrieval import RetrieveParams, Retriever, indexer
from stages.schema import Record
from stages.textnorm import abstains


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    n: NonNegativeInt | None = 20  # the first n questions (None: all)


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    base_url: str | None = None  # openai: a server that serves the model (e.g. `vllm serve models/merged`)
    api_key_env: str | None = None
    served_model: str | None = None  # openai: the model name on that server
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(8, gt=0)
    reuse_cache: bool = True
    max_new_tokens: int = Field(256, gt=0)
    max_length: int = Field(4096, gt=0)
    max_calls: int = Field(4, gt=0)  # retrieve calls allowed per question
    hotpotqa: EvalSet = EvalSet(path="data/fetched/eval_hotpotqa.jsonl")
    squad_v2: EvalSet = EvalSet(path="data/fetched/eval_squad_v2.jsonl")
    bootstrap: int = 1000
    seed: int = 0


def make_engine(p: EvaluateParams, model_dir: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    render.ensure_template(tok)
    if p.backend == "vllm":
        return agent.VLLMEngine(model_dir, tok, p.max_new_tokens, p.dtype)
    if p.backend == "openai":
        return agent.OpenAIEngine(p.base_url, p.served_model or model_dir, tok, p.max_new_tokens, p.api_key_env, p.batch_size)
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, p.dtype)).eval()
    tok.padding_side = "left"
    return agent.TransformersEngine(model, tok, p.max_new_tokens, p.batch_size, p.reuse_cache, p.max_length)


def conversations(records: list[Record], retriever: Retriever, scope: str, top_k: int) -> list[agent.Conversation]:
    index_of = indexer(records, retriever, scope)

    def searcher(r: Record):
        index = index_of(r)
        return lambda q: [(h.title or None, h.text) for h in index.query(retriever, [q], top_k)[0]]

    return [agent.Conversation(r.id, r.question, searcher(r)) for r in records]


def drive(engine, convs: list[agent.Conversation], max_calls: int, desc: str) -> float:
    """Run the loop with a progress bar; returns questions per second."""
    columns = [TextColumn(desc), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    start = time.perf_counter()
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(desc, total=len(convs), rate="")

        def tick(n: int) -> None:
            done = bar.tasks[0].completed + n
            bar.update(task, advance=n, rate=f"{done / (time.perf_counter() - start):.2f} q/s")

        agent.run(engine, convs, max_calls, progress=tick)
    return len(convs) / max(time.perf_counter() - start, 1e-9)


def final_message(c: agent.Conversation) -> str:
    """What the model returned last: its final message, or its last reply when it never finished."""
    return c.final.text if c.final else ((c.steps[-1]["reply"] or "") if c.steps else "")


def prediction_row(r: Record, c: agent.Conversation) -> dict:
    return {
        "id": r.id, "question": r.question, "gold": r.meta.get("answers", []), "type": r.meta.get("type"),
        "status": c.status, "retrieve_calls": c.calls, "steps": c.steps, "final_message": final_message(c),
        "answer": c.final.answer if c.final else None, "short_answer": c.final.short_answer if c.final else None,
    }


def score_hotpot(rows: list[dict], p: EvaluateParams) -> dict:
    for row in rows:
        gold = row["gold"][0] if row["gold"] else ""
        row.update(metrics.seed_scores(row["final_message"], gold, row["answer"] or ""))
        short = row["short_answer"] if row["short_answer"] is not None else (row["answer"] or "")
        row["em"], row["f1"] = metrics.hotpot_exact_match(short, gold), metrics.hotpot_f1(short, gold)
    s = lambda key: metrics.summarize([r[key] for r in rows], n=p.bootstrap, seed=p.seed)  # noqa: E731
    names = {"recall": "recall_message", "containing_accuracy": "containing_message", "answer_recall": "recall_answer",
             "answer_containing_accuracy": "containing_answer", "em": "em", "f1": "f1"}
    calls = [r["retrieve_calls"] for r in rows]
    return {
        "n": len(rows),
        **{name: s(key) for name, key in names.items()},
        "multihop_rate": metrics.summarize([float(c >= 2) for c in calls], n=p.bootstrap, seed=p.seed),
        "mean_retrieve_calls": round(sum(calls) / max(len(calls), 1), 3),
        "unparsable": sum(r["status"] == "unparsable" for r in rows),
        "hop_cap_stops": sum(r["status"] == "hop_cap" for r in rows),
        "length_stops": sum(r["status"] == "length" for r in rows),
        "by_type": metrics.by_question_type(rows, ["containing_message", "em", "f1"], n=p.bootstrap, seed=p.seed),
        "by_retrieve_calls": metrics.by_retrieve_calls(rows, ["containing_message", "em", "f1"], cap=p.max_calls, n=p.bootstrap, seed=p.seed),
    }


def squad_prediction(row: dict) -> str | None:
    """The answer string scored for SQuAD v2: the short answer, "" for an abstention, None if unparsable."""
    if row["answer"] is None:
        return None
    if row["short_answer"] not in (None, "", "none"):
        return row["short_answer"]
    return "" if abstains(row["answer"]) else row["answer"]


def score_squad(rows: list[dict], p: EvaluateParams) -> dict:
    preds = [squad_prediction(r) for r in rows]
    golds = [r["gold"] for r in rows]
    for r, pred, g in zip(rows, preds, golds):
        r["prediction"] = pred
        r["em"] = 0.0 if pred is None else metrics.squad_exact_match(pred, g)
        r["f1"] = 0.0 if pred is None else metrics.squad_f1(pred, g)
    table = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.squad_v2_table(preds, golds).items()}
    table["exact_match_ci"] = metrics.summarize([r["em"] for r in rows], n=p.bootstrap, seed=p.seed)
    table["f1_ci"] = metrics.summarize([r["f1"] for r in rows], n=p.bootstrap, seed=p.seed)
    return table


def write_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def evaluate(p: EvaluateParams, rp: RetrieveParams, model_dir: str, out: Path, name: str) -> dict:
    if not Path(model_dir).exists() and p.backend != "openai":
        raise StageError(f"{model_dir}: model folder not found")
    engine = make_engine(p, model_dir)
    retriever = Retriever(rp)
    report: dict = {"model": name}
    for source, es, scorer in (("hotpotqa", p.hotpotqa, score_hotpot), ("squad_v2", p.squad_v2, score_squad)):
        records = read_records(es.path)[: es.n]
        if not records:
            continue
        convs = conversations(records, retriever, rp.scope if source == "hotpotqa" else "question", rp.top_k if source == "hotpotqa" else 1)
        qps = drive(engine, convs, p.max_calls, f"{name} {source}")
        rows = [prediction_row(r, c) for r, c in zip(records, convs)]
        report[source] = {**scorer(rows, p), "questions_per_s": round(qps, 4)}
        write_jsonl(out / f"{source}.jsonl", rows)
    return report


def write_plots(report: dict, folder: Path) -> None:
    h = report.get("hotpotqa")
    if not h:
        return
    write_csv(folder / "by_type.csv", ["type", "n", "containing_accuracy", "em", "f1"],
              [[t, g["n"], g["containing_message"]["value"], g["em"]["value"], g["f1"]["value"]] for t, g in h["by_type"].items()])
    write_csv(folder / "by_retrieve_calls.csv", ["retrieve_calls", "n", "containing_accuracy", "em", "f1"],
              [[c, g["n"], g["containing_message"]["value"], g["em"]["value"], g["f1"]["value"]] for c, g in h["by_retrieve_calls"].items()])


def main(
    model: Path = typer.Option(..., help="a Hugging Face model folder (models/base or models/merged)"),
    name: str = typer.Option(..., help="base or finetuned: names the outputs"),
    params: Path = typer.Option(Path("params.yaml")),
    out: Path = typer.Option(None, help="predictions folder (default data/eval/NAME)"),
    metrics_path: Path = typer.Option(None, "--metrics", help="default metrics/eval_NAME.json"),
    plots: Path = typer.Option(None, help="default metrics/eval_NAME/"),
):
    """Answer the eval sets with the retrieve loop and score them."""
    raw = load_yaml(params)
    p = validate(EvaluateParams, raw.get("evaluate", {}), "evaluate")
    rp = validate(RetrieveParams, raw.get("retrieve", {}), "retrieve")
    out = out or Path("data/eval") / name
    report = evaluate(p, rp, str(model), out, name)
    write_json(metrics_path or Path(f"metrics/eval_{name}.json"), report)
    write_plots(report, plots or Path(f"metrics/eval_{name}"))
    for source in ("hotpotqa", "squad_v2"):
        if source in report:
            r = report[source]
            keys = ["recall", "containing_accuracy", "em", "f1"] if source == "hotpotqa" else ["exact_match", "f1", "parseable"]
            print(f"{name} {source}: " + ", ".join(f"{k} {r[k]['value'] if isinstance(r[k], dict) else r[k]}" for k in keys))
