"""DROP: official {passage_id: {passage, qa_pairs}} JSON, or the hub's columns
(section_id, query_id, passage, question, answers_spans{spans, types})."""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.records import Record, SubQuestion
from qa_forge.data.sources import DatasetInfo, Drop, expect, read_json_items

SRC = "drop"
DATASET = DatasetInfo("DROP", "ucinlp/drop", "cc-by-sa-4.0", "https://huggingface.co/datasets/ucinlp/drop")


def read_local(path: str | Path) -> list[dict]:
    data = read_json_items(path)
    expect(data, dict, path, "the official DROP object {passage_id: {passage, qa_pairs}}")
    items = []
    for pid, block in data.items():
        expect(block, dict, path, f"an object for passage '{pid}'")
        for qa in block["qa_pairs"]:
            items.append({"passage_id": pid, "passage": block["passage"], **qa})
    return items


def read_hub(ds) -> list[dict]:
    return [
        {
            "passage_id": row["section_id"],
            "query_id": row["query_id"],
            "passage": row["passage"],
            "question": row["question"],
            "answer": {"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": list(row["answers_spans"]["spans"])},
        }
        for row in ds
    ]


def answer_text(answer: dict) -> str:
    """The short answer as text: a number, the spans joined, or a date."""
    if str(answer.get("number", "")).strip():
        return str(answer["number"]).strip()
    spans = [s for s in answer.get("spans", []) if s.strip()]
    if spans:
        return ", ".join(spans)
    date = answer.get("date") or {}
    return " ".join(str(date.get(k, "")).strip() for k in ("day", "month", "year") if str(date.get(k, "")).strip())


def to_record(item: dict) -> Record:
    short = answer_text(item["answer"])
    if not short:
        raise Drop("no_answer")
    question = item["question"].strip()
    return Record(
        id=f"{SRC}-{item['query_id']}",
        src=SRC,
        question=question,
        sub_questions=[SubQuestion(question=question, paragraph=item["passage"], short_answer=short)],
        short_answer=short,
        meta={"answers": [short], "passage_id": item["passage_id"]},
    )
