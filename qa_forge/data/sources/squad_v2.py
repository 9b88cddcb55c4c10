"""SQuAD 2.0: official nested JSON, or the hub's flat columns (id, title, context, question, answers)."""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.io import UserError
from qa_forge.core.records import Record, SubQuestion
from qa_forge.data.sources import DatasetInfo, expect, read_json_items

SRC = "squad_v2"
DATASET = DatasetInfo("SQuAD 2.0", "rajpurkar/squad_v2", "cc-by-sa-4.0", "https://huggingface.co/datasets/rajpurkar/squad_v2")


def read_local(path: str | Path) -> list[dict]:
    data = read_json_items(path)
    expect(data, dict, path, "the official SQuAD JSON object with a 'data' list")
    if "data" not in data:
        raise UserError(f"{path}: missing field 'data' (not the official SQuAD 2.0 format)")
    items = []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            for q in para.get("qas", []):
                if "question" not in q or "id" not in q:
                    raise UserError(f"{path}: data[{a}].paragraphs[{p}]: a qa without 'id' or 'question'")
                items.append(
                    {
                        "id": q["id"],
                        "title": (article.get("title") or "").replace("_", " ") or None,
                        "context": para["context"],
                        "question": q["question"],
                        "answers": [x["text"] for x in q.get("answers", [])],
                        "answer_starts": [x.get("answer_start") for x in q.get("answers", [])],  # rule traces: the span's sentence
                        "plausible_answers": [x["text"] for x in q.get("plausible_answers", [])],
                    }
                )
    return items


def read_hub(ds) -> list[dict]:
    return [
        {
            "id": row["id"],
            "title": row.get("title"),
            "context": row["context"],
            "question": row["question"],
            "answers": list(row["answers"]["text"]),
            "answer_starts": list(row["answers"].get("answer_start", [])),
            "plausible_answers": [],
        }
        for row in ds
    ]


def to_record(item: dict) -> Record:
    answers = item["answers"]
    unanswerable = len(answers) == 0
    short = None if unanswerable else answers[0]
    sq = SubQuestion(
        question=item["question"].strip(),
        paragraph=item["context"],
        title=item.get("title"),
        short_answer=short,
        unanswerable=unanswerable,
    )
    return Record(
        id=f"{SRC}-{item['id']}",
        src=SRC,
        question=item["question"].strip(),
        sub_questions=[sq],
        short_answer=short,
        meta={"answers": answers, "plausible_answers": item.get("plausible_answers", [])},
    )
