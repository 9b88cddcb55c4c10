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

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import typer

from stages import metrics as M
from stages.io import StageError, load_yaml, read_records, validate, write_json
from stages.retrieval import Index, RetrieveParams, Retriever, indexer, record_passages, supporting_passages
from stages.schema import Record


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
    types = M.group_rows([row for row in q_rows if row["type"]], "type")
    if types:
        out["by_type"] = {
            t: {"n": len(rs), **{m: _mean([row[m] for row in rs]) for m in ("recall@2", "all@2", "mrr") if m in rs[0]}}
            for t, rs in sorted(types.items())
        }
    return out, rows


def write_rows_dir(out: Path, files: dict[str, list[dict]]) -> None:
    """Write `{name}.jsonl` files into a temporary folder, then swap it in for `out`."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, rows in files.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(
    p: RetrieveParams, eval_files: dict[str, Path], limit: int | None = None, progress: bool = True
) -> tuple[dict, dict[str, list[dict]], int]:
    """(metrics, rows per source, texts the model embedded this run: queries + uncached passages)."""
    retriever = Retriever(p.retriever(), progress=progress)
    report: dict = {"model": retriever.identity, "scope": p.scope, "ks": sorted(set(p.ks)), "sources": {}}
    outputs = {}
    for name, path in eval_files.items():
        records = read_records(path)[:limit] if limit else read_records(path)
        report["sources"][name], outputs[name] = score_source(records, retriever, p.scope, p.ks)
    return report, outputs, retriever.encoded


def main(
    params: Path = typer.Option(Path("params.yaml")),
    fetched: Path = typer.Option(Path("data/fetched"), help="folder with eval_<source>.jsonl"),
    out: Path = typer.Option(Path("data/retrieval")),
    metrics: Path = typer.Option(Path("metrics/retrieval.json")),
    limit: int = typer.Option(None, help="score only the first N questions of each eval file"),
):
    """Score the retriever alone: recall@k, all@k and MRR of the supporting paragraphs."""
    p = validate(RetrieveParams, load_yaml(params).get("retrieve", {}), "retrieve")
    files = {f.stem.removeprefix("eval_"): f for f in sorted(fetched.glob("eval_*.jsonl"))}
    if not files:
        raise StageError(f"{fetched}: no eval_*.jsonl files (run the fetch stage first)")
    report, outputs, embedded = run(p, files, limit=limit)
    write_rows_dir(out, outputs)
    write_json(metrics, report)
    for name, row in report["sources"].items():
        q = row.get("question", {})
        cols = "  ".join(f"{m} {q[m]:.3f}" for m in q if q[m] is not None and (m.startswith("recall@") or m == "mrr"))
        sub = row.get("sub_questions", {})
        print(f"retrieve {p.scope:8} {name:12} n {row['n']:5}  {cols}  sub-questions n {sub.get('n', 0)}")
    print(f"retrieve embedded {embedded} texts with {report['model']} (the rest came from {p.cache_dir})")
