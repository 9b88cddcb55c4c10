"""filter: each rejection reason on a hand-made record, counts in the report."""

import pytest

from qa_forge.core.records import Origin, Record, SubQuestion
from qa_forge.data.filter import check, filter_records
from tests.params import params as section

P = section("filter")
M = Origin(kind="model", model="m", temperature=0.0)


def gen(
    question="Which is taller, the Eiffel Tower or the Statue of Liberty?", entities=("Eiffel Tower", "Statue of Liberty"), **kw
) -> Record:
    subs = [
        SubQuestion(
            question="How tall is the Eiffel Tower?",
            paragraph="The Eiffel Tower is 330 metres tall.",
            thought="It says 330 m.",
            answer="The Eiffel Tower is 330 metres tall.",
            answer_origin=M,
        ),
        SubQuestion(
            question="How tall is the Statue of Liberty?",
            paragraph="The Statue of Liberty is 93 metres tall.",
            thought="It says 93 m.",
            answer="It is 93 metres tall.",
            answer_origin=M,
        ),
    ]
    base = {
        "id": "g-1",
        "src": "gen_entities",
        "question": question,
        "multihop": True,
        "sub_questions": subs,
        "summary": "330 m vs 93 m.",
        "final_answer": "The Eiffel Tower is taller.",
        "final_origin": M,
        "meta": {"entities": list(entities)},
    }
    base.update(kw)
    return Record(**base)


def squad(answer: str, golds=("Paris",), unanswerable=False) -> Record:
    sq = SubQuestion(
        question="What is the capital of France?",
        paragraph="Paris is the capital of France.",
        answer=answer,
        short_answer=None if unanswerable else golds[0],
        unanswerable=unanswerable,
        answer_origin=M,
    )
    return Record(
        id="s-1",
        src="squad_v2",
        question=sq.question,
        sub_questions=[sq],
        final_answer=answer,
        final_origin=M,
        short_answer=sq.short_answer,
        meta={"answers": [] if unanswerable else list(golds)},
    )


def reason(r):
    v = check(r, P)
    return v and v[0]


def test_good_records_kept():
    assert reason(gen()) is None
    assert reason(squad("The capital of France is Paris.")) is None
    assert reason(squad("The question cannot be answered from this knowledge.", unanswerable=True)) is None


@pytest.mark.parametrize(
    "record, expected",
    [
        (gen(meta={"entities": ["A", "B"], "errors": ["missing 'Paragraph 2'"]}), "format"),
        (gen(question=""), "format"),
        (gen(sub_questions=[]), "format"),
        (gen(final_answer=""), "empty_field"),
        (gen(question="Which is taller, the Eiffel Tower or Big Ben?"), "entity_not_named"),
        (gen(question="Is the Eiffel Tower taller than the Statue of Liberty, and when were these built?"), "coreference"),
        (gen(question="Which is taller, the Eiffel Tower or the Statue of Liberty, given " + "x" * 600), "too_long"),
        (squad("The paragraph does not contain the answer, so it cannot be answered."), "abstains_on_answerable"),
        (squad("The capital of France is Lyon."), "disagrees_with_gold"),
        (squad("The capital is Paris.", unanswerable=True), "answers_unanswerable"),
    ],
)
def test_reasons(record, expected):
    assert reason(record) == expected


def test_entity_containing_flagged_word_is_not_coreference():
    r = gen(question="Which premiered first, This Is Us or Lost?", entities=("This Is Us", "Lost"))
    assert reason(r) is None


def test_yes_no_gold_must_open_the_answer():
    r = squad("Yes, Paris is the capital.", golds=("yes",))
    assert reason(r) is None
    assert reason(squad("No, yes is not right.", golds=("yes",))) == "disagrees_with_gold"


def test_multihop_hop_answers_checked_against_gold():
    r = gen(meta={"answers": ["The Eiffel Tower"]})
    r.sub_questions[0].short_answer = "300 metres"
    assert reason(r) == "disagrees_with_gold"


def test_duplicates_and_report():
    a = gen()
    b = gen(id="g-2")
    c = gen(id="g-3", question="Which is taller: the Eiffel Tower or the Statue of Liberty ?")
    d = gen(id="g-4", question="Which one is taller, the Eiffel Tower or the Statue of Liberty?")
    e = gen(id="g-5", question="")
    kept, rejected, report = filter_records([a, b, c, d, e], P)
    assert [r.id for r in kept] == ["g-1"]
    assert report["reasons"] == {"duplicate": 2, "near_duplicate": 1, "format": 1}
    assert [r.meta["reject_reason"] for r in rejected] == ["duplicate", "duplicate", "near_duplicate", "format"]
    assert report["kept"] + report["rejected"] == report["records"] == 5
