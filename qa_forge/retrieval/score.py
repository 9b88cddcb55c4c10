"""retrieve: embed the eval sets' paragraphs (filling the embedding cache) and score the retriever
alone, before any LLM is involved.

Per eval source (data/fetched/eval_<source>.jsonl), with the question text as the query:
recall@k (fraction of a question's supporting paragraphs in the top k, averaged), all@k (every
supporting paragraph in the top k) and MRR (1 / rank of the first supporting paragraph). Where
the data has gold sub-questions (multi-hop records whose sub-questions carry question text, e.g.
MuSiQue), each sub-question is also used as the query for its own paragraph; HotpotQA has none
(n = 0). Writes metrics/retrieval.json and data/retrieval/<source>.jsonl (each question's top
paragraphs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qa_forge.core.groups import group_rows
from qa_forge.core.io import read_records
from qa_forge.core.records import Record
from qa_forge.retrieval import metrics as M
from qa_forge.retrieval.index import Index, indexer, record_passages, supporting_passages
from qa_forge.retrieval.retriever import RetrieveParams, Retriever


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def gold_sub_questions(r: Record) -> list[tuple[str, tuple[str, str]]]:
    """(sub-question text, its paragraph) for multi-hop records whose sub-questions all have text;
    unanswerable hops (no supporting paragraph) are left out."""
    if not r.multihop or not r.sub_questions or not all(sq.question.strip() for sq in r.sub_questions):
        return []
    return [(sq.question, (sq.title or "", sq.paragraph)) for sq in r.sub_questions if sq.paragraph and not sq.unanswerable]


def score_source(records: Sequence[Record], retriever: Retriever, scope: str, ks: Sequence[int]) -> tuple[dict, list[dict]]:
    """Metrics for one eval file and one row per question (its top paragraphs)."""
    ks = sorted(set(ks))
    depth = max(ks)
    index_of = indexer(records, retriever, scope)
    scored = [r for r in records if supporting_passages(r) and record_passages(r)]
    skipped = len(records) - len(scored)
    if not scored:
        return {"n": 0, "skipped": skipped}, []
    rows, q_rows, sub_rows, sub_all, sizes = [], [], [], [], []
    qvecs = retriever.encode_queries([r.question for r in scored])
    for r, qv in zip(scored, qvecs):
        index: Index = index_of(r)
        sizes.append(len(index))
        gold = supporting_passages(r)
        gold_set = set(gold)
        hits = index.search(qv, len(index))[0]  # the full ranking: MRR looks past the top k
        ranked = [(h.title, h.text) for h in hits]
        row = {f"recall@{k}": M.recall_at_k(ranked, gold, k) for k in ks}
        row |= {f"all@{k}": M.all_found_at_k(ranked, gold, k) for k in ks}
        row["mrr"] = M.reciprocal_rank(ranked, gold)
        row["type"] = r.meta.get("type")
        q_rows.append(row)
        out_row = {
            "id": r.id,
            "type": r.meta.get("type"),
            "supporting": [t for t, _ in gold],
            "first_support_rank": next((i for i, p in enumerate(ranked, 1) if p in gold_set), None),
            "top": [{"title": h.title, "score": round(h.score, 4), "support": (h.title, h.text) in gold_set} for h in hits[:depth]],
        }
        subs = gold_sub_questions(r)
        if subs:
            svecs = retriever.encode_queries([q for q, _ in subs])
            ranks = []
            for (_, para), sv in zip(subs, svecs):
                sranked = [(h.title, h.text) for h in index.search(sv, len(index))[0]]
                sub_rows.append(
                    {f"recall@{k}": M.recall_at_k(sranked, [para], k) for k in ks} | {"mrr": M.reciprocal_rank(sranked, [para])}
                )
                ranks.append(sranked.index(para) + 1 if para in sranked else None)
            sub_all.append({f"all@{k}": float(all(rk is not None and rk <= k for rk in ranks)) for k in ks})
            out_row["sub_question_ranks"] = ranks
        rows.append(out_row)

    keys = [f"recall@{k}" for k in ks] + [f"all@{k}" for k in ks] + ["mrr"]
    out: dict = {
        "n": len(q_rows),
        "skipped": skipped,
        "paragraphs_per_index": _mean(sizes),
        "supporting_per_question": _mean([len(supporting_passages(r)) for r in scored]),
    }
    out["question"] = {m: _mean([row[m] for row in q_rows]) for m in keys}
    sub = {"n": len(sub_all), "n_sub_questions": len(sub_rows)}
    if sub_rows:
        sub |= {f"recall@{k}": _mean([s[f"recall@{k}"] for s in sub_rows]) for k in ks}
        sub |= {f"all@{k}": _mean([s[f"all@{k}"] for s in sub_all]) for k in ks}
        sub["mrr"] = _mean([s["mrr"] for s in sub_rows])
    out["sub_questions"] = sub
    types = group_rows([row for row in q_rows if row["type"]], "type")
    if types:
        out["by_type"] = {
            t: {"n": len(rs), **{m: _mean([row[m] for row in rs]) for m in ("recall@2", "all@2", "mrr") if m in rs[0]}}
            for t, rs in sorted(types.items())
        }
    return out, rows


def score_files(
    p: RetrieveParams, eval_files: dict[str, Path], limit: int | None = None, progress: bool = True
) -> tuple[dict, dict[str, list[dict]], int]:
    """(metrics, rows per source, texts the model embedded this run: queries + uncached passages)."""
    # every file read before the model loads: a bad one fails at once
    inputs = {name: read_records(path)[:limit] if limit else read_records(path) for name, path in eval_files.items()}
    retriever = Retriever(p.retriever(), progress=progress)
    report: dict = {"model": retriever.identity, "scope": p.scope, "ks": sorted(set(p.ks)), "sources": {}}
    outputs = {}
    for name, records in inputs.items():
        report["sources"][name], outputs[name] = score_source(records, retriever, p.scope, p.ks)
    return report, outputs, retriever.encoded
