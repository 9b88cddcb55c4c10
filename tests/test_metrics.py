"""Every metric alone, against examples worked out by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest

from qa_forge.eval import metrics as M
from qa_forge.retrieval import metrics as R

# --- the seeds' HotpotQA metrics ----------------------------------------------------------------


def test_word_recall():
    assert M.word_recall("The capital is Phnom Penh.", "Phnom Penh") == 1.0
    # gold "paris france": "paris" found, "france" not -> 1/2
    assert M.word_recall("It was Paris", "Paris, France") == 0.5
    # the seeds' quirk: distinct shared words (new, york) over all gold words (4) -> 2/4
    assert M.word_recall("new york", "New York, New York") == 0.5
    assert M.word_recall("", "Paris") == 0.0
    assert M.word_recall("The", "a") == 1.0  # both normalise to nothing


def test_answer_containing_substring_and_whole_words():
    assert M.answer_containing("The answer is PHNOM Penh!", "Phnom Penh") == 1.0
    assert M.answer_containing("Phnom", "Phnom Penh") == 0.0
    # the seeds test a plain substring: "art" is inside "party"; whole words say no
    assert M.answer_containing("He went to a party.", "art") == 1.0
    assert M.answer_containing("He went to a party.", "art", whole_words=True) == 0.0
    assert M.answer_containing("She studied art in Paris.", "Art", whole_words=True) == 1.0


MULTIHOP_FINAL = (
    "Thought: Cambodia's capital is Phnom Penh.\nAnswer: The capital of Cambodia is Phnom Penh.\nShort answer: Phnom Penh\n\n"
    "Summary: Angkor Wat is in Cambodia, whose capital is Phnom Penh.\n"
    "Thought: The temple's country is Cambodia.\n"
    "Answer: The city is Hanoi.\n"
    "Short answer: Hanoi"
)


def test_extract_answer_and_short_answer():
    assert M.extract_answer(MULTIHOP_FINAL) == "The city is Hanoi."  # the last Answer:, not the hop's
    assert M.extract_short_answer(MULTIHOP_FINAL) == "Hanoi"
    assert M.extract_answer("Answer: Paris") == "Paris"
    assert M.extract_answer("Short Answer: Paris") == "Short Answer: Paris"  # no "Answer:" of its own
    assert M.extract_answer("  just text ") == "just text"
    assert M.extract_short_answer("Answer: Paris") is None


def test_seed_scores_on_message_and_on_answer():
    # the summary names the gold answer, the extracted answer does not: the two variants disagree
    s = M.seed_scores(MULTIHOP_FINAL, "Phnom Penh")
    assert s == {"recall_message": 1.0, "containing_message": 1.0, "recall_answer": 0.0, "containing_answer": 0.0}
    # gold "Hanoi Vietnam": the answer "The city is Hanoi." has 1 of 2 words and does not contain it
    s = M.seed_scores(MULTIHOP_FINAL, "Hanoi, Vietnam")
    assert s["recall_answer"] == 0.5 and s["containing_answer"] == 0.0
    # an explicit answer overrides extraction
    assert M.seed_scores("whatever", "Paris", answer="Paris")["containing_answer"] == 1.0


# --- official HotpotQA EM / F1 ------------------------------------------------------------------


def test_hotpot_exact_match():
    assert M.hotpot_exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert M.hotpot_exact_match("Eiffel", "eiffel tower") == 0.0


def test_hotpot_f1_tokens():
    # "phnom penh city" vs "phnom penh": 2 shared; p = 2/3, r = 1, F1 = 2*(2/3)/(5/3) = 0.8
    f1, p, r = M.hotpot_prf("Phnom Penh city", "Phnom Penh")
    assert (f1, p, r) == pytest.approx((0.8, 2 / 3, 1.0))
    assert M.hotpot_f1("Hanoi", "Phnom Penh") == 0.0


def test_hotpot_f1_yes_no_rule():
    assert M.hotpot_f1("yes", "no") == 0.0
    assert M.hotpot_f1("Yes.", "yes") == 1.0
    # plain token F1 would give 2*(1/3)*1/(1/3+1) = 0.5; the rule gives 0 (gold is "yes", they differ)
    assert M.hotpot_f1("yes it is", "yes") == 0.0
    assert M.hotpot_f1("noanswer", "Paris") == 0.0
    assert M.hotpot_prf("no", "no way") == (0.0, 0.0, 0.0)  # prediction is special and differs


# --- SQuAD v2 -----------------------------------------------------------------------------------


def test_squad_exact_match_and_f1_over_golds():
    golds = ["the Atlantic Ocean", "Atlantic Ocean", "Atlantic"]
    assert M.squad_exact_match("Atlantic", golds) == 1.0
    assert M.squad_exact_match("the Pacific", golds) == 0.0
    # "atlantic" vs "atlantic ocean": p = 1, r = 1/2, F1 = 2/3 (max over golds: a gold is "Atlantic" -> 1)
    assert M.squad_f1("the Atlantic", ["Atlantic Ocean"]) == pytest.approx(2 / 3)
    assert M.squad_f1("the Atlantic", golds) == 1.0


def test_squad_no_answer():
    assert M.squad_exact_match("", []) == 1.0 and M.squad_f1("", []) == 1.0
    assert M.squad_exact_match("Paris", []) == 0.0 and M.squad_f1("Paris", []) == 0.0
    assert M.squad_exact_match("", ["Paris"]) == 0.0 and M.squad_f1("", ["Paris"]) == 0.0
    assert M.squad_exact_match("", ["the"]) == 1.0  # a gold that normalises to nothing is no-answer


# --- retrieval ----------------------------------------------------------------------------------


def test_recall_at_k_all_found_and_reciprocal_rank():
    ranked, gold = ["A", "B", "C", "D"], {"B", "D"}
    assert [R.recall_at_k(ranked, gold, k) for k in (1, 2, 5)] == [0.0, 0.5, 1.0]
    assert [R.all_found_at_k(ranked, gold, k) for k in (2, 4)] == [0.0, 1.0]
    assert R.reciprocal_rank(ranked, gold) == 0.5
    assert R.reciprocal_rank(ranked, {"E"}) == 0.0
    with pytest.raises(ValueError):
        R.recall_at_k(ranked, set(), 1)


# --- bootstrap ----------------------------------------------------------------------------------


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = [0, 1, 1, 1, 0, 1, 1, 0, 1, 1]
    mean, lo, hi = M.bootstrap_ci(values, n=1000, seed=0)
    assert mean == 0.7
    assert 0.0 <= lo < mean < hi <= 1.0
    assert M.bootstrap_ci(values, n=1000, seed=0) == (mean, lo, hi)  # same seed, same interval
    assert M.bootstrap_ci(values, n=1000, seed=1) != (mean, lo, hi)
    # resample means of ten 0/1 values are multiples of 1/10
    assert round(lo * 10, 9) == round(lo * 10) and round(hi * 10, 9) == round(hi * 10)
    assert M.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert all(math.isnan(x) for x in M.bootstrap_ci([]))


def test_summarize_stores_plain_numbers_with_wilson_for_0_1_outcomes():
    s = M.summarize([0, 1, 1, 1])
    assert s["value"] == 0.75 and s["n"] == 4
    # Wilson 3 of 4 (Agresti & Coull 1998 / any table): [0.3006, 0.9544]
    assert (s["ci95_lo"], s["ci95_hi"]) == (pytest.approx(0.3006, abs=1e-4), pytest.approx(0.9544, abs=1e-4))
    assert M.summarize([]) == {"value": None, "n": 0, "ci95_lo": None, "ci95_hi": None}
    f1 = M.summarize([0.5, 0.25, 1.0, 0.0], n=500, seed=0)  # not 0/1: a percentile bootstrap
    assert f1["ci95_lo"] < f1["value"] == 0.4375 < f1["ci95_hi"]


def test_wilson_matches_scipy_and_keeps_a_width_at_0_and_1():
    from scipy.stats import binomtest

    for k, n in [(0, 20), (20, 20), (7, 20), (1, 3), (150, 277)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert M.wilson(k, n) == (pytest.approx(ci.low, abs=1e-9), pytest.approx(ci.high, abs=1e-9))
    lo, hi = M.wilson(0, 20)  # the case: a bootstrap gives [0, 0] here
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)


def _paired_sample(rng, n, p_base, p_tuned, agree):
    """Paired 0/1 outcomes with the given marginals; `agree` of the questions share one draw."""
    u = rng.random(n)
    v = np.where(rng.random(n) < agree, u, rng.random(n))
    return (v < p_tuned).astype(float).tolist(), (u < p_base).astype(float).tolist()


def test_newcombe_paired_covers_the_true_difference_95_percent_of_the_time():
    """The interval's promise, checked by simulation against the difference it was drawn with:
    4,000 eval sets of 40 questions whose two models agree on most questions."""
    rng = np.random.default_rng(1)
    p_base, p_tuned, agree = 0.35, 0.5, 0.6
    # P(tuned) and P(base) of each question are the marginals whatever the sharing. Measured: 0.940
    # here (0.948 at n = 200; 0.951 with independent models), method 10's known slight undercoverage
    hits = 0
    trials = 4000
    for _ in range(trials):
        tuned, base = _paired_sample(rng, 40, p_base, p_tuned, agree)
        _, lo, hi = M.newcombe_paired(tuned, base)
        hits += lo <= p_tuned - p_base <= hi
    assert 0.925 <= hits / trials <= 0.975


def test_paired_difference_keeps_a_width_when_both_models_agree_everywhere():
    zeros = [0.0] * 20
    d = M.paired_difference(zeros, zeros)
    assert d["value"] == 0.0 and d["n"] == 20 and d["ci95_lo"] < 0 < d["ci95_hi"]
    # pairing is used: the same marginals with the models agreeing on every question give a
    # narrower interval than with them disagreeing on every question they differ on
    same = M.paired_difference([1.0] * 10 + [0.0] * 10, [1.0] * 10 + [0.0] * 10)
    swapped = M.paired_difference([1.0] * 10 + [0.0] * 10, [0.0] * 10 + [1.0] * 10)
    assert same["ci95_hi"] - same["ci95_lo"] < swapped["ci95_hi"] - swapped["ci95_lo"]
    f1 = M.paired_difference([0.5, 1.0, 0.25, 0.0], [0.25, 0.5, 0.25, 0.0], n=500, seed=0)  # not 0/1: bootstrap of differences
    assert f1["value"] == pytest.approx(0.1875) and f1["ci95_lo"] <= 0.1875 <= f1["ci95_hi"]
    with pytest.raises(ValueError):
        M.paired_difference([1.0], [1.0, 0.0])


# --- grouping -----------------------------------------------------------------------------------


def test_by_question_type():
    rows = [{"type": "bridge", "em": 1.0}, {"type": "bridge", "em": 0.0}, {"type": "comparison", "em": 1.0}]
    g = M.by_question_type(rows, ["em"])
    assert list(g) == ["bridge", "comparison"]
    assert g["bridge"]["n"] == 2 and g["bridge"]["em"]["value"] == 0.5
    assert g["comparison"]["em"]["value"] == 1.0 and g["comparison"]["em"]["n"] == 1 and g["comparison"]["em"]["ci95_lo"] < 1.0


def test_by_retrieve_calls():
    rows = [{"retrieve_calls": c, "f1": f} for c, f in [(1, 1.0), (2, 0.5), (2, 0.0), (5, 1.0), (0, 0.0)]]
    g = M.by_retrieve_calls(rows, ["f1"], cap=4)
    assert sorted(g) == ["0", "1", "2", "4+"]
    assert g["2"]["n"] == 2 and g["2"]["f1"]["value"] == 0.25
    assert g["4+"]["f1"]["value"] == 1.0
    assert M.retrieve_calls_bucket(3, cap=4) == "3" and M.retrieve_calls_bucket(9, cap=4) == "4+"
