"""The model answers each eval set's questions by calling retrieve as often as it needs; every
prediction is kept with its steps and scored by the set's task (`tasks.TASKS`), each score with
N and a 95 % bootstrap interval."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from qa_forge.chat import render
from qa_forge.core.io import UserError, atomic_path, check_model_folder, model_errors, read_records
from qa_forge.core.progress import Progress
from qa_forge.core.records import Record
from qa_forge.eval import agent
from qa_forge.eval.engines import OpenAIEngine, TransformersEngine, VLLMEngine
from qa_forge.eval.tasks import TASKS, Scoring, group_keys, plot_rows, value
from qa_forge.llm.identity import served_name
from qa_forge.llm.serving import check_serve_command, serve_log_dir, served
from qa_forge.retrieval.index import Index, indexer
from qa_forge.retrieval.retriever import Retriever, RetrieverParams, Scope


class EvalSet(BaseModel):
    """`evaluate.sets.<name>`: a file of fetched records and how its retrieve tool searches."""

    model_config = ConfigDict(extra="forbid")
    path: str
    n: PositiveInt | None  # the first n questions (null: all); a set of none would score nothing
    scope: Scope  # question: the question's own paragraphs | global: every paragraph of the file
    top_k: PositiveInt  # paragraphs per retrieve call


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["transformers", "vllm", "openai"]
    base_url: str | None  # openai: a server that serves the model (`vllm serve models/merged --served-model-name NAME`)
    api_key_env: str | None
    # openai: the model's name on that server. A local model folder is served under its content hash
    # (null: that name, `qa-forge served-name FOLDER`); set, it must be that name
    served_model: str | None
    # openai: the command that serves the model folder under its content-hash name for this stage
    # (`vllm serve ...`; qa_forge.llm.serving), stopped when the stage ends; null: a server that runs already
    serve_command: str | None
    serve_timeout_s: PositiveFloat  # serve_command: how long the server may take to list the model (loading a 7B: minutes)
    timeout_s: PositiveFloat  # openai: per request
    max_retries: NonNegativeInt  # openai: the SDK's retries (429, 5xx, timeouts)
    dtype: Literal["float32", "bfloat16", "float16"]
    tensor_parallel_size: PositiveInt  # vllm: GPUs one copy of the model is split over (more copies: serve it, README)
    batch_size: int = Field(gt=0)
    reuse_cache: bool
    # transformers with reuse_cache: new tokens per batched step; a reply not ended goes on at the next step,
    # and a conversation that ended frees its row for a waiting one (null: a step runs to the longest reply)
    chunk_tokens: PositiveInt | None
    max_new_tokens: int = Field(gt=0)
    max_length: int = Field(gt=0)
    max_calls: int = Field(gt=0)  # retrieve calls allowed per question
    abstain_phrases: list[str]  # a reply with one of these abstains (SQuAD v2 no-answer)
    sets: dict[str, EvalSet]
    bootstrap: int = Field(gt=0)
    seed: int

    @model_validator(mode="after")
    def _serve_command_fits(self):
        check_serve_command(self.serve_command, self.backend, self.base_url)
        return self

    @model_validator(mode="after")
    def _known_sets(self):
        unknown = [name for name in self.sets if name not in TASKS]
        if unknown:
            raise ValueError(f"unknown eval set(s) {unknown} in evaluate.sets: choose from {', '.join(TASKS)}")
        return self

    def scoring(self) -> Scoring:
        return Scoring(self.bootstrap, self.seed, self.max_calls, tuple(self.abstain_phrases))


def served_model_name(p: EvaluateParams, model_dir: str) -> tuple[str, str | None]:
    """(the name to ask the server for, the local folder it stands for). A local folder is asked for
    by its content hash, so only a server running exactly that build answers (the engine checks the
    server's list before the first question); `served_model`, if set, must be that name. Without a
    local folder (a hub id) there is nothing to hash: `served_model`, else the id itself."""
    folder = Path(model_dir)
    if not folder.exists():
        return p.served_model or model_dir, None
    check_model_folder(folder, config=None)  # the weights the name hashes
    name = served_name(folder)
    if p.served_model is not None and p.served_model != name:
        raise UserError(
            f"param 'evaluate.served_model': {p.served_model} is not the model in {folder}, whose content hash names it {name} "
            f"(set served_model: null to ask for that name)"
        )
    return name, str(folder)


@contextmanager
def make_engine(p: EvaluateParams, model_dir: str, log_dir: str | Path) -> Iterator:
    """The engine for the block; with `serve_command`, the server it asks runs for the block only
    (its log in `log_dir`)."""
    from transformers import AutoTokenizer

    served_as = served_model_name(p, model_dir) if p.backend == "openai" else None  # before anything loads
    with model_errors(model_dir, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(model_dir)
    # the prompt is rendered here for every backend (a server gets token ids), so a base model without
    # a template gets the fallback here, never a server's own guess
    render.ensure_template(tok)
    if served_as is None:
        yield local_engine(p, model_dir, tok)
        return
    name, folder = served_as
    # serve_command: the folder served under its content-hash name for this block only (OpenAIEngine
    # checks the name is listed either way)
    server = (
        served(p.serve_command, model_dir, name, p.base_url, p.api_key_env, p.serve_timeout_s, log_dir)
        if p.serve_command
        else nullcontext()
    )
    with server:
        yield OpenAIEngine(
            p.base_url, name, tok, p.max_new_tokens, p.max_length, p.api_key_env, p.batch_size, p.timeout_s, p.max_retries, folder
        )


def local_engine(p: EvaluateParams, model_dir: str, tok):
    if p.backend == "vllm":
        return VLLMEngine(model_dir, tok, p.max_new_tokens, p.dtype, tensor_parallel_size=p.tensor_parallel_size)
    import torch
    from transformers import AutoModelForCausalLM

    with model_errors(model_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, p.dtype)).eval()
    tok.padding_side = "left"
    return TransformersEngine(model, tok, p.max_new_tokens, p.batch_size, p.reuse_cache, p.max_length, chunk_tokens=p.chunk_tokens)


def record_indexes(records: list[Record], retriever: Retriever, scope: str) -> list[Index]:
    """The index each record's retrieve calls search (scope global: one shared by all)."""
    index_of = indexer(records, retriever, scope)
    return [index_of(r) for r in records]


def conversations(
    records: list[Record], retriever: Retriever, scope: str, top_k: int, indexes: list[Index] | None = None
) -> list[agent.Conversation]:
    """One conversation per record, its retrieve(query) the top-k of the record's index (`indexes`,
    else built here)."""
    indexes = record_indexes(records, retriever, scope) if indexes is None else indexes

    def searcher(index: Index):
        return lambda q: [(h.title or None, h.text) for h in index.query(retriever, [q], top_k)[0]]

    return [agent.Conversation(r.id, r.question, searcher(index)) for r, index in zip(records, indexes)]


def single_retrievals(records: list[Record], indexes: list[Index], retriever: Retriever, ks: Sequence[int]) -> list[list[str | None]]:
    """Per record, the titles of one retrieval with its question alone from its index at k = ks[i]
    (k 0: none), the questions embedded in one batch: what retrieving once, with as many paragraphs
    as the model's calls got, would have found."""
    todo = [i for i, k in enumerate(ks) if k > 0]
    out: list[list[str | None]] = [[] for _ in records]
    if not todo:
        return out
    vecs = retriever.encode_queries([records[i].question for i in todo])
    for i, vec in zip(todo, vecs):
        out[i] = [h.title or None for h in indexes[i].search(vec, ks[i])[0]]
    return out


def supporting_titles(r: Record) -> list[str]:
    return list(r.meta.get("supporting_titles") or [])


def covers(gold: Sequence[str], titles: Iterable[str | None]) -> float:
    """1.0 when every gold title is among `titles`, else 0.0."""
    return float(set(gold) <= set(titles))


def coverage_fields(r: Record, c: agent.Conversation, single: Sequence[str | None]) -> dict:
    """For a record with supporting titles: them, whether the model's retrieve calls together found
    them all (`covered`), and whether the one question-only retrieval `single` did (`covered_single`)."""
    gold = supporting_titles(r)
    if not gold:
        return {}
    found = [t for step in c.steps for t in step.get("retrieved", ())]
    return {"supporting_titles": gold, "covered": covers(gold, found), "covered_single": covers(gold, single)}


def drive(engine, convs: list[agent.Conversation], max_calls: int, desc: str) -> float:
    """Run the loop with progress (a bar on a terminal, plain lines in a log); returns questions per second."""
    start = time.perf_counter()
    bar, done = Progress(desc, len(convs)), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        bar.update(done)

    agent.run(engine, convs, max_calls, progress=tick)
    bar.close()
    return len(convs) / max(time.perf_counter() - start, 1e-9)


def final_message(c: agent.Conversation) -> str:
    """What the model returned last: its final message, or its last reply when it never finished."""
    return c.final.text if c.final else ((c.steps[-1]["reply"] or "") if c.steps else "")


def prediction_row(r: Record, c: agent.Conversation, single: Sequence[str | None]) -> dict:
    """A record's prediction row; `single`: the titles of its question-only retrieval at
    retrieve_calls x top_k (`single_retrievals`), for the coverage fields."""
    return {
        "id": r.id,
        "question": r.question,
        "gold": r.meta.get("answers", []),
        "type": r.meta.get("type"),
        "status": c.status,
        "retrieve_calls": c.calls,
        "steps": c.steps,
        "final_message": final_message(c),
        "answer": c.final.answer if c.final else None,
        "short_answer": c.final.short_answer if c.final else None,
        **coverage_fields(r, c, single),
    }


def evaluate(p: EvaluateParams, rp: RetrieverParams, model_dir: str, name: str) -> tuple[dict, dict[str, list[dict]], dict]:
    """(report: {"model": name, <set>: scores}, prediction rows per set, timings: questions per
    second per set). Every set is read and the model folder checked before the model loads: a bad
    input fails in a second, not after a set."""
    if not p.sets:
        raise UserError("param 'evaluate.sets': no eval sets: nothing to evaluate")
    inputs = {set_name: read_records(es.path)[: es.n] for set_name, es in p.sets.items()}
    local = p.backend != "openai"  # openai: a server holds the model; a local folder gives the tokenizer and the served name
    if local or Path(model_dir).exists():
        check_model_folder(model_dir, config="config.json" if local else None)
    report: dict = {"model": name}
    predictions: dict[str, list[dict]] = {}
    timings: dict[str, dict] = {}
    with make_engine(p, model_dir, serve_log_dir(rp.cache_dir)) as engine:
        retriever = Retriever(rp)
        for set_name, es in p.sets.items():
            records = inputs[set_name]
            indexes = record_indexes(records, retriever, es.scope)
            convs = conversations(records, retriever, es.scope, es.top_k, indexes)
            qps = drive(engine, convs, p.max_calls, f"{name} {set_name}")
            # one question-only retrieval per record with supporting titles, as many paragraphs as its calls got
            ks = [c.calls * es.top_k if supporting_titles(r) else 0 for r, c in zip(records, convs)]
            singles = single_retrievals(records, indexes, retriever, ks)
            rows = [prediction_row(r, c, single) for r, c, single in zip(records, convs, singles)]
            report[set_name] = TASKS[set_name].score(rows, p.scoring())
            predictions[set_name] = rows
            timings[set_name] = {"questions": len(rows), "questions_per_s": round(qps, 4)}
    return report, predictions, timings


def metrics_view(report: dict) -> dict:
    """The report as the metrics file holds it: the scores, without the per-group sections the plot
    tables show (dozens of keys `dvc metrics diff` would list for every group)."""
    return {
        k: ({m: v for m, v in section.items() if m not in group_keys(TASKS[k])} if k in TASKS else section) for k, section in report.items()
    }


def write_plots(report: dict, folder: Path) -> None:
    """Each set's plot tables (the registry's `plots`) as CSVs for `dvc plots`."""
    for set_name, task in TASKS.items():
        for table in task.plots if set_name in report else ():
            header, rows = plot_rows(table, report[set_name])
            with atomic_path(folder / table.file) as tmp, open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(header)
                w.writerows(rows)


def headline(report: dict) -> list[str]:
    """One printout line per set: its headline metrics."""
    return [f"{report['model']} {s}: " + ", ".join(f"{k} {value(report[s], k)}" for k in TASKS[s].headline) for s in TASKS if s in report]
