"""A batch sampler that keeps a query's own positives out of its in-batch negatives.

MultipleNegativesRankingLoss scores each query against every passage of the batch (the other rows'
positives and negatives): any of those that is one of the query's positives is a false negative.

Why not sentence-transformers' NoDuplicatesBatchSampler (base/sampler.py, 6.2.0): it keeps a row out
of a batch when one of the row's column values (stringified, label columns aside) is already in the
batch. On our (anchor, positive, negative_1..n) rows that does stop two rows of one query meeting
(same anchor) and one paragraph appearing twice, but not the case our pairs are full of: the whole
question Q has positives p1 and p2, the hop query h2 has p2; rows (Q, p1) and (h2, p2) share no
value, yet p2 in the batch is a false negative for Q. Its check only sees the row's own columns, and
an extra column with the query's positives would be fed to the loss as one more text. So ours: each
row carries keys (its query, the passages it brings, every positive of its query), and two rows
whose keys meet never share a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

Keys = frozenset[Hashable]


def row_keys(query: str, passages: Sequence[str], query_positives: Sequence[str]) -> Keys:
    """A row's keys: ("q", query), and ("p", text) for its passages (positive and negatives) and for
    every positive of its query. Keys meet when two rows have one query, when a passage is in both
    rows, or when one row brings a passage that is a positive of the other's query."""
    return frozenset([("q", query), *(("p", x) for x in passages), *(("p", x) for x in query_positives)])


def conflict_free_batches(keys: Sequence[Keys], order: Sequence[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    """Greedy batches in `order`: a row joins the open batch unless its keys meet the batch's; a row
    turned away waits, in order, for the next batch. Every row lands in exactly one batch (a batch
    may close short when only conflicting rows are left); with drop_last the short batches go."""
    remaining = list(order)
    batches: list[list[int]] = []
    while remaining:
        batch: list[int] = []
        seen: set[Hashable] = set()
        waiting: list[int] = []
        for j, i in enumerate(remaining):
            if len(batch) == batch_size:
                waiting.extend(remaining[j:])
                break
            if keys[i].isdisjoint(seen):
                batch.append(i)
                seen |= keys[i]
            else:
                waiting.append(i)
        remaining = waiting
        if len(batch) == batch_size or not drop_last:
            batches.append(batch)
    return batches


class QueryAwareBatchSampler(DefaultBatchSampler):
    """Shuffled (seed + epoch), conflict-free batches over `keys` (one per dataset row). The epoch's
    batches are worked out once, so __len__ is their real count (the trainer's step count uses it)."""

    def __init__(
        self,
        dataset: Any,
        keys: Sequence[Keys],
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        if len(dataset) != len(keys):
            raise ValueError(f"the batch sampler has keys for {len(keys)} rows, the dataset has {len(dataset)}")
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        self.keys = list(keys)
        self._cache: tuple[int, list[list[int]]] | None = None

    def _batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            # our own generator, seeded per epoch: __len__ and __iter__ must see the same shuffle
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.keys), generator=g).tolist()
            self._cache = (self.epoch, conflict_free_batches(self.keys, order, self.batch_size, self.drop_last))
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


def sampler_factory(keys: Sequence[Keys]) -> Callable[..., QueryAwareBatchSampler]:
    """What SentenceTransformerTrainingArguments(batch_sampler=...) takes: a callable the trainer calls
    with (dataset, batch_size, drop_last, valid_label_columns, generator, seed)."""

    def make(dataset: Any, **kwargs: Any) -> QueryAwareBatchSampler:
        return QueryAwareBatchSampler(dataset, keys, **kwargs)

    return make
