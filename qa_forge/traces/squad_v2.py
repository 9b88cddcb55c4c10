"""SQuAD v2 by rule: one hop. Query = the question (when it contains the answer, drop
`query_contains_answer`: there is no other formulation); paragraph = the context; answer = the
first gold span. The supporting sentence is the context's sentence that covers the span's
characters (`answer_starts`, from the loader's items); without
offsets, the one sentence containing the span (several: drop `ambiguous_span`; none: drop
`answer_not_in_context`). Thought = the fixed template + that sentence. An unanswerable question
(no gold answers) abstains: the fixed "does not contain" thought and the abstention answer.
"""

from __future__ import annotations

from qa_forge.core.records import Record
from qa_forge.data.sources import Drop
from qa_forge.traces.build import RULE, abstaining, answered, safe_query
from qa_forge.traces.text import has, sentence_at, sentences, squeeze

SRC = "squad_v2"


def supporting_sentence(context: str, answer: str, start: int | None) -> str:
    if start is not None and context[start : start + len(answer)] == answer:
        return sentence_at(context, start, start + len(answer))
    found = [s for s in sentences(context) if has(s, answer)]
    if not found:
        raise Drop("answer_not_in_context")
    if len(found) > 1:
        raise Drop("ambiguous_span")
    return found[0]


def compose(item: dict, abstain: str) -> Record:
    question, context, title = item["question"].strip(), item["context"], item.get("title")
    answers = [a for a in item["answers"] if a.strip()]
    if not question or not context.strip():
        raise Drop("empty_question_or_context")
    if answers:
        answer = answers[0]
        starts = item.get("answer_starts") or []
        sentence = supporting_sentence(context, answer, starts[0] if starts else None)
        sq = answered(safe_query([squeeze(question)], answer), title, context, [sentence], answer.strip(), short=True)
        final, short = sq.answer, sq.answer
    else:
        sq = abstaining(squeeze(question), title, context, abstain)
        final, short = abstain, None
    return Record(
        id=f"{SRC}-{item['id']}",
        src=SRC,
        question=question,
        sub_questions=[sq],
        final_answer=final,
        short_answer=short,
        final_origin=RULE,
        meta={"answers": item["answers"], "plausible_answers": item.get("plausible_answers", []), "trace": {"rule": "squad_v2"}},
    )
