"""2WikiMultihopQA: the HotpotQA layout (JSON list or JSONL) plus fields we ignore
(entity_ids, evidences, qa_pairs, ...); items without context are dropped."""

from __future__ import annotations

from qa_forge.core.records import Record
from qa_forge.data.sources import hotpotqa

SRC = "2wikimultihopqa"
read_local = hotpotqa.read_local
read_hub = hotpotqa.read_hub


def to_record(item: dict) -> Record:
    return hotpotqa.to_record(item, src=SRC)
