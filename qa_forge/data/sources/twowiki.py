"""2WikiMultihopQA: the HotpotQA layout (JSON list or JSONL) plus fields we ignore
(entity_ids, evidences, qa_pairs, ...); items without context are dropped."""

from __future__ import annotations

from qa_forge.core.records import Record
from qa_forge.data.sources import DatasetInfo, hotpotqa

SRC = "2wikimultihopqa"
DATASET = DatasetInfo(
    "2WikiMultihopQA",
    None,
    "apache-2.0",
    "https://huggingface.co/datasets/thinkall/2WikiMultihopQA",
    verified=False,
    note="declared by a hub mirror only: the authors' README (github.com/Alab-NII/2wikimultihop) states no licence, and "
    "its paragraphs are Wikipedia text (CC BY-SA); check the authors' repository before relying on Apache-2.0",
)
read_local = hotpotqa.read_local
read_hub = hotpotqa.read_hub


def to_record(item: dict) -> Record:
    return hotpotqa.to_record(item, src=SRC)
