"""HotpotQA by rule. HotpotQA has no human decomposition: only the two supporting paragraphs, their
supporting sentences (supporting_facts) and the question type. The rules, and what they drop:

Bridge (one paragraph leads to the other). The answer paragraph P2 is the one whose supporting
sentences contain the answer; the other is P1. When both contain it, P2 is the one P1's sentences
name (else drop `answer_in_both_paragraphs`); when neither does, drop
`answer_not_in_supporting_sentences` (yes/no bridge questions among them). The bridge entity E
(hop 1's answer) is found by a name link between the supporting sentences:
  (a) P1's sentences name P2's page ("... such as "Maximum Overdrive" (1986) ..."): E is that name
      as the sentences write it ("Lilu" for "Lilu (mythology)", "Leland" for "Leland, North Carolina");
  (b) else P2's sentences name P1's page (the question describes P1 without naming it): E is P1's
      name (its title without the disambiguation);
  neither: drop `no_bridge_link` (links by pronoun, alias or paraphrase are not found).
When E is the answer itself (the question asks for the bridge page, P2 only confirms it), every
hop-2 query would hold the answer: drop `answer_is_bridge_entity`.
Hop 1: query = the question, or, when the question already names E, P1's name as the question
writes it (none: drop `query_contains_bridge_entity`); paragraph P1; thought = the template +
P1's supporting sentences; answer E. Hop 2: query = "E: question" (or E alone when the question
contains the answer; else drop `query_contains_answer`); paragraph P2; thought = the template +
P2's supporting sentences; answer = the gold answer. Summary: "The paragraph on P1 names E." (or
"The question describes E.") + "The paragraph on P2 gives <answer>." Limits: the hop-2 query
carries the whole question (no rule can rewrite the question around E); hop 1's answer is a page
name, not an answer to the question; a supporting sentence may hold more than the hop needs.

Comparison (the same attribute of two entities). Each entity is named in the question (else drop
`entity_not_in_question`); hops follow the order of the names in the question; query = entity name
+ the attribute words (the question without the two names and function words: "Christopher Nolan
film directors"). HotpotQA marks no value per entity, so the hop's answer is its verbatim
supporting sentence(s) and its thought the fixed `ABOUT` template. The summary is both hops'
sentences; the final answer is the gold one, kept only when it is yes / no, contains one of the two
names, or is a phrase both paragraphs' sentences contain (else drop `answer_not_derivable`). No
rule writes the comparison itself (which year is earlier): the final thought is empty.
"""

from __future__ import annotations

from qa_forge.core.records import Record
from qa_forge.core.textnorm import normalize_answer
from qa_forge.data.sources import Drop, join_sentences
from qa_forge.traces.build import ABOUT, RULE, answered, safe_query
from qa_forge.traces.text import has, mention, name_variants, remove_phrase, squeeze, tokens

SRC = "hotpotqa"
# words that carry no attribute in a comparison question ("Are X and Y both film directors?" -> film directors)
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "nor",
        "but",
        "both",
        "either",
        "neither",
        "same",
        "as",
        "than",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "they",
        "their",
        "them",
        "there",
        "here",
        "s",
    ]
)
BRIDGE_FACT_NAMED = "The paragraph on {title} names {entity}."
BRIDGE_FACT_DESCRIBED = "The question describes {entity}."
ANSWER_FACT = "The paragraph on {title} gives {answer}."


def paragraphs(item: dict) -> dict[str, list[str]]:
    context = item.get("context") or []
    if not context:
        raise Drop("no_context")
    return {title: list(sents) for title, sents in context}


def supporting(item: dict, paras: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each supporting title (in order of first mention) with its supporting sentences, verbatim and stripped."""
    out: dict[str, list[str]] = {}
    for title, i in item["supporting_facts"]:
        if title not in paras:
            raise Drop("supporting_paragraph_missing")
        sents = paras[title]
        out.setdefault(title, [])
        if isinstance(i, int) and 0 <= i < len(sents) and sents[i].strip() and sents[i].strip() not in out[title]:
            out[title].append(sents[i].strip())
    if any(not s for s in out.values()):
        raise Drop("supporting_sentence_missing")
    return out


def attribute_words(question: str, names: list[str]) -> str:
    """The question without the compared names and function words: "film directors"."""
    rest = question
    for n in sorted(names, key=len, reverse=True):
        rest = remove_phrase(rest, n)
    seen: list[str] = []
    for w in tokens(rest):
        if w.lower() not in FUNCTION_WORDS and w.lower() not in (s.lower() for s in seen):
            seen.append(w)
    return " ".join(seen)


def base_record(item: dict, paras: dict[str, list[str]], gold: dict[str, list[str]], src: str) -> Record:
    answer = str(item["answer"]).strip()
    return Record(
        id=f"{src}-{item['_id']}",
        src=src,
        question=item["question"].strip(),
        multihop=True,
        short_answer=answer,
        final_answer=answer,
        final_origin=RULE,
        meta={
            "answers": [answer],
            "type": item.get("type"),
            "level": item.get("level"),
            "context": [{"title": t, "text": join_sentences(s)} for t, s in paras.items()],
            "supporting_titles": list(gold),
            "supporting_facts": [list(f) for f in item["supporting_facts"]],
        },
    )


def bridge(item: dict, paras: dict[str, list[str]], gold: dict[str, list[str]], r: Record) -> Record:
    (t_a, s_a), (t_b, s_b) = gold.items()
    answer, question = r.final_answer, r.question
    holds = {t_a: has(" ".join(s_a), answer), t_b: has(" ".join(s_b), answer)}
    if not any(holds.values()):
        raise Drop("answer_not_in_supporting_sentences")
    if all(holds.values()):
        forward = [t2 for t1, t2 in ((t_a, t_b), (t_b, t_a)) if mention(" ".join(gold[t1]), t2)]
        if len(forward) != 1:
            raise Drop("answer_in_both_paragraphs")
        t2 = forward[0]
    else:
        t2 = t_a if holds[t_a] else t_b
    t1 = t_b if t2 == t_a else t_a
    named = mention(" ".join(gold[t1]), t2)  # (a) P1's sentences name P2
    described = None if named else mention(" ".join(gold[t2]), t1)  # (b) P2's sentences name P1
    entity = named or described
    if not entity:
        raise Drop("no_bridge_link")
    if not named:
        entity = name_variants(t1)[0]  # (b): P1's own name, as its title gives it
    if has(entity, answer) or has(answer, entity):
        raise Drop("answer_is_bridge_entity")
    q1 = safe_query([question, mention(question, t1) or ""], entity, "query_contains_bridge_entity")
    q2 = safe_query([f"{entity}: {question}", entity], answer)
    r.sub_questions = [
        answered(q1, t1, join_sentences(paras[t1]), gold[t1], entity),
        answered(q2, t2, join_sentences(paras[t2]), gold[t2], answer),
    ]
    first = BRIDGE_FACT_NAMED.format(title=t1, entity=entity) if named else BRIDGE_FACT_DESCRIBED.format(entity=entity)
    r.summary = f"{first} {ANSWER_FACT.format(title=t2, answer=answer)}"
    r.meta["trace"] = {"rule": "hotpotqa/bridge", "link": "named" if named else "described", "bridge_entity": entity}
    return r


def comparison(item: dict, paras: dict[str, list[str]], gold: dict[str, list[str]], r: Record) -> Record:
    answer, question = r.final_answer, r.question
    found = []
    for title in gold:
        name = mention(question, title)
        if not name:
            raise Drop("entity_not_in_question")
        found.append((normalize_answer(question).find(normalize_answer(name)), title, name))
    found.sort()
    names = [n for _, _, n in found]
    both = all(has(" ".join(gold[t]), answer) for _, t, _ in found)
    if not (normalize_answer(answer) in ("yes", "no") or any(has(answer, n) for _, _, n in found) or both):
        raise Drop("answer_not_derivable")
    attribute = attribute_words(question, names)
    subs, facts = [], []
    for _, title, name in found:
        statement = " ".join(squeeze(s) for s in gold[title])
        query = safe_query([f"{name} {attribute}", name], statement)
        sq = answered(query, title, join_sentences(paras[title]), gold[title], statement)
        sq.thought = ABOUT.format(title=title, entity=name)
        subs.append(sq)
        facts.append(statement)
    r.sub_questions = subs
    r.summary = " ".join(facts)
    r.meta["trace"] = {"rule": "hotpotqa/comparison", "entities": names, "attribute": attribute}
    return r


def compose(item: dict, src: str = SRC) -> Record:
    paras = paragraphs(item)
    gold = supporting(item, paras)
    if len(gold) != 2:
        raise Drop("not_two_paragraphs")
    r = base_record(item, paras, gold, src)
    if not r.final_answer:
        raise Drop("no_answer")
    kind = item.get("type")
    if kind == "bridge":
        return bridge(item, paras, gold, r)
    if kind == "comparison":
        return comparison(item, paras, gold, r)
    raise Drop("unknown_type")
