"""BoolQ: JSONL {question, passage, answer: bool[, title]} (original and hub layout alike)."""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.records import Record, SubQuestion
from qa_forge.data.sources import DatasetInfo, read_list, stable_id

SRC = "boolq"
DATASET = DatasetInfo("BoolQ", "google/boolq", "cc-by-sa-3.0", "https://huggingface.co/datasets/google/boolq")


def read_local(path: str | Path) -> list[dict]:
    return read_list(path, "JSON lines of {question, passage, answer}")


def read_hub(ds) -> list[dict]:
    return [dict(row) for row in ds]


def to_record(item: dict) -> Record:
    answer = item["answer"]
    if not isinstance(answer, bool):
        raise TypeError("field 'answer' must be true or false")
    question = item["question"].strip()
    if not question.endswith("?"):
        question = question[0].upper() + question[1:] + "?"
    short = "yes" if answer else "no"
    return Record(
        id=stable_id(SRC, item["question"], item["passage"]),
        src=SRC,
        question=question,
        sub_questions=[SubQuestion(question=question, paragraph=item["passage"], title=item.get("title"), short_answer=short)],
        short_answer=short,
        meta={"answers": [short]},
    )
