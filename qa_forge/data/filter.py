"""filter: keep records that are well-formed and agree with the facts; count every rejection.

Reasons, checked in this order (a record gets the first that applies):
  format                 the completion did not parse (meta.errors), or no question / sub-questions
  empty_field            a question, paragraph, answer or final answer is empty
  too_long               a field passes its max length
  entity_not_named       a generated multi-hop question does not name every entity it is about
  coreference            a generated multi-hop question leans on "this", "these", ...
  abstains_on_answerable an answer says "cannot answer" though the gold answer exists
  answers_unanswerable   an answer to an unanswerable question does not abstain
  disagrees_with_gold    the final (or a hop's) answer does not contain the gold short answer
  duplicate              the same question (normalised) as an earlier record
  near_duplicate         a question nearly identical to an earlier one (word Jaccard, MinHash-LSH candidates)
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.records import Record
from qa_forge.core.textnorm import abstains, contains, normalize_answer


class FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_chars: dict[str, int]  # per field name
    coreference_words: list[str]  # a generated multi-hop question must not lean on these
    abstain_phrases: list[str]
    near_duplicate_jaccard: float = Field(gt=0, le=1)


def gold_agrees(answer: str, golds: list[str]) -> bool:
    """A written answer agrees when it contains a gold answer; yes/no golds must open the answer."""
    for g in golds:
        if normalize_answer(g) in ("yes", "no"):
            if normalize_answer(answer).split()[:1] == [normalize_answer(g)]:
                return True
        elif contains(answer, g):
            return True
    return False


def check(r: Record, p: FilterParams) -> tuple[str, str] | None:
    """The first reason to reject `r` and a detail, or None to keep it."""
    if r.meta.get("errors"):
        return "format", "; ".join(r.meta["errors"])
    if not r.question.strip() or not r.sub_questions:
        return "format", "no question" if not r.question.strip() else "no sub-questions"
    if r.multihop and len(r.sub_questions) < 2 and r.answerable:
        return "format", "a multi-hop question with one hop"
    for k, sq in enumerate(r.sub_questions):
        for name in ("question", "paragraph", "answer"):
            if not getattr(sq, name).strip():
                return "empty_field", f"sub_questions[{k}].{name}"
    if not r.final_answer.strip():
        return "empty_field", "final_answer"
    fields = [("question", r.question), ("final_answer", r.final_answer), ("summary", r.summary)]
    for k, sq in enumerate(r.sub_questions):
        fields += [(f"sub_questions[{k}].{n}", getattr(sq, n)) for n in ("question", "paragraph", "thought", "answer")]
    for name, value in fields:
        limit = p.max_chars.get(name.split(".")[-1])
        if limit and len(value) > limit:
            return "too_long", f"{name}: {len(value)} > {limit} chars"
    entities = r.meta.get("entities") or []
    if r.multihop and entities:
        missing = [e for e in entities if e.lower() not in r.question.lower()]
        if missing:
            return "entity_not_named", f"question does not name {missing}"
        q = " " + re.sub(r"[^\w\s]", " ", r.question.lower()) + " "
        for w in entities:  # an entity may itself contain a flagged word ("This Is Us")
            q = q.replace(" " + re.sub(r"[^\w\s]", " ", w.lower()) + " ", " ")
        hit = next((w for w in p.coreference_words if f" {w} " in q), None)
        if hit:
            return "coreference", f"question uses '{hit}'"
    golds = r.meta.get("answers")
    if golds is not None:  # gold answers from a source
        answer = r.final_answer
        if r.answerable and golds:
            if abstains(answer, p.abstain_phrases):
                return "abstains_on_answerable", "final_answer abstains"
            if not gold_agrees(answer, golds):
                return "disagrees_with_gold", f"final_answer lacks {golds[0]!r}"
            for k, sq in enumerate(r.sub_questions):
                if sq.short_answer and r.multihop:
                    if abstains(sq.answer, p.abstain_phrases):
                        return "abstains_on_answerable", f"sub_questions[{k}].answer abstains"
                    if not gold_agrees(sq.answer, [sq.short_answer]):
                        return "disagrees_with_gold", f"sub_questions[{k}].answer lacks {sq.short_answer!r}"
        elif not r.answerable and not abstains(answer, p.abstain_phrases):
            return "answers_unanswerable", "final_answer does not abstain"
    return None


def words(q: str) -> frozenset[str]:
    return frozenset(normalize_answer(q).split())


_SALTS = [hashlib.blake2b(str(i).encode(), digest_size=8).digest() for i in range(16)]


def band_keys(w: frozenset[str], rows: int = 2) -> list[tuple]:
    """MinHash-LSH bands: questions with high word Jaccard share a band with high probability."""
    if not w:
        return []
    sig = [min(int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8, key=salt).digest(), "big") for t in w) for salt in _SALTS]
    return [(b, *sig[b * rows : (b + 1) * rows]) for b in range(len(sig) // rows)]


class Deduper:
    """Exact duplicates by normalised question; near duplicates by word Jaccard among LSH candidates."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.seen: set[str] = set()
        self.bands: dict[tuple, list[frozenset]] = {}

    def reason(self, question: str) -> str | None:
        key = normalize_answer(question)
        if key in self.seen:
            return "duplicate"
        w = words(question)
        keys = band_keys(w)
        for k in keys:
            for other in self.bands.get(k, ()):
                if len(w & other) / len(w | other) >= self.threshold:
                    return "near_duplicate"
        self.seen.add(key)
        for k in keys:
            self.bands.setdefault(k, []).append(w)
        return None


def filter_records(records: list[Record], p: FilterParams) -> tuple[list[Record], list[Record], dict]:
    kept, rejected = [], []
    reasons: Counter = Counter()
    dedupe = Deduper(p.near_duplicate_jaccard)
    for r in records:
        verdict = check(r, p)
        if verdict is None:
            dup = dedupe.reason(r.question)
            verdict = (dup, "question seen before") if dup else None
        if verdict is None:
            kept.append(r)
        else:
            reasons[verdict[0]] += 1
            rejected.append(r.model_copy(update={"meta": {**r.meta, "reject_reason": verdict[0], "reject_detail": verdict[1]}}))
    by_src = Counter(r.src for r in records)
    kept_src = Counter(r.src for r in kept)
    report = {
        "records": len(records),
        "kept": len(kept),
        "rejected": len(rejected),
        "reasons": dict(sorted(reasons.items())),
        "kept_by_src": {s: {"kept": kept_src[s], "of": n} for s, n in sorted(by_src.items())},
    }
    return kept, rejected, report
