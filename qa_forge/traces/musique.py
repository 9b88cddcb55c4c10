"""MuSiQue by rule: question_decomposition gives each hop's question, answer and supporting paragraph.

Each hop: query = its question with "#k" replaced by the k-th hop's answer; a knowledge-base hop
"Nissedal >> country" becomes the query "country of Nissedal" (the loader drops such items; the
rule keeps them). Paragraph = paragraphs[paragraph_support_idx].
MuSiQue marks no sentences, so the supporting sentence is found by rule: among the sentences of
the paragraph that contain the hop's answer (normalised), the one sharing most content words with
the query (none: drop `hop_answer_not_in_paragraph`), plus the sentence sharing most with the
query when it shares strictly more (the fact is often stated with a pronoun: "He was the only
Catholic signatory..."). Thought = the fixed template + those sentences; answer = the hop's answer
(a trailing " *", an annotation artefact, removed). Summary: one fact per hop ("The country of
Nissedal is Norway." / "<question>: <answer>."); final answer = the gold answer, which must be the
last hop's (else drop `answer_not_last_hop`). Limits: a common-word answer can match the wrong
sentence ("north" in "the North Atlantic"), and MuSiQue's own annotation noise passes through
(the birthplace hop "Pittsburgh" is supported by the album "Pittsburgh (album)").

Unanswerable items (answerable: false) end at their first hop without a supporting paragraph: that
hop retrieves the non-supporting paragraph most similar to its query among those that do not
contain its (hidden) answer (none: drop `no_abstention_paragraph`); its thought is the fixed
"does not contain" template and its answer, like the final answer, the abstention. An unanswerable
item whose hops are all supported is dropped (`unanswerable_without_missing_hop`), as the loader
does; so is an answerable item with an unsupported hop (`answerable_hop_without_support`).
"""

from __future__ import annotations

from qa_forge.core.records import Record
from qa_forge.data.sources import Drop, most_similar
from qa_forge.data.sources.musique import fill_placeholders
from qa_forge.traces.build import (
    NOT_ANSWERED_FACT,
    RULE,
    abstaining,
    answered,
    bare_question,
    question_fact,
    relation_fact,
    relation_query,
    safe_query,
)
from qa_forge.traces.text import has, overlap, same, sentences, squeeze

SRC = "musique"


def clean_span(answer: str) -> str:
    """A hop answer without the stray " *" some annotations end with ("Russia *")."""
    return squeeze(str(answer)).rstrip("*").strip()


def hop_query(question: str, answers: list[str]) -> tuple[str, str]:
    """(query, fact label) of a hop: placeholders filled; "X >> relation" as "relation of X"."""
    filled = squeeze(fill_placeholders(question, answers))
    if ">>" in filled:
        subject, _, relation = (x.strip() for x in filled.partition(">>"))
        if not subject or not relation or ">>" in relation:
            raise Drop("malformed_sub_question")
        return relation_query(subject, relation), f"{subject}\x1f{relation}"
    return filled, filled


def fact(label: str, answer: str) -> str:
    if "\x1f" in label:
        subject, relation = label.split("\x1f")
        return relation_fact(subject, relation, answer)
    return question_fact(label, answer)


def supporting_sentences(paragraph: str, answer: str, query: str) -> list[str]:
    """The answer's sentence (the one sharing most content words with the query), and before or
    after it, in paragraph order, the sentence sharing most words with the query when it shares
    strictly more ("He was the only Catholic signatory of the Declaration of Independence.")."""
    all_sentences = sentences(paragraph)
    found = [s for s in all_sentences if has(s, answer)]
    if not found:
        raise Drop("hop_answer_not_in_paragraph")
    best = max(found, key=lambda s: overlap(s, query))  # ties: the first
    closest = max(all_sentences, key=lambda s: overlap(s, query))
    if overlap(closest, query) > overlap(best, query):
        return [s for s in all_sentences if s in (best, closest)]
    return [best]


def abstention_paragraph(paragraphs: list[dict], query: str, hidden: str) -> dict:
    others = [p for p in paragraphs if not p.get("is_supporting") and not (hidden and has(p["paragraph_text"], hidden))]
    if not others:
        raise Drop("no_abstention_paragraph")
    return others[most_similar(query, [p["title"] + " " + p["paragraph_text"] for p in others])]


def compose(item: dict, abstain: str) -> Record:
    hops = item["question_decomposition"]
    paragraphs = item["paragraphs"]
    by_idx = {p["idx"]: p for p in paragraphs}
    answerable = bool(item.get("answerable", True))
    answers: list[str] = []
    subs, facts = [], []
    for h in hops:
        answer = clean_span(h["answer"])
        query, label = hop_query(h["question"], answers)
        query = safe_query([query], answer) if answer else query
        idx = h.get("paragraph_support_idx")
        if idx is None or idx not in by_idx:
            if answerable:
                raise Drop("answerable_hop_without_support")
            p = abstention_paragraph(paragraphs, query, answer)
            subs.append(abstaining(query, p["title"], p["paragraph_text"], abstain))
            facts.append(NOT_ANSWERED_FACT.format(question=bare_question(query)))
            break
        if not answer:
            raise Drop("no_hop_answer")
        p = by_idx[idx]
        quotes = supporting_sentences(p["paragraph_text"], answer, query)
        subs.append(answered(query, p["title"], p["paragraph_text"], quotes, answer))
        facts.append(fact(label, answer))
        answers.append(answer)
    if not answerable and not any(s.unanswerable for s in subs):
        raise Drop("unanswerable_without_missing_hop")
    gold = clean_span(item["answer"])
    if answerable and not same(gold, subs[-1].answer):
        raise Drop("answer_not_last_hop")
    return Record(
        id=f"{SRC}-{item['id']}",
        src=SRC,
        question=item["question"].strip(),
        multihop=True,
        sub_questions=subs,
        summary=" ".join(facts),
        final_answer=gold if answerable else abstain,
        short_answer=gold if answerable else None,
        final_origin=RULE,
        meta={
            "answers": [gold, *item.get("answer_aliases", [])] if answerable else [],
            "hops": len(hops),
            "context": [{"title": p["title"], "text": p["paragraph_text"]} for p in paragraphs],
            "supporting_titles": [by_idx[h["paragraph_support_idx"]]["title"] for h in hops if h.get("paragraph_support_idx") in by_idx],
            "trace": {"rule": "musique/answerable" if answerable else "musique/unanswerable"},
        },
    )
