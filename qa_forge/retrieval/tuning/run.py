"""The train_retriever stage's work: pairs -> split -> hard negatives -> training -> the tuned model
folder, and the untuned vs tuned report.

Switch off (`retriever.finetune: false`): the folder holds only UNTUNED.json naming `retrieve.model`,
written without reading any data, so its bytes (and its DVC hash) stay the same whatever changed
upstream: DVC re-runs this cheap stage, never `retrieve` or the evaluations after it.

Switch on: the folder is a SentenceTransformer model plus TUNED.json (what it was tuned from);
`retrieve` and evaluate search with it (qa_forge.retrieval.retriever.effective_retriever). The report
scores the untuned and the tuned retriever side by side with MRR@10, NDCG@10, recall@1/2/5 and all@2:
- held-out: each held-out query (hop queries and whole questions of the held-out records) against
  every paragraph of the held-out records (their contexts and hop paragraphs), gold = every positive
  of the query;
- each evaluation source (data/fetched/eval_<source>.jsonl): its questions against `retrieve.scope`'s
  index (question: the question's own paragraphs, as the retrieve stage and evaluate search), gold =
  the supporting paragraphs.

The mining pool is every paragraph of the training records less the held-out positives and the
evaluation paragraphs (by text): nothing the report scores on is ever a training negative.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from qa_forge.core.io import UserError, atomic_dir, write_json
from qa_forge.core.progress import Progress
from qa_forge.core.records import Record
from qa_forge.retrieval.index import Index, indexer, record_passages, supporting_passages
from qa_forge.retrieval.metrics import mean_ranking_metrics
from qa_forge.retrieval.retriever import (
    TUNED_MARKER,
    UNTUNED_MARKER,
    Passage,
    RetrieveParams,
    Retriever,
    effective_retriever,
)
from qa_forge.retrieval.tuning.mining import MiningParams, Negative, mine_negatives
from qa_forge.retrieval.tuning.pairs import EvalParagraphs, Pair, PairsParams, build_pairs, normalize_text, positives_by_query, split_pairs
from qa_forge.retrieval.tuning.params import TuneParams

RECALL_KS = (1, 2, 5)
ALL_KS = (2,)
CUTOFF = 10  # mrr@10, ndcg@10


class RetrieverTuningParams(BaseModel):
    """params.yaml `retriever:` the switch, and the pairs, mining and training of the fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    finetune: bool  # off: retrieve and evaluate use `retrieve.model` as it is
    pairs: PairsParams
    mining: MiningParams
    tune: TuneParams


# --- the switch off -------------------------------------------------------------------------------


def untuned_marker(rp: RetrieveParams) -> dict:
    """UNTUNED.json: the model retrieve and evaluate use as it is. Only retrieve.model and revision:
    a change of anything else (data, the tuning params, the retriever's batch size) leaves the bytes."""
    return {"finetune": False, "model": rp.model, "revision": rp.revision}


def write_untuned(rp: RetrieveParams, out: str | Path) -> None:
    with atomic_dir(out) as tmp:
        write_json(tmp / UNTUNED_MARKER, untuned_marker(rp))


# --- pools and scoring ----------------------------------------------------------------------------


def record_paragraphs(r: Record) -> list[Passage]:
    """A record's paragraphs: its context (or its hops' paragraphs, record_passages) and every hop's paragraph."""
    hops = [(sq.title or "", sq.paragraph) for sq in r.sub_questions if sq.paragraph.strip()]
    return list(dict.fromkeys([*record_passages(r), *hops]))


def unique_by_text(passages: Iterable[Passage], skip: set[str] = frozenset()) -> list[Passage]:
    """First passage per normalised text, texts in `skip` left out."""
    out: dict[str, Passage] = {}
    for t, x in passages:
        k = normalize_text(x)
        if k not in skip:
            out.setdefault(k, (t, x))
    return list(out.values())


def _rounded(m: Mapping[str, float | int]) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}


def score_pool(retriever: Retriever, queries: Sequence[str], gold: Sequence[set[str]], pool: Sequence[Passage]) -> dict:
    """MRR@10, NDCG@10, recall@k, all@k (and n) of `queries` against one shared pool; gold and ranks by
    normalised paragraph text."""
    if not queries or not pool:
        return {"n": 0}
    index = Index.build(pool, retriever)
    ids = [normalize_text(x) for _, x in pool]
    hits = index.search(retriever.encode_queries(list(queries)), CUTOFF)
    runs = [([ids[h.idx] for h in row], g) for row, g in zip(hits, gold)]
    return _rounded(mean_ranking_metrics(runs, RECALL_KS, ALL_KS, CUTOFF))


def score_source(retriever: Retriever, records: Sequence[Record], scope: str) -> dict:
    """An evaluation source as the retrieve stage searches it: each question against its scope's index,
    gold its supporting paragraphs (by title and text)."""
    scored = [r for r in records if supporting_passages(r) and record_passages(r)]
    if not scored:
        return {"n": 0}
    index_of = indexer(scored, retriever, scope)
    vecs = retriever.encode_queries([r.question for r in scored])
    runs = []
    for r, v in zip(scored, vecs):
        ranked = [(h.title, h.text) for h in index_of(r).search(v, CUTOFF)[0]]
        runs.append((ranked, set(supporting_passages(r))))
    return _rounded(mean_ranking_metrics(runs, RECALL_KS, ALL_KS, CUTOFF))


class Heldout:
    """The held-out queries, their gold and the pool they are ranked in."""

    def __init__(self, heldout: Sequence[Pair], all_pairs: Sequence[Pair], records: Sequence[Record]):
        positives = positives_by_query(all_pairs)
        by_query = positives_by_query(heldout)
        self.queries = list(by_query)
        self.kinds = [by_query[q][0].kind for q in self.queries]
        self.gold = [{normalize_text(p.paragraph) for p in positives[q]} for q in self.queries]
        ids = {p.record_id for p in heldout}
        gold_passages = [(p.title, p.paragraph) for q in self.queries for p in positives[q]]
        self.pool = unique_by_text([*(x for r in records if r.id in ids for x in record_paragraphs(r)), *gold_passages])
        self.record_ids = ids

    def score(self, retriever: Retriever) -> dict:
        out = {"all": score_pool(retriever, self.queries, self.gold, self.pool)}
        for kind in ("hop", "question"):
            at = [i for i, k in enumerate(self.kinds) if k == kind]
            out[kind] = score_pool(retriever, [self.queries[i] for i in at], [self.gold[i] for i in at], self.pool)
        return out


def score_all(retriever: Retriever, heldout: Heldout, evals: Mapping[str, Sequence[Record]], scope: str) -> dict:
    return {"heldout": heldout.score(retriever), "sources": {name: score_source(retriever, recs, scope) for name, recs in evals.items()}}


def side_by_side(untuned: dict, tuned: dict) -> dict:
    """{"heldout": {part: {"untuned": m, "tuned": m}}, "sources": {name: {"untuned": m, "tuned": m}}}."""
    return {
        "heldout": {part: {"untuned": untuned["heldout"][part], "tuned": tuned["heldout"][part]} for part in untuned["heldout"]},
        "sources": {name: {"untuned": untuned["sources"][name], "tuned": tuned["sources"][name]} for name in untuned["sources"]},
    }


# --- the switch on --------------------------------------------------------------------------------


def mining_pool(records: Sequence[Record], heldout: Heldout, evals: Iterable[Record]) -> list[Passage]:
    """Every paragraph of the training records, less the held-out records' paragraphs and positives and
    the evaluation paragraphs (by text): the report's paragraphs are never training negatives."""
    skip = {normalize_text(x) for _, x in heldout.pool} | EvalParagraphs(evals).texts
    return unique_by_text((x for r in records if r.id not in heldout.record_ids for x in record_paragraphs(r)), skip)


def finetune_retriever(
    params: RetrieverTuningParams,
    rp: RetrieveParams,
    records: Sequence[Record],
    evals: Mapping[str, Sequence[Record]],
    out: str | Path,
    progress: bool = True,
    source: str = "the filtered records",
) -> tuple[dict, dict]:
    """Fine-tune `rp`'s model on `records`' pairs, save it to `out` (with TUNED.json) and score it
    against the untuned model. Returns (the metrics report, timings in seconds)."""
    from qa_forge.retrieval.tuning.train import train_retriever, training_rows  # torch: only when training

    out = Path(out)
    t0 = time.perf_counter()
    pairs = build_pairs(records)
    if not pairs:
        raise UserError(f"{source}: no (query, paragraph) pairs to fine-tune the retriever on (no answerable hop has a paragraph)")
    eval_records = [r for recs in evals.values() for r in recs]
    split = split_pairs(pairs, eval_records, params.pairs)
    heldout = Heldout(split.heldout, pairs, records)
    pool = mining_pool(records, heldout, eval_records)
    untuned = Retriever(rp.retriever(), progress=progress)

    positives = {q: [p.paragraph for p in ps] for q, ps in positives_by_query(pairs).items()}
    queries = list(positives_by_query(split.train))
    bars: dict[str, Progress] = {}

    def mined(source: str, done: int, total: int) -> None:
        bar = bars.get(source) or bars.setdefault(source, Progress(f"mining {source} negatives", total, progress))
        bar.update(done)

    try:
        negatives = mine_negatives(queries, positives, pool, untuned, params.mining, progress=mined)
    finally:
        for bar in bars.values():
            bar.close()
    by_query: dict[str, list[Negative]] = dict(zip(queries, negatives))
    rows, rows_dropped = training_rows(split.train, by_query, params.tune.negatives)
    if not rows:
        raise UserError(
            f"retriever fine-tuning: no training rows ({len(split.train)} training pairs, {rows_dropped} without a mined negative): "
            "more records, a larger mining window (retriever.mining) or retriever.tune.negatives 0"
        )
    t_mined = time.perf_counter()

    before = score_all(untuned, heldout, evals, rp.scope)
    t_scored_untuned = time.perf_counter()

    train_bars: list[Progress] = []  # made at the first logged step, when the trainer knows its step count

    def step(done: int, total: int, loss: float) -> None:
        if not train_bars:
            train_bars.append(Progress("training the retriever", total, progress))
        train_bars[0].update(done, f"loss {loss:.4f}")

    base = rp.retriever()
    with atomic_dir(out) as tmp:
        try:
            report = train_retriever(rows, base, params.tune, tmp, progress=step)
        finally:
            for bar in train_bars:
                bar.close()
        write_json(
            tmp / TUNED_MARKER, {"finetune": True, "base": {"model": rp.model, "revision": rp.revision, "identity": untuned.identity}}
        )
    t_trained = time.perf_counter()

    tuned = Retriever(effective_retriever(base, out), progress=progress)
    after = score_all(tuned, heldout, evals, rp.scope)
    t_end = time.perf_counter()

    sources = [n.source for negs in negatives for n in negs]
    metrics = {
        "finetune": True,
        "model": {"untuned": untuned.identity, "tuned": tuned.identity},
        "pairs": {
            "records": len(records),
            "total": len(pairs),
            "hop": sum(p.kind == "hop" for p in pairs),
            "question": sum(p.kind == "question" for p in pairs),
            "train": len(split.train),
            "heldout": len(split.heldout),
            "dropped": len(split.dropped),
            "train_queries": len(queries),
            "heldout_queries": len(heldout.queries),
            "heldout_records": len(heldout.record_ids),
        },
        "overlap": split.overlap.as_dict(),
        "mining": {
            "pool": len(pool),
            "queries": len(queries),
            "bm25": sources.count("bm25"),
            "dense": sources.count("dense"),
            "queries_without_negatives": sum(not negs for negs in negatives),
        },
        "training": {
            "rows": report.rows,
            "rows_dropped": rows_dropped,
            "negatives_per_row": params.tune.negatives,
            "steps": report.steps,
            "loss_first": round(report.losses[0], 4) if report.losses else None,
            "loss_last": round(report.losses[-1], 4) if report.losses else None,
        },
        "heldout_pool": len(heldout.pool),
        "scope": rp.scope,
        **side_by_side(before, after),
    }
    timings = {
        "pairs_and_mining_s": round(t_mined - t0, 1),
        "scoring_untuned_s": round(t_scored_untuned - t_mined, 1),
        "training_s": round(t_trained - t_scored_untuned, 1),
        "scoring_tuned_s": round(t_end - t_trained, 1),
        "total_s": round(t_end - t0, 1),
    }
    return metrics, timings
