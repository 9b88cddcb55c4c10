"""Ranking metrics of a retriever: recall@k, all@k, reciprocal rank, MRR@k and NDCG@k (binary
relevance), per query, and their means over a set of queries."""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Sequence


def recall_at_k(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """Fraction of the (distinct) gold items among the first k ranked."""
    gold = set(gold)
    if not gold:
        raise ValueError("recall@k needs at least one gold item")
    return len(gold & set(ranked[:k])) / len(gold)


def all_found_at_k(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """1 if every gold item is among the first k ranked, else 0."""
    return float(recall_at_k(ranked, gold, k) == 1.0)


def reciprocal_rank(ranked: Sequence[Hashable], gold: Collection[Hashable]) -> float:
    """1 / rank of the first gold item (ranks from 1); 0 if none is ranked."""
    gold = set(gold)
    if not gold:
        raise ValueError("reciprocal rank needs at least one gold item")
    return next((1.0 / i for i, x in enumerate(ranked, 1) if x in gold), 0.0)


def reciprocal_rank_at_k(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """MRR@k's per-query term: 1 / rank of the first gold item when it is within the first k, else 0."""
    return reciprocal_rank(ranked[:k], gold)


def ndcg_at_k(ranked: Sequence[Hashable], gold: Collection[Hashable], k: int) -> float:
    """NDCG@k with binary relevance: DCG = sum over the first k ranks i (from 1) of rel_i / log2(i + 1),
    divided by the ideal DCG, every gold item ranked first (min(|gold|, k) of them). A ranked item
    counts once: a duplicate later in the list earns nothing (else DCG could exceed the ideal)."""
    gold = set(gold)
    if not gold:
        raise ValueError("NDCG needs at least one gold item")
    seen: set[Hashable] = set()
    dcg = 0.0
    for i, x in enumerate(ranked[:k], 1):
        if x in gold and x not in seen:
            dcg += 1.0 / math.log2(i + 1)
        seen.add(x)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(gold), k) + 1))
    return dcg / ideal


def ranking_metrics(
    ranked: Sequence[Hashable],
    gold: Collection[Hashable],
    recall_ks: Sequence[int] = (1, 2, 5),
    all_ks: Sequence[int] = (2,),
    cutoff: int = 10,
) -> dict[str, float]:
    """One query's retrieval report row: mrr@cutoff, ndcg@cutoff, recall@k and all@k."""
    row = {f"mrr@{cutoff}": reciprocal_rank_at_k(ranked, gold, cutoff), f"ndcg@{cutoff}": ndcg_at_k(ranked, gold, cutoff)}
    row |= {f"recall@{k}": recall_at_k(ranked, gold, k) for k in recall_ks}
    row |= {f"all@{k}": all_found_at_k(ranked, gold, k) for k in all_ks}
    return row


def mean_ranking_metrics(
    runs: Iterable[tuple[Sequence[Hashable], Collection[Hashable]]],
    recall_ks: Sequence[int] = (1, 2, 5),
    all_ks: Sequence[int] = (2,),
    cutoff: int = 10,
) -> dict[str, float | int]:
    """`ranking_metrics` averaged over (ranked ids, gold ids) runs, one per query, with n (the query
    count); n = 0 and no metric keys when there are no runs."""
    rows = [ranking_metrics(ranked, gold, recall_ks, all_ks, cutoff) for ranked, gold in runs]
    out: dict[str, float | int] = {"n": len(rows)}
    if rows:
        out |= {m: sum(r[m] for r in rows) / len(rows) for m in rows[0]}
    return out
