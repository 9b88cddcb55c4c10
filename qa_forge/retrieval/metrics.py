"""Ranking metrics of a retriever: recall@k, all@k, reciprocal rank."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence


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
