"""Traces composed by rule (qa_forge/traces): the pure rules on small inputs, then hand-checked items
of every rule source in ../shared/data (each expected value below was read off the raw item, not
computed by the code), a property over every item of each shared file (no hop query contains its
hop's answer), the composed / dropped counts per file, the pipeline's filter, and the renderer."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import yaml

from qa_forge.chat.render import to_messages
from qa_forge.core.io import UserError
from qa_forge.core.records import Origin
from qa_forge.core.textnorm import abstains
from qa_forge.data.filter import FilterParams, check
from qa_forge.data.sources import Drop, join_sentences, loader
from qa_forge.traces import ABSTAIN, RULE_SOURCES, compose, compose_all
from qa_forge.traces import hotpotqa as hp
from qa_forge.traces import musique as mq
from qa_forge.traces import squad_v2 as sq2
from qa_forge.traces import twowiki as tw
from qa_forge.traces.build import relation_fact, relation_query, safe_query, says
from qa_forge.traces.text import has, mention, name_of, name_variants, sentence_at, sentences, squeeze
from tests.conftest import ROOT

FILES = {
    "hotpotqa": "hotpotqa/train_100.json",
    "musique": "musique/train_full_first100.jsonl",
    "2wikimultihopqa": "2wikimultihopqa/train_500.json",
    "squad_v2": "squad_v2/train_11articles.json",
}
RULE = Origin(kind="rule")


@cache
def _items(root: Path, src: str) -> list[dict]:
    path = root / FILES[src]
    return loader(src).read_local(path)


def item(shared: Path, src: str, ident: str) -> dict:
    key = {"hotpotqa": "_id", "2wikimultihopqa": "_id"}.get(src, "id")
    return next(it for it in _items(shared, src) if it[key] == ident)


def thoughts_quote(sq, sentences_: list[str]) -> None:
    for s in sentences_:
        assert s in sq.thought, (s, sq.thought)


# --- the pure rules --------------------------------------------------------------------------------


def test_sentences_keep_abbreviations_initials_and_footnotes_together():
    text = 'It pulls objects.[e] The display shows. Mr. Smith went to Washington, D.C. in 1990. B. Reeves Eason died.  He said "Hi." End!'
    assert sentences(text) == [
        "It pulls objects.[e]",
        "The display shows.",
        "Mr. Smith went to Washington, D.C. in 1990.",
        "B. Reeves Eason died.",
        'He said "Hi."',
        "End!",
    ]


def test_sentence_at_covers_a_span_and_joins_across_a_wrong_boundary():
    text = "First one. Second has the span. Third."
    start = text.index("the span")
    assert sentence_at(text, start, start + 8) == "Second has the span."
    assert sentence_at(text, text.index("one"), text.index("Second") + 6) == "First one. Second has the span."


def test_join_sentences_reads_hotpot_and_2wiki_alike():
    assert join_sentences(["A b.", " C d."]) == "A b. C d."  # HotpotQA: the space is in the sentence
    assert join_sentences(["A b.", "C d."]) == "A b. C d."  # 2Wiki: it is not
    assert squeeze(" a\n b  c ") == "a b c"


def test_names_and_mentions():
    assert name_of("Lilu (mythology)") == "Lilu"
    assert name_variants("Leland, North Carolina") == ["Leland, North Carolina", "Leland"]
    assert name_variants("Eddie &quot;The Eagle&quot; Edwards") == ['Eddie "The Eagle" Edwards']
    assert mention("have been shot in or around Leland.", "Leland, North Carolina") == "Leland"
    assert mention("following Ezer Weizman's resignation", "Ezer Weizman") == "Ezer Weizman"
    assert mention("nothing here", "Ezer Weizman") is None
    assert has("The Hukilau Song", "hukilau song") and not has("Maximum Overdrive", "Max")


def test_queries_and_facts():
    assert relation_query("Dillon Francis", "date of birth") == "date of birth of Dillon Francis"
    assert relation_query("Old Persian", "part of") == "Old Persian part of"
    assert relation_fact("Get Low", "performer", "Dillon Francis") == "The performer of Get Low is Dillon Francis."
    assert relation_fact("Old Persian", "part of", "Iranian languages") == "Old Persian part of Iranian languages."
    assert safe_query(["Who is X?", "X"], "Y") == "Who is X?"
    assert safe_query(["Who is the Y of X?", "X  facts"], "y") == "X facts"
    with pytest.raises(Drop, match="query_contains_answer"):
        safe_query(["Is it Y?"], "Y")
    assert says("T", ["One.", "Two\nlines."]) == "The paragraph on T says: One. Two lines."
    assert says(None, ["One."]) == "The paragraph says: One."


def test_hotpot_attribute_words():
    q = "Are Watertown International Airport and Alexandria International Airport both airports in the same state ?"
    assert hp.attribute_words(q, ["Watertown International Airport", "Alexandria International Airport"]) == "airports state"


def test_musique_hop_rules():
    assert mq.clean_span(" Russia * ") == "Russia"
    assert mq.hop_query("Nissedal >> country", []) == ("country of Nissedal", "Nissedal\x1fcountry")
    assert mq.hop_query("In what year did #1 die?", ["Freddie Mercury"])[0] == "In what year did Freddie Mercury die?"
    with pytest.raises(Drop, match="bad_placeholder"):
        mq.hop_query("Where is #2?", ["A"])
    para = "He was born in 1900. He was the only Catholic signatory of the Declaration of Independence. Carroll lived in Maryland."
    assert mq.supporting_sentences(para, "Carroll", "who signed the declaration of independence") == [
        "He was the only Catholic signatory of the Declaration of Independence.",
        "Carroll lived in Maryland.",
    ]
    with pytest.raises(Drop, match="hop_answer_not_in_paragraph"):
        mq.supporting_sentences(para, "Virginia", "where")


def test_squad_sentence_without_offsets():
    context = "Paris is big. Paris is old. Rome is far."
    assert sq2.supporting_sentence(context, "Rome", None) == "Rome is far."
    assert sq2.supporting_sentence(context, "Paris", context.index("Paris is old")) == "Paris is old."
    with pytest.raises(Drop, match="ambiguous_span"):
        sq2.supporting_sentence(context, "Paris", None)
    with pytest.raises(Drop, match="answer_not_in_context"):
        sq2.supporting_sentence(context, "Berlin", None)


def test_twowiki_evidence_title_and_subject():
    gold = {
        "Pearls and Pigs": ["Helmiä ja sikoja is a film directed by Perttu Leppä."],
        "Perttu Leppä": ["Perttu Leppä was born in Joensuu."],
    }
    assert tw.evidence_title("Helmiä ja sikoja", "Perttu Leppä", gold) == "Pearls and Pigs"  # not the object's own page
    assert tw.evidence_title("Perttu Leppä", "Joensuu", gold) == "Perttu Leppä"
    with pytest.raises(Drop, match="evidence_paragraph_not_found"):
        tw.evidence_title("Someone", "Nowhere", gold)
    assert tw.clean_subject("The Charm of La Bohème (German: Zauber der Boheme") == "The Charm of La Bohème"


def test_compose_unknown_source_and_compose_all_counts():
    with pytest.raises(UserError, match="no rule traces"):
        compose("boolq", {})
    records, reasons = compose_all("squad_v2", [{"id": "1", "question": "Is it X?", "context": "It is X.", "answers": ["X"]}])
    assert records == [] and reasons == Counter({"query_contains_answer": 1})


def test_abstention_is_the_pipelines():
    params = yaml.safe_load((ROOT / "params/base.yaml").read_text())
    assert ABSTAIN == params["fetch"]["unanswerable_answer"]
    assert abstains(ABSTAIN, params["filter"]["abstain_phrases"])


# --- hand-checked items ---------------------------------------------------------------------------


def test_hotpotqa_bridge_named_link(shared):
    r = compose("hotpotqa", item(shared, "hotpotqa", "5a8718c25542991e771816c7"))
    q = "Who directed the film that was shot in or around Leland, North Carolina in 1986"
    assert r.id == "hotpotqa-5a8718c25542991e771816c7" and r.multihop and r.question == q
    h1, h2 = r.sub_questions
    assert (h1.question, h1.title, h1.answer) == (q, "Leland, North Carolina", "Maximum Overdrive")
    thoughts_quote(
        h1,
        [
            (
                'A number of movies, such as "Maximum Overdrive" (1986), "Domestic Disturbance" (2001), and "We\'re the Millers" (2013) '
                "have been shot in or around Leland."
            )
        ],
    )
    assert (h2.question, h2.title, h2.answer) == (f"Maximum Overdrive: {q}", "Maximum Overdrive", "Stephen King")
    thoughts_quote(h2, ["Maximum Overdrive is a 1986 American science fiction horror comedy film written and directed by Stephen King."])
    assert h2.paragraph.startswith("Maximum Overdrive is a 1986 American science fiction horror comedy film")
    assert (
        r.summary
        == "The paragraph on Leland, North Carolina names Maximum Overdrive. The paragraph on Maximum Overdrive gives Stephen King."
    )
    assert (r.final_answer, r.short_answer, r.final_origin) == ("Stephen King", "Stephen King", RULE)
    assert all(h.answer_origin == RULE and h.short_answer is None for h in r.sub_questions)
    assert r.meta["answers"] == ["Stephen King"] and r.meta["type"] == "bridge" and len(r.meta["context"]) == 10


def test_hotpotqa_bridge_described_link(shared):
    """The question describes the first page without naming it; the answer page names it."""
    r = compose("hotpotqa", item(shared, "hotpotqa", "5a809f815542996402f6a5b7"))
    q = "Who wrote a song after attending a luau in the Koolauloa District on the island of Oahu in Honolulu County?"
    h1, h2 = r.sub_questions
    assert (h1.question, h1.title, h1.answer) == (q, "Laie, Hawaii", "Laie, Hawaii")
    thoughts_quote(
        h1,
        [
            "Laie is a census-designated place (CDP) located in the Koolauloa District on the island of Oahu in Honolulu County, Hawaii, United States."
        ],
    )
    assert (h2.question, h2.title, h2.answer) == (f"Laie, Hawaii: {q}", "The Hukilau Song", "Jack Owens")
    thoughts_quote(h2, ['"The Hukilau Song" is a song written by Jack Owens in 1948 after attending a luau in Laie, Hawaii.'])
    assert r.summary == "The question describes Laie, Hawaii. The paragraph on The Hukilau Song gives Jack Owens."
    assert r.final_answer == "Jack Owens"


def test_hotpotqa_comparison(shared):
    r = compose("hotpotqa", item(shared, "hotpotqa", "5ae40c465542996836b02c25"))
    nolan = "Christopher Edward Nolan ( ; born 30 July 1970) is an English-American film director, producer, and screenwriter."
    kalathil = "Sathish Kalathil (മലയാളം: ) is an Indian film and documentary Director and Producer in malayalam."
    h1, h2 = r.sub_questions
    assert (h1.question, h1.title, h1.answer) == ("Christopher Nolan film directors", "Christopher Nolan", nolan)
    assert (h2.question, h2.title, h2.answer) == ("Sathish Kalathil film directors", "Sathish Kalathil", kalathil)
    assert h1.thought == "The paragraph on Christopher Nolan has what the question asks about Christopher Nolan."
    assert r.summary == f"{nolan} {kalathil}"
    assert (r.final_answer, r.short_answer, r.final_thought) == ("yes", "yes", "")


def test_hotpotqa_comparison_answer_is_an_entity(shared):
    r = compose(
        "hotpotqa", item(shared, "hotpotqa", "5a7c1f325542996dd594b892")
    )  # Which band was formed first The Exies or Circus Diablo ?
    assert [h.question for h in r.sub_questions] == ["The Exies band formed first", "Circus Diablo band formed first"]
    assert r.sub_questions[0].answer == "The Exies were an American rock band from Los Angeles, California, formed in 1997."
    assert r.final_answer == "The Exies"


def test_hotpotqa_drops(shared):
    # "Which Danish heavy metal band from Copenhagen released a compilation album ...?" => Mercyful Fate, the bridge page itself
    with pytest.raises(Drop, match="answer_is_bridge_entity"):
        compose("hotpotqa", item(shared, "hotpotqa", "5ac0eb285542992a796dedb7"))
    # "Which of the two tornado outbreaks killed the most people?": no page names the other
    with pytest.raises(Drop, match="no_bridge_link"):
        compose("hotpotqa", item(shared, "hotpotqa", "5ae7b39f554299540e5a5650"))


def test_twowiki_compositional(shared):
    r = compose("2wikimultihopqa", item(shared, "2wikimultihopqa", "93402dbc0bdb11eba7f7acde48001122"))
    assert r.id == "2wikimultihopqa-93402dbc0bdb11eba7f7acde48001122" and r.src == "2wikimultihopqa"
    h1, h2 = r.sub_questions
    assert (h1.question, h1.title, h1.answer) == ("performer of Get Low", "Get Low (Dillon Francis and DJ Snake song)", "Dillon Francis")
    thoughts_quote(
        h1, ['"Get Low" is a 2014 single by American electronic music producer Dillon Francis and French DJ and producer DJ Snake.']
    )
    assert (h2.question, h2.title, h2.answer) == ("date of birth of Dillon Francis", "Dillon Francis", "October 5, 1987")
    thoughts_quote(h2, ["Dillon Hart Francis (born October 5, 1987) is an American electronic musician, record producer and DJ."])
    assert r.summary == "The performer of Get Low is Dillon Francis. The date of birth of Dillon Francis is October 5, 1987."
    assert (r.final_answer, r.short_answer) == ("October 5, 1987", "October 5, 1987")


def test_twowiki_bridge_comparison_and_spacing(shared):
    r = compose("2wikimultihopqa", item(shared, "2wikimultihopqa", "58f39f7808b511ebbd88ac1f6bf848b6"))
    assert [(h.question, h.answer) for h in r.sub_questions] == [
        ("director of The Prairie King", "B. Reeves Eason"),
        ("director of Confessions of an Opium Eater", "Albert Zugsmith"),
        ("date of death of B. Reeves Eason", "June 9, 1956"),
        ("date of death of Albert Zugsmith", "October 26, 1993"),
    ]
    thoughts_quote(
        r.sub_questions[2],
        [
            "William Reeves Eason( October 2, 1886 – June 9, 1956), known as B. Reeves Eason, was an American film director, actor and screenwriter."
        ],
    )
    assert r.final_answer == "The Prairie King"


def test_twowiki_paragraphs_are_spaced(shared):
    """2Wiki sentences carry no leading space: joined with one (the loader's "".join glues them)."""
    r = compose("2wikimultihopqa", item(shared, "2wikimultihopqa", "93402dbc0bdb11eba7f7acde48001122"))
    theodred = next(c["text"] for c in r.meta["context"] if c["title"] == "Theodred II (Bishop of Elmham)")
    assert theodred.startswith("Theodred II was a medieval Bishop of Elmham. The date of Theodred's consecration unknown")


def test_twowiki_comparison_and_drop(shared):
    r = compose("2wikimultihopqa", item(shared, "2wikimultihopqa", "2f472466097711ebbdb0ac1f6bf848b6"))
    assert [(h.question, h.answer) for h in r.sub_questions] == [
        ("country of Krasnoye, Prokhorovsky District, Belgorod Oblast", "Russia"),
        ("country of Stanari", "Bosnia and Herzegovina"),
    ]
    assert r.final_answer == "no"
    # Kurt Szilier: the evidence says "1 January 1957", the sentence "born 11 January 1957"
    with pytest.raises(Drop, match="object_not_in_supporting_sentences"):
        compose("2wikimultihopqa", item(shared, "2wikimultihopqa", "f551779208fc11ebbdadac1f6bf848b6"))


def test_musique_answerable(shared):
    r = compose("musique", item(shared, "musique", "2hop__131693_45439"))
    h1, h2 = r.sub_questions
    assert (h1.question, h1.title, h1.answer) == (
        "Which state is Routzahn-Miller Farmstead located?",
        "Routzahn-Miller Farmstead",
        "Maryland",
    )
    thoughts_quote(
        h1,
        [
            "The Routzahn-Miller Farmstead is a historic home and farm complex located at Middletown, Frederick County, Maryland, United States."
        ],
    )
    assert (h2.question, h2.title, h2.answer) == (
        "who signed the declaration of independence from Maryland",
        "Charles Carroll of Carrollton",
        "Charles Carroll",
    )
    assert h2.thought.startswith(
        "The paragraph on Charles Carroll of Carrollton says: Charles Carroll (September 19, 1737 -- November 14, 1832),"
    )
    assert (
        r.summary
        == "Which state is Routzahn-Miller Farmstead located: Maryland. who signed the declaration of independence from Maryland: Charles Carroll."
    )
    assert (r.final_answer, r.short_answer, r.answerable) == ("Charles Carroll", "Charles Carroll", True)


def test_musique_knowledge_base_hops(shared):
    """'Count 'Em 88 >> performer', '#1 >> place of birth': dropped by the loader, kept by the rule."""
    r = compose("musique", item(shared, "musique", "2hop__758324_851079"))
    assert [(h.question, h.title, h.answer) for h in r.sub_questions] == [
        ("performer of Count 'Em 88", "Count 'Em 88", "Ahmad Jamal"),
        ("place of birth of Ahmad Jamal", "Pittsburgh (album)", "Pittsburgh"),
    ]
    assert r.summary == "The performer of Count 'Em 88 is Ahmad Jamal. The place of birth of Ahmad Jamal is Pittsburgh."


def test_musique_unanswerable_ends_at_first_unsupported_hop(shared):
    r = compose("musique", item(shared, "musique", "2hop__150985_444333"))
    h1, h2 = r.sub_questions
    assert (h1.question, h1.title, h1.answer, h1.unanswerable) == (
        "What is the name of the publisher of Journal of Media Economics?",
        "Journal of Media Economics",
        "Routledge",
        False,
    )
    thoughts_quote(
        h1,
        [
            "The Journal of Media Economics is a peer-reviewed academic journal covering all aspects of media economics published by Routledge."
        ],
    )
    assert (h2.question, h2.title, h2.unanswerable) == ("Routledge founded by", "Journal of Ornithology", True)
    assert h2.answer == ABSTAIN and h2.thought == "The paragraph on Journal of Ornithology does not contain the answer."
    assert not has(h2.paragraph, "George Routledge")
    assert (r.final_answer, r.short_answer, r.answerable, r.meta["answers"]) == (ABSTAIN, None, False, [])
    assert r.summary.endswith("The retrieved paragraph does not answer: Routledge founded by.")


def test_musique_unanswerable_first_hop(shared):
    r = compose("musique", item(shared, "musique", "2hop__42543_20093"), abstain="Cannot answer.")
    (h1,) = r.sub_questions
    assert (h1.question, h1.title, h1.answer) == (
        "who wrote crazy little thing called love original artist",
        "Every Little Thing U Do",
        "Cannot answer.",
    )
    assert r.final_answer == "Cannot answer." and r.multihop and not r.answerable


def test_squad_answerable(shared):
    r = compose("squad_v2", item(shared, "squad_v2", "56be85543aeaaa14008c9063"))
    (h,) = r.sub_questions
    assert (h.question, h.title, h.answer, h.short_answer) == (
        "When did Beyonce start becoming popular?",
        "Beyoncé",
        "in the late 1990s",
        "in the late 1990s",
    )
    assert h.thought == (
        "The paragraph on Beyoncé says: Born and raised in Houston, Texas, she performed in various singing and dancing competitions as a "
        "child, and rose to fame in the late 1990s as lead singer of R&B girl-group Destiny's Child."
    )
    assert h.paragraph.startswith("Beyoncé Giselle Knowles-Carter (/biːˈjɒnseɪ/ bee-YON-say)")
    assert (r.multihop, r.final_answer, r.short_answer, r.id) == (
        False,
        "in the late 1990s",
        "in the late 1990s",
        "squad_v2-56be85543aeaaa14008c9063",
    )


def test_squad_unanswerable(shared):
    r = compose("squad_v2", item(shared, "squad_v2", "5a8d7bf7df8bba001a0f9ab1"))
    (h,) = r.sub_questions
    assert (h.question, h.title, h.unanswerable) == (
        "What category of game is Legend of Zelda: Australia Twilight?",
        "The Legend of Zelda: Twilight Princess",
        True,
    )
    assert h.thought == "The paragraph on The Legend of Zelda: Twilight Princess does not contain the answer."
    assert (h.answer, r.final_answer, r.short_answer) == (ABSTAIN, ABSTAIN, None)
    assert r.meta["plausible_answers"] == ["action-adventure"]


# --- every item of each shared file ---------------------------------------------------------------

COUNTS = {
    "hotpotqa": (
        100,
        76,
        {
            "query_contains_bridge_entity": 6,
            "no_bridge_link": 5,
            "answer_is_bridge_entity": 8,
            "answer_not_derivable": 4,
            "answer_in_both_paragraphs": 1,
        },
    ),
    "musique": (100, 99, {"hop_answer_not_in_paragraph": 1}),
    "2wikimultihopqa": (
        500,
        446,
        {"object_not_in_supporting_sentences": 46, "supporting_sentence_missing": 6, "evidence_paragraph_not_found": 2},
    ),
    "squad_v2": (5147, 5122, {"query_contains_answer": 25}),
}


@cache
def _composed(root: Path, src: str):
    return compose_all(src, _items(root, src))


@pytest.mark.parametrize("src", RULE_SOURCES)
def test_counts_per_file(shared, src, capsys):
    records, reasons = _composed(shared, src)
    n = len(_items(shared, src))
    with capsys.disabled():
        kinds = Counter(r.meta["trace"]["rule"] for r in records)
        print(f"\n{FILES[src]}: {n} items, {len(records)} composed ({dict(kinds)}), dropped {dict(reasons)}")
    assert (n, len(records), dict(reasons)) == COUNTS[src]
    assert len(records) + sum(reasons.values()) == n
    assert len({r.id for r in records}) == len(records)


@pytest.mark.parametrize("src", RULE_SOURCES)
def test_no_hop_query_contains_its_answer(shared, src):
    records, _ = _composed(shared, src)
    hidden = {}
    if src == "musique":  # an abstaining hop's query must not hold its hidden gold answer either
        for it in _items(shared, src):
            hidden[f"musique-{it['id']}"] = [mq.clean_span(h["answer"]) for h in it["question_decomposition"]]
    for r in records:
        for k, sq in enumerate(r.sub_questions):
            assert sq.question and sq.paragraph and sq.thought and sq.answer, (r.id, k)
            if not sq.unanswerable:
                assert not has(sq.question, sq.answer), (r.id, sq.question, sq.answer)
            elif r.id in hidden:
                assert not has(sq.question, hidden[r.id][k]), (r.id, sq.question)
            assert sq.answer_origin == RULE
        assert r.final_origin == RULE and r.final_answer
        assert "\n" not in "".join(sq.thought for sq in r.sub_questions) + r.summary


@pytest.mark.parametrize("src", RULE_SOURCES)
def test_pipeline_filter_keeps_every_trace(shared, src):
    p = yaml.safe_load((ROOT / "params/base.yaml").read_text())["filter"]
    params = FilterParams(**p)
    records, _ = _composed(shared, src)
    rejected = [(r.id, check(r, params)) for r in records if check(r, params) is not None]
    assert rejected == []


def test_musique_counts_keep_both_kinds(shared):
    records, _ = _composed(shared, "musique")
    assert Counter(r.answerable for r in records) == Counter({True: 49, False: 50})


# --- rendering ------------------------------------------------------------------------------------


def retrieve_queries(messages: list[dict]) -> list[str]:
    out = []
    for m in messages:
        if m["role"] == "assistant" and "<tool_call>" in m["content"]:
            payload = m["content"].split("<tool_call>")[1].split("</tool_call>")[0]
            out.append(json.loads(payload)["arguments"]["query"])
    return out


def test_a_rule_trace_renders_as_the_training_conversation(shared):
    r = compose("hotpotqa", item(shared, "hotpotqa", "5a8718c25542991e771816c7"))
    msgs = to_messages(r)
    q = "Who directed the film that was shot in or around Leland, North Carolina in 1986"
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert retrieve_queries(msgs) == [q, f"Maximum Overdrive: {q}"]
    assert msgs[3]["content"].startswith("Leland, North Carolina: ")
    assert "Thought: The paragraph on Leland, North Carolina says: A number of movies" in msgs[4]["content"]
    assert "Answer: Maximum Overdrive\n<tool_call>" in msgs[4]["content"]
    final = msgs[-1]["content"]
    assert final.endswith(
        "Summary: The paragraph on Leland, North Carolina names Maximum Overdrive. The paragraph on Maximum Overdrive gives Stephen King.\n"
        "Answer: Stephen King\nShort answer: Stephen King"
    )
    native = to_messages(r, native_tools=True)
    assert [m["tool_calls"][0]["function"]["arguments"]["query"] for m in native if m.get("tool_calls")] == [q, f"Maximum Overdrive: {q}"]


def test_an_abstaining_trace_renders(shared):
    r = compose("musique", item(shared, "musique", "2hop__150985_444333"))
    msgs = to_messages(r)
    assert retrieve_queries(msgs) == ["What is the name of the publisher of Journal of Media Economics?", "Routledge founded by"]
    assert msgs[-1]["content"].endswith(f"Answer: {ABSTAIN}")
    assert "Short answer" not in msgs[-1]["content"]
