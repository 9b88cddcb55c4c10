"""MuSiQue (full or ans): JSON list or JSONL of {id, paragraphs, question,
question_decomposition, answer, answer_aliases, answerable}; the hub rows have the same fields.

- items with a malformed sub-question ("Stadio Ciro Vigorito >> occupant") are dropped;
- "#1", "#2" placeholders are filled with the earlier hops' answers;
- an unanswerable item ends at its first hop without support: that hop gets the most similar
  non-supporting paragraph and is marked unanswerable.
"""

from __future__ import annotations

import re
from pathlib import Path

from qa_forge.core.records import Record, SubQuestion
from qa_forge.data.sources import DatasetInfo, Drop, most_similar, read_list

SRC = "musique"
DATASET = DatasetInfo(
    "MuSiQue",
    None,
    "cc-by-4.0",
    "https://github.com/StonyBrookNLP/musique",
    note="stated in the authors' repository; the hub copy params/gpu.yaml reads (dgslibisey/MuSiQue) declares no licence",
)
_PLACEHOLDER = re.compile(r"#(\d+)")


def read_local(path: str | Path) -> list[dict]:
    return read_list(path, "a list (JSON or JSON lines) of MuSiQue items")


def read_hub(ds) -> list[dict]:
    return [dict(row) for row in ds]


def fill_placeholders(question: str, answers: list[str]) -> str:
    """Replace "#k" with the k-th earlier answer (1-based); unknown k raises Drop."""

    def sub(m: re.Match) -> str:
        k = int(m.group(1))
        if not 1 <= k <= len(answers):
            raise Drop("bad_placeholder")
        return answers[k - 1]

    return _PLACEHOLDER.sub(sub, question)


def to_record(item: dict) -> Record:
    hops = item["question_decomposition"]
    if any(">>" in h["question"] for h in hops):
        raise Drop("malformed_sub_question")
    paragraphs = item["paragraphs"]
    by_idx = {p["idx"]: p for p in paragraphs}
    answers: list[str] = []
    subs: list[SubQuestion] = []
    for h in hops:
        question = fill_placeholders(h["question"], answers).strip()
        idx = h.get("paragraph_support_idx")
        if idx is None or idx not in by_idx:
            # First hop without support: the closest non-supporting paragraph, and stop here.
            others = [p for p in paragraphs if not p.get("is_supporting")] or paragraphs
            best = others[most_similar(question, [p["title"] + " " + p["paragraph_text"] for p in others])]
            subs.append(SubQuestion(question=question, paragraph=best["paragraph_text"], title=best["title"], unanswerable=True))
            break
        para = by_idx[idx]
        subs.append(SubQuestion(question=question, paragraph=para["paragraph_text"], title=para["title"], short_answer=h["answer"]))
        answers.append(h["answer"])
    answerable = bool(item.get("answerable", True)) and not any(s.unanswerable for s in subs)
    if not item.get("answerable", True) and answerable:
        raise Drop("unanswerable_without_missing_hop")
    return Record(
        id=f"{SRC}-{item['id']}",
        src=SRC,
        question=item["question"].strip(),
        multihop=True,
        sub_questions=subs,
        short_answer=item["answer"] if answerable else None,
        meta={
            "answers": [item["answer"], *item.get("answer_aliases", [])] if answerable else [],
            "hops": len(hops),
            "context": [{"title": p["title"], "text": p["paragraph_text"]} for p in paragraphs],
            "supporting_titles": [by_idx[h["paragraph_support_idx"]]["title"] for h in hops if h.get("paragraph_support_idx") in by_idx],
        },
    )
