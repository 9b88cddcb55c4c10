"""2WikiMultihopQA by rule: one hop per evidence triple (subject, relation, object), in the
evidences' order (a later triple's subject is an earlier one's object).

Each hop: query = "relation of subject" ("date of birth of Dillon Francis"); paragraph = the
supporting paragraph of the subject (a supporting title whose name is the subject; else the
supporting title whose sentences contain the object, not the object's own page, the one sharing
most words with the subject; else drop `evidence_paragraph_not_found`, or
`ambiguous_evidence_paragraph` when several fit); thought = the fixed template + that title's
supporting sentences that contain the object (none: drop `object_not_in_supporting_sentences`,
e.g. a date written another way); answer = the object. Summary: "The relation of subject is
object." per hop. Final answer: the gold answer, kept when it follows from the hops: for
compositional and inference questions it must be the last object (else drop
`answer_not_last_hop`); for comparison and bridge_comparison it must be yes / no or one of the
compared subjects (else drop `answer_not_derivable`). The comparison itself (which date is
earlier) is not written by rule: the final thought is empty. The extra fields of some copies
(qa_pairs, explanation) are not used: they are not part of the authors' format.
"""

from __future__ import annotations

from qa_forge.core.records import Record
from qa_forge.core.textnorm import normalize_answer
from qa_forge.data.sources import Drop, join_sentences
from qa_forge.traces import hotpotqa
from qa_forge.traces.build import RULE, answered, relation_fact, relation_query, safe_query
from qa_forge.traces.text import has, name_of, overlap, same, squeeze

SRC = "2wikimultihopqa"
CHAIN_TYPES = ("compositional", "inference")
COMPARE_TYPES = ("comparison", "bridge_comparison")


def clean_subject(subject: str) -> str:
    """A subject cut at an unclosed bracket ("The Charm of La Bohème (German: Zauber der Boheme")."""
    if subject.count("(") > subject.count(")"):
        subject = subject[: subject.rindex("(")].strip() or subject
    return subject


def evidence_title(subject: str, obj: str, gold: dict[str, list[str]]) -> str:
    """The supporting title an evidence triple reads from (see the module's rule)."""
    by_name = [t for t in gold if same(name_of(t), subject) or same(t, subject)]
    if len(by_name) > 1:
        by_name = [t for t in by_name if any(has(s, obj) for s in gold[t])]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise Drop("ambiguous_evidence_paragraph")
    # the subject is written another way ("Helmiä ja sikoja" for "Pearls and Pigs"): a supporting
    # paragraph whose sentences hold the object, other than the object's own page
    by_object = [t for t in gold if any(has(s, obj) for s in gold[t]) and not same(name_of(t), obj)]
    if len(by_object) > 1:
        best = max(overlap(t, subject) for t in by_object)
        by_object = [t for t in by_object if overlap(t, subject) == best]
    if len(by_object) == 1:
        return by_object[0]
    raise Drop("evidence_paragraph_not_found" if not by_object else "ambiguous_evidence_paragraph")


def compose(item: dict) -> Record:
    paras = hotpotqa.paragraphs(item)
    gold = hotpotqa.supporting(item, paras)
    evidences = item.get("evidences") or []
    if not evidences:
        raise Drop("no_evidences")
    r = hotpotqa.base_record(item, paras, gold, SRC)
    answer, kind = r.final_answer, item.get("type")
    if not answer:
        raise Drop("no_answer")
    subs, facts = [], []
    for triple in evidences:
        subject, relation, obj = (squeeze(str(x)) for x in triple)
        subject = clean_subject(subject)
        if not (subject and relation and obj):
            raise Drop("malformed_evidence")
        title = evidence_title(subject, obj, gold)
        sentences = [s for s in gold[title] if has(s, obj)]
        if not sentences:
            raise Drop("object_not_in_supporting_sentences")
        query = safe_query([relation_query(subject, relation)], obj)
        subs.append(answered(query, title, join_sentences(paras[title]), sentences, obj))
        facts.append(relation_fact(subject, relation, obj))
    if kind in CHAIN_TYPES:
        if not same(answer, subs[-1].answer):
            raise Drop("answer_not_last_hop")
    elif kind in COMPARE_TYPES:
        subjects = [squeeze(str(t[0])) for t in evidences]
        if normalize_answer(answer) not in ("yes", "no") and not any(same(answer, s) for s in subjects):
            raise Drop("answer_not_derivable")
    else:
        raise Drop("unknown_type")
    r.sub_questions = subs
    r.summary = " ".join(facts)
    r.final_origin = RULE
    r.meta["trace"] = {"rule": f"2wikimultihopqa/{kind}", "evidences": [list(t) for t in evidences]}
    return r
