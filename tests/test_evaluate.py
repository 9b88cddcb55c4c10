"""evaluate's scoring of prediction rows, worked by hand."""

from __future__ import annotations

import pytest

from qa_forge.eval.tasks import score_hotpot, score_squad, squad_prediction
from tests.params import params

P = params("evaluate", bootstrap=200, seed=0).scoring()
PHRASES = P.abstain_phrases


def row(answer, short=None, gold=("Paris",), final=None, calls=1, qtype="bridge", status="final"):
    return {
        "gold": list(gold),
        "type": qtype,
        "status": status,
        "retrieve_calls": calls,
        "answer": answer,
        "short_answer": short,
        "final_message": final if final is not None else (f"Answer: {answer}" if answer else ""),
    }


def test_squad_prediction_reads_short_answer_abstention_and_unparsable():
    assert squad_prediction(row("It is Paris.", short="Paris"), PHRASES) == "Paris"
    assert squad_prediction(row("The paragraph does not contain the answer."), PHRASES) == ""
    assert squad_prediction(row("It is Paris.", short="none"), PHRASES) == "It is Paris."
    assert squad_prediction(row(None, status="unparsable"), PHRASES) is None


def test_score_squad_table():
    rows = [
        row("Paris is the capital.", short="Paris"),  # has answer, right
        row("Lyon.", short="Lyon"),  # has answer, wrong
        row("This cannot be answered from this knowledge.", gold=()),  # no answer, abstains: right
        row("Nice.", short="Nice", gold=()),  # no answer, answers: wrong
        row(None, status="unparsable"),  # has answer, unparsable
    ]
    t = score_squad(rows, P)
    assert t["n"] == 5 and t["n_no_answer"] == 2 and t["n_has_answer"] == 3 and t["parseable"]["value"] == pytest.approx(0.8)
    assert t["exact_match"]["value"] == pytest.approx(0.4) and t["exact_match"]["n"] == 5  # 2 of 5
    assert t["exact_match_parseable"]["value"] == pytest.approx(0.5)  # 2 of the 4 parsed
    assert t["correct_no_answer"]["value"] == pytest.approx(0.5) and t["correct_no_answer"]["n"] == 2
    assert t["correct_has_answer"]["value"] == pytest.approx(1 / 3, abs=1e-4)
    assert [r["em"] for r in rows] == [1.0, 0.0, 1.0, 0.0, 0.0] and [r["no_answer"] for r in rows] == [False, False, True, True, False]
    # Wilson 2 of 5: [0.1176, 0.7693]
    assert (t["exact_match"]["ci95_lo"], t["exact_match"]["ci95_hi"]) == (pytest.approx(0.1176, abs=1e-4), pytest.approx(0.7693, abs=1e-4))


def test_score_squad_f1_is_the_official_one():
    # "in 1891 or 1892" vs "1891": precision 1/4, recall 1 -> F1 0.4 (official SQuAD v2 script)
    rows = [row("In 1891 or 1892.", short="in 1891 or 1892", gold=("1891",)), row("Warsaw.", short="Warsaw", gold=("Warsaw",))]
    t = score_squad(rows, P)
    assert [r["f1"] for r in rows] == [pytest.approx(0.4), 1.0] and t["f1"]["value"] == pytest.approx(0.7)


def test_score_hotpot_counts_and_scores():
    rows = [
        row(
            "The capital is Paris.",
            short="Paris",
            calls=2,
            final="Summary: France's capital.\nAnswer: The capital is Paris.\nShort answer: Paris",
        ),
        row("It is Lyon.", short="Lyon", calls=1, qtype="comparison"),
        row(None, calls=0, final="Paris, I think", status="unparsable"),
        row(None, calls=4, final="", status="hop_cap"),
    ]
    s = score_hotpot(rows, P)
    assert s["n"] == 4 and s["unparsable"] == 1 and s["hop_cap_stops"] == 1
    assert s["em"]["value"] == pytest.approx(0.25) and s["f1"]["value"] == pytest.approx(0.25)
    # the seeds' scores on the whole message count the unparsable "Paris, I think"; on the answer alone they do not
    assert s["containing_accuracy"]["value"] == pytest.approx(0.5) and s["answer_containing_accuracy"]["value"] == pytest.approx(0.25)
    assert s["multihop_rate"]["value"] == pytest.approx(0.5) and s["mean_retrieve_calls"] == pytest.approx(1.75)
    assert s["by_type"]["comparison"]["n"] == 1 and s["by_type"]["bridge"]["n"] == 3
