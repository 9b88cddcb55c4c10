"""Passages and the index the retrieve tool searches: a question's own paragraphs (the distractor
setting) or every paragraph of an eval file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from qa_forge.core.io import UserError
from qa_forge.core.records import Record
from qa_forge.retrieval.retriever import Passage, Retriever, Scope, passage_text


@dataclass(frozen=True)
class Hit:
    title: str
    text: str
    score: float
    idx: int  # position in the index


class Index:
    """(title, text) passages and their embeddings; `search` ranks them by dot product
    (cosine with normalised embeddings), ties broken by position."""

    def __init__(self, passages: Sequence[Passage], embeddings: np.ndarray):
        self.passages = [(t or "", x) for t, x in passages]
        self.embeddings = (
            np.asarray(embeddings, dtype=np.float32).reshape(len(self.passages), -1) if self.passages else np.zeros((0, 0), np.float32)
        )

    @classmethod
    def build(cls, passages: Sequence[Passage], retriever: Retriever) -> Index:
        return cls(passages, retriever.encode_passages([passage_text(t, x) for t, x in passages]))

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query_vecs: np.ndarray, k: int) -> list[list[Hit]]:
        q = np.atleast_2d(np.asarray(query_vecs, dtype=np.float32))
        if not self.passages:
            return [[] for _ in range(q.shape[0])]
        scores = q @ self.embeddings.T
        k = min(k, len(self.passages))
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:k]
            out.append([Hit(self.passages[i][0], self.passages[i][1], float(row[i]), int(i)) for i in order])
        return out

    def query(self, retriever: Retriever, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Embed `queries` and search: the evaluate loop's retrieve(query) call."""
        return self.search(retriever.encode_queries(list(queries)), k)


def record_passages(r: Record) -> list[Passage]:
    """A question's own paragraphs: meta.context, else its sub-questions' paragraphs (SQuAD: one)."""
    ctx = r.meta.get("context") or []
    if ctx:
        return [(p.get("title") or "", p["text"]) for p in ctx]
    return list(dict.fromkeys((sq.title or "", sq.paragraph) for sq in r.sub_questions if sq.paragraph))


def supporting_passages(r: Record) -> list[Passage]:
    """The paragraphs a question needs: its answerable sub-questions' paragraphs (HotpotQA: the
    supporting titles, in order). A single-hop question's paragraph counts even when unanswerable:
    it is the question's context. Matched by (title, text), so same-title paragraphs differ."""
    subs = [sq for sq in r.sub_questions if sq.paragraph and (not sq.unanswerable or not r.multihop)]
    gold = list(dict.fromkeys((sq.title or "", sq.paragraph) for sq in subs))
    first_by_title: dict[str, Passage] = {}
    for p in r.meta.get("context") or []:
        first_by_title.setdefault(p.get("title") or "", (p.get("title") or "", p["text"]))
    covered = {t for t, _ in gold}
    for t in r.meta.get("supporting_titles") or []:  # supporting titles no sub-question paragraph covers
        if t not in covered and t in first_by_title:
            gold.append(first_by_title[t])
            covered.add(t)
    return gold


def global_passages(records: Sequence[Record]) -> list[Passage]:
    """Every distinct (title, text) paragraph of a file, in first-seen order."""
    return list(dict.fromkeys(p for r in records for p in record_passages(r)))


def index_for(r: Record, retriever: Retriever) -> Index:
    """The per-question (distractor) index."""
    return Index.build(record_passages(r), retriever)


def global_index(records: Sequence[Record], retriever: Retriever) -> Index:
    return Index.build(global_passages(records), retriever)


def indexer(records: Sequence[Record], retriever: Retriever, scope: Scope) -> Callable[[Record], Index]:
    """record -> the Index to search for it, for a scope; the global index is built once."""
    if scope == "global":
        shared = global_index(records, retriever)
        return lambda r: shared
    if scope == "question":
        # embed the whole file in one go (batched, one progress bar), then build cheap per-question indexes
        retriever.encode_passages([passage_text(t, x) for t, x in global_passages(records)])
        return lambda r: index_for(r, retriever)
    raise UserError(f"param 'retrieve.scope': {scope!r} is not 'question' or 'global'")
