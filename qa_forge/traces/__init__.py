"""Traces composed by rule (answer origin `rule`): a source item's human annotations become a
complete training trace, no model involved. For HotpotQA, 2WikiMultihopQA, MuSiQue and SQuAD v2
train items: each hop's retrieve query (never containing the hop's answer), its supporting
paragraph and title, a thought made of a fixed template and the verbatim supporting sentence(s),
the hop's answer; for multi-hop records the summary and the final answer (+ short answer).
BoolQ and DROP carry no supporting sentences: they have no rule (generator 3 or the samples).

Each composer takes a RAW item, as the source's loader `read_local` / `read_hub` returns it, and
builds the Record itself (same id, src, question and meta keys as the loader's Record, plus
meta.trace naming the rule), because the loaders drop what a trace needs or what the rule keeps.
An item the rule cannot handle raises `Drop(reason)` (the loaders' exception, so fetch counts
both alike) rather than yield a wrong trace. The rules and their limits: each module's docstring.

    compose(src, item, abstain=ABSTAIN) -> Record           raises Drop
    compose_all(src, items, abstain=ABSTAIN) -> (records, Counter of drop reasons)

`abstain` is the abstention answer of unanswerable items; the pipeline passes its
fetch.unanswerable_answer (ABSTAIN is the same sentence, checked by a test against params/base.yaml).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from qa_forge.core.io import UserError
from qa_forge.core.records import Record
from qa_forge.data.sources import Drop
from qa_forge.traces import hotpotqa, musique, squad_v2, twowiki

ABSTAIN = "The question cannot be answered from the retrieved knowledge."
RULE_SOURCES = ("hotpotqa", "2wikimultihopqa", "musique", "squad_v2")

__all__ = ["ABSTAIN", "RULE_SOURCES", "Drop", "compose", "compose_all"]


def compose(src: str, item: dict, abstain: str = ABSTAIN) -> Record:
    """The rule trace of one raw item of `src`; raises Drop(reason) for an item the rule skips."""
    if src == "hotpotqa":
        return hotpotqa.compose(item)
    if src == "2wikimultihopqa":
        return twowiki.compose(item)
    if src == "musique":
        return musique.compose(item, abstain)
    if src == "squad_v2":
        return squad_v2.compose(item, abstain)
    raise UserError(f"source '{src}' has no rule traces: choose one of {', '.join(RULE_SOURCES)}")


def compose_all(src: str, items: Iterable[dict], abstain: str = ABSTAIN) -> tuple[list[Record], Counter]:
    """Rule traces of every item that the rule handles, and the count of each drop reason."""
    records: list[Record] = []
    reasons: Counter = Counter()
    for item in items:
        try:
            records.append(compose(src, item, abstain))
        except Drop as d:
            reasons[d.reason] += 1
    return records, reasons
