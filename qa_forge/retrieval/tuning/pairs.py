"""Training pairs for the retriever: (query, positive paragraph) from the filtered records.

Two kinds of query per record:
- `hop`: each sub-question with question text and a paragraph (the rule traces' retrieve query)
  → that paragraph;
- `question`: the whole question → each supporting paragraph (its sub-questions' paragraphs), the
  query the retrieve stage and the evaluate loop's first retrieve call use.

An unanswerable hop's paragraph does not answer its query: it is never a positive, for either kind.
Pairs are deduplicated by (query, paragraph text); the first record to produce one owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.records import Record
from qa_forge.data.pack import split
from qa_forge.retrieval.index import record_passages

PairKind = Literal["hop", "question"]


class PairsParams(BaseModel):
    """How the pairs are split for training and held-out scoring."""

    model_config = ConfigDict(extra="forbid")

    heldout_fraction: float = Field(ge=0.0, lt=1.0)  # of the records (by id), not of the pairs
    seed: int  # the split's hash seed
    # pairs whose paragraph is an evaluation paragraph: "train" keeps them in training (they are
    # only kept out of the held-out split), "drop" removes them from the pair set altogether
    eval_overlap: Literal["train", "drop"]


@dataclass(frozen=True)
class Pair:
    query: str
    paragraph: str
    title: str  # "" when the paragraph has none
    record_id: str  # the first record that produced the pair: the split goes by it
    kind: PairKind


@dataclass(frozen=True)
class Overlap:
    """Pairs whose paragraph is also an evaluation paragraph (some dev_277 titles are in the
    HotpotQA train sample too): training on them would flatter the held-out scores."""

    pairs: int  # pairs whose paragraph matches an evaluation paragraph, by text or by title
    by_text: int  # of which the paragraph text itself is an evaluation paragraph
    by_title: int  # of which only the title matches (the same article, another version of the text)
    paragraphs: int  # distinct matching paragraphs
    heldout_excluded: int  # pairs of held-out records kept out of the held-out split for it

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("pairs", "by_text", "by_title", "paragraphs", "heldout_excluded")}


@dataclass(frozen=True)
class PairSplit:
    train: list[Pair]
    heldout: list[Pair]
    overlap: Overlap
    dropped: list[Pair] = field(default_factory=list)  # eval-overlapping pairs removed (eval_overlap: drop)


def normalize_text(text: str) -> str:
    """Paragraph identity for matching: whitespace collapsed (sources differ in line breaks and padding)."""
    return " ".join(text.split())


def normalize_title(title: str | None) -> str:
    return " ".join((title or "").split()).casefold()


def record_pairs(r: Record) -> list[Pair]:
    """One record's pairs, hop pairs first, in sub-question order (not yet deduplicated)."""
    answerable = [sq for sq in r.sub_questions if sq.paragraph.strip() and not sq.unanswerable]
    out = [Pair(sq.question.strip(), sq.paragraph, sq.title or "", r.id, "hop") for sq in answerable if sq.question.strip()]
    if r.question.strip():
        out += [Pair(r.question.strip(), sq.paragraph, sq.title or "", r.id, "question") for sq in answerable]
    return out


def dedupe(pairs: Iterable[Pair]) -> list[Pair]:
    """First pair per (query, paragraph text): a hop query repeated across records (or a single-hop
    record whose one sub-question is its question) would otherwise count twice."""
    seen: dict[tuple[str, str], Pair] = {}
    for p in pairs:
        seen.setdefault((p.query, normalize_text(p.paragraph)), p)
    return list(seen.values())


def build_pairs(records: Sequence[Record]) -> list[Pair]:
    return dedupe(p for r in records for p in record_pairs(r))


def positives_by_query(pairs: Iterable[Pair]) -> dict[str, list[Pair]]:
    """query → its pairs: every positive paragraph of a query (mining and the sampler need them all)."""
    out: dict[str, list[Pair]] = {}
    for p in pairs:
        out.setdefault(p.query, []).append(p)
    return out


class EvalParagraphs:
    """The paragraphs the evaluation searches (each eval record's meta.context, else its sub-questions'
    paragraphs: what the retrieve stage indexes), matched by normalised text or by non-empty title."""

    def __init__(self, eval_records: Iterable[Record]):
        passages = {p for r in eval_records for p in record_passages(r)}
        self.texts = {normalize_text(x) for _, x in passages}
        self.titles = {normalize_title(t) for t, _ in passages} - {""}

    def match(self, p: Pair) -> Literal["text", "title"] | None:
        if normalize_text(p.paragraph) in self.texts:
            return "text"
        if normalize_title(p.title) in self.titles:
            return "title"
        return None


def split_pairs(pairs: Sequence[Pair], eval_records: Iterable[Record], params: PairsParams) -> PairSplit:
    """(train, held-out) by record id (qa_forge.data.pack.split: a seeded hash, so adding records moves
    few others), and the overlap with the evaluation paragraphs.

    A pair whose paragraph (text, or title) is an evaluation paragraph is excluded from the held-out
    split. With eval_overlap "train" such pairs stay in (or, from held-out records, move to) the
    training split: the held-out scores never see them, but the tuned retriever has trained on those
    paragraphs, which the closing note must say when it reports the evaluation sources; with "drop"
    they leave the pair set (listed in `dropped`).
    """
    ids = list(dict.fromkeys(p.record_id for p in pairs))
    _, heldout_ids = split(ids, params.heldout_fraction, params.seed, key=lambda x: x)
    heldout_ids = set(heldout_ids)
    evalp = EvalParagraphs(eval_records)
    matches = [evalp.match(p) for p in pairs]
    train, heldout, dropped = [], [], []
    excluded = 0
    for p, m in zip(pairs, matches):
        if m is not None:
            excluded += p.record_id in heldout_ids
            (dropped if params.eval_overlap == "drop" else train).append(p)
        elif p.record_id in heldout_ids:
            heldout.append(p)
        else:
            train.append(p)
    overlapping = [p for p, m in zip(pairs, matches) if m is not None]
    overlap = Overlap(
        pairs=len(overlapping),
        by_text=sum(m == "text" for m in matches),
        by_title=sum(m == "title" for m in matches),
        paragraphs=len({normalize_text(p.paragraph) for p in overlapping}),
        heldout_excluded=excluded,
    )
    return PairSplit(train, heldout, overlap, dropped)
