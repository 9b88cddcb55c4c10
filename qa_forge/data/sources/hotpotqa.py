"""HotpotQA distractor: JSON list of {_id, question, answer, type, level, supporting_facts:
[[title, sent]], context: [[title, [sentences]]]}; the hub has id, and supporting_facts /
context as {title: [...], sent_id | sentences: [...]}.

Sub-questions are the supporting paragraphs in order of first mention; their question text is
written later (generate, or our samples). `meta.context` keeps every paragraph for retrieval.
"""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.records import Record, SubQuestion
from qa_forge.data.sources import DatasetInfo, Drop, join_sentences, read_list

SRC = "hotpotqa"
DATASET = DatasetInfo("HotpotQA", "hotpotqa/hotpot_qa", "cc-by-sa-4.0", "https://huggingface.co/datasets/hotpotqa/hotpot_qa")


def read_local(path: str | Path) -> list[dict]:
    return read_list(path, "a JSON list of HotpotQA items")


def read_hub(ds) -> list[dict]:
    out = []
    for row in ds:
        ctx, sf = row["context"], row["supporting_facts"]
        sentences = ctx.get("sentences", ctx.get("content"))
        out.append(
            {
                **{k: v for k, v in row.items() if k not in ("context", "supporting_facts", "id")},
                "_id": row.get("id", row.get("_id")),
                "context": [[t, list(s)] for t, s in zip(ctx["title"], sentences)],
                "supporting_facts": [[t, i] for t, i in zip(sf["title"], sf["sent_id"])],
            }
        )
    return out


def to_record(item: dict, src: str = SRC) -> Record:
    context = item.get("context") or []
    if not context:
        raise Drop("no_context")
    paras = {title: join_sentences(sents) for title, sents in context}
    gold: list[str] = []
    for title, _ in item["supporting_facts"]:
        if title not in gold:
            gold.append(title)
    if any(t not in paras for t in gold):
        raise Drop("supporting_paragraph_missing")
    answer = str(item["answer"]).strip()
    return Record(
        id=f"{src}-{item['_id']}",
        src=src,
        question=item["question"].strip(),
        multihop=True,
        sub_questions=[SubQuestion(paragraph=paras[t], title=t) for t in gold],
        short_answer=answer,
        meta={
            "answers": [answer],
            "type": item.get("type"),
            "level": item.get("level"),
            "context": [{"title": t, "text": p} for t, p in paras.items()],
            "supporting_titles": gold,
            "supporting_facts": [list(f) for f in item["supporting_facts"]],
        },
    )
