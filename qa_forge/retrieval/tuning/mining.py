"""Hard negatives per query from BM25 (bm25s) and from the current dense retriever.

Each source ranks the passage pool for a query; the query's positives (any of them, matched by
normalised paragraph text, so a copy under another title is a positive too) are removed from the
ranking first, then the top `skip` are skipped (the best-ranked non-positives are often unlabelled
positives: the bridge entity's other paragraph, the same article in another version) and the next
`n` taken, in rank order (no sampling: the same inputs mine the same negatives). A passage the first
source (BM25) took is not taken again by the second: its window moves on, so each source gives its
full count when the pool allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from qa_forge.retrieval.retriever import Passage, Retriever, passage_text
from qa_forge.retrieval.tuning.pairs import normalize_text

Source = Literal["bm25", "dense"]


class WindowParams(BaseModel):
    """One source's rank window over the non-positive passages: skip the top `skip`, take `n`."""

    model_config = ConfigDict(extra="forbid")

    n: NonNegativeInt  # negatives to take (0: the source is off)
    skip: NonNegativeInt


class MiningParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bm25: WindowParams
    dense: WindowParams
    query_chunk: PositiveInt  # queries scored at once by the dense source (a chunk x pool score matrix in memory)


@dataclass(frozen=True)
class Negative:
    title: str
    text: str
    source: Source
    rank: int  # 1-based, among this source's candidates: the pool less the query's positives and an earlier source's picks


def _top(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m best scores, best first, ties by position (argpartition: no full sort of the pool)."""
    m = min(m, scores.shape[0])
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, m - 1)[:m] if m < scores.shape[0] else np.arange(scores.shape[0])
    return part[np.lexsort((part, -scores[part]))]


def bm25_scores(queries: Sequence[str], pool: Sequence[Passage]) -> Iterator[np.ndarray]:
    """Per query, the BM25 score of every pool passage ("title: text", as the dense retriever embeds it).
    English stopwords removed, no stemmer (bm25s's PyStemmer is an extra dependency we skip)."""
    import bm25s

    corpus = [passage_text(t, x) for t, x in pool]
    index = bm25s.BM25()
    index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    for toks in tokens:
        known = index.get_tokens_ids(toks)
        # a query with no word in the pool's vocabulary scores 0 everywhere: no BM25 negative for it
        yield index.get_scores_from_ids(known) if known else np.zeros(len(corpus), dtype=np.float32)


def dense_scores(queries: Sequence[str], pool: Sequence[Passage], retriever: Retriever, chunk: int) -> Iterator[np.ndarray]:
    """Per query, the retriever's score of every pool passage: encode_queries / encode_passages, so the
    prefixes, normalisation and the on-disk passage cache are the retrieve stage's."""
    passages = retriever.encode_passages([passage_text(t, x) for t, x in pool])
    for i in range(0, len(queries), chunk):
        yield from retriever.encode_queries(list(queries[i : i + chunk])) @ passages.T


def take_window(scores: np.ndarray, excluded: set[int], window: WindowParams, floor: float | None = None) -> list[tuple[int, int]]:
    """(pool index, rank among the non-excluded passages) of ranks skip+1 .. skip+n. With `floor`, a
    passage must score above it (BM25: a zero-score passage shares no word with the query, it is no
    hard negative)."""
    if window.n == 0:
        return []
    ranked = _top(scores, window.skip + window.n + len(excluded))
    keep = [int(i) for i in ranked if int(i) not in excluded and (floor is None or scores[i] > floor)]
    return [(i, rank) for rank, i in enumerate(keep, 1)][window.skip : window.skip + window.n]


def mine_negatives(
    queries: Sequence[str],
    positives: Mapping[str, Sequence[str]],
    pool: Sequence[Passage],
    retriever: Retriever,
    params: MiningParams,
    progress: Callable[[Source, int, int], None] | None = None,
) -> list[list[Negative]]:
    """Per query (in order), its BM25 negatives then its dense ones. `positives`: query → every
    positive paragraph text of that query; a pool passage with one of those texts is never mined.
    The pool is deduplicated by paragraph text first (one text, one candidate). `progress(source,
    done, total)` is called after each query of each source."""
    if not pool:
        return [[] for _ in queries]
    unique: dict[str, Passage] = {}
    for t, x in pool:
        unique.setdefault(normalize_text(x), (t, x))
    texts = list(unique)
    pool = list(unique.values())
    at = {x: i for i, x in enumerate(texts)}
    excluded = [{at[k] for k in (normalize_text(x) for x in positives.get(q, ())) if k in at} for q in queries]
    out: list[list[Negative]] = [[] for _ in queries]
    sources: list[tuple[Source, WindowParams, Iterator[np.ndarray], float | None]] = []
    if params.bm25.n:
        sources.append(("bm25", params.bm25, bm25_scores(queries, pool), 0.0))
    if params.dense.n:
        sources.append(("dense", params.dense, dense_scores(queries, pool, retriever, params.query_chunk), None))
    for source, window, scores, floor in sources:
        for qi, s in enumerate(scores):
            taken = {at[normalize_text(n.text)] for n in out[qi]}  # an earlier source's negatives
            for i, rank in take_window(s, excluded[qi] | taken, window, floor):
                out[qi].append(Negative(pool[i][0], pool[i][1], source, rank))
            if progress is not None:
                progress(source, qi + 1, len(queries))
    return out
