"""The fixed templates and the builders every rule composer shares.

A hop's thought is a fixed template around verbatim annotation strings; its answer is the gold
span (short and grounded: the quoted sentence contains it); a hop's query never contains its
answer (normalised, whole words). Multi-hop hops carry no separate short answer (it would repeat
the span); the record's short answer is the gold answer, the line evaluate scores.
"""

from __future__ import annotations

from qa_forge.core.records import Origin, SubQuestion
from qa_forge.data.sources import Drop
from qa_forge.traces.text import has, squeeze

RULE = Origin(kind="rule")

# The templates: changing one changes every rule trace (and so the training data).
SAYS = "The paragraph on {title} says: {sentences}"
SAYS_UNTITLED = "The paragraph says: {sentences}"
LACKS = "The paragraph on {title} does not contain the answer."
LACKS_UNTITLED = "The paragraph does not contain the answer."
ABOUT = "The paragraph on {title} has what the question asks about {entity}."
RELATION_FACT = "The {relation} of {subject} is {answer}."
RELATION_FACT_PREP = "{subject} {relation} {answer}."  # a relation ending in a preposition ("part of")
QUESTION_FACT = "{question}: {answer}."
NOT_ANSWERED_FACT = "The retrieved paragraph does not answer: {question}."
_PREPOSITIONS = frozenset(["of", "in", "by", "for", "to", "on", "at", "from", "with", "as", "into"])


def quoted(sentences: list[str]) -> str:
    return " ".join(squeeze(s) for s in sentences)


def says(title: str | None, sentences: list[str]) -> str:
    """The thought of an answered hop: the fixed template and the verbatim supporting sentence(s)."""
    if title:
        return SAYS.format(title=title, sentences=quoted(sentences))
    return SAYS_UNTITLED.format(sentences=quoted(sentences))


def lacks(title: str | None) -> str:
    return LACKS.format(title=title) if title else LACKS_UNTITLED


def safe_query(formulations: list[str], answer: str, reason: str = "query_contains_answer") -> str:
    """The first formulation that does not contain the hop's answer; Drop(reason) when none is left."""
    for q in formulations:
        q = squeeze(q)
        if q and not has(q, answer):
            return q
    raise Drop(reason)


def ends_in_preposition(relation: str) -> bool:
    parts = relation.split()
    return bool(parts) and parts[-1].lower() in _PREPOSITIONS


def relation_query(subject: str, relation: str) -> str:
    """A knowledge-base hop as a retrieval query: "date of birth of Dillon Francis"; "Old Persian part of"."""
    if ends_in_preposition(relation):
        return f"{subject} {relation}"
    return f"{relation} of {subject}"


def relation_fact(subject: str, relation: str, answer: str) -> str:
    if ends_in_preposition(relation):
        return RELATION_FACT_PREP.format(subject=subject, relation=relation, answer=answer)
    return RELATION_FACT.format(relation=relation, subject=subject, answer=answer)


def bare_question(question: str) -> str:
    """A question as the head of a fact: no final "?" or "."."""
    return question.strip().rstrip("?.").strip()


def question_fact(question: str, answer: str) -> str:
    return QUESTION_FACT.format(question=bare_question(question), answer=answer)


def answered(query: str, title: str | None, paragraph: str, sentences: list[str], answer: str, short: bool = False) -> SubQuestion:
    """An answered hop: thought = template + verbatim sentences, answer = the span (also the
    hop's short answer when `short`, for single-hop records)."""
    return SubQuestion(
        question=query,
        paragraph=paragraph,
        title=title,
        thought=says(title, sentences),
        answer=answer,
        short_answer=answer if short else None,
        answer_origin=RULE,
    )


def abstaining(query: str, title: str | None, paragraph: str, abstain: str) -> SubQuestion:
    """A hop whose paragraph lacks the answer: the fixed template and the abstention answer."""
    return SubQuestion(
        question=query, paragraph=paragraph, title=title, thought=lacks(title), answer=abstain, unanswerable=True, answer_origin=RULE
    )
