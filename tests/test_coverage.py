"""Supporting-paragraph coverage (did the model's retrieve calls find every supporting paragraph, and
would one retrieval with the question alone, given as many paragraphs, have found them?), the
2WikiMultihopQA set and the summary's new scores, worked by hand with a keyword-count retriever:
no model loads."""

from __future__ import annotations

import numpy as np
import pytest

from qa_forge.core.io import UserError
from qa_forge.core.records import Record
from qa_forge.eval import agent
from qa_forge.eval.evaluate import (
    conversations,
    headline,
    metrics_view,
    prediction_row,
    record_indexes,
    single_retrievals,
    supporting_titles,
    write_plots,
)
from qa_forge.eval.summary import compare_set
from qa_forge.eval.tasks import TASKS, group_keys, score_hotpot
from tests.params import params, raw

P = params("evaluate", bootstrap=200, seed=0).scoring()

VOCAB = ("film", "ann", "director", "born", "river", "cake")


class KeywordRetriever:
    """Embeds a text as its count of each VOCAB word: a dot product any reader can work out."""

    def __init__(self):
        self.query_batches: list[list[str]] = []

    @staticmethod
    def embed(texts) -> np.ndarray:
        words = [[w.strip("?.,:").lower() for w in t.split()] for t in texts]
        return np.array([[ws.count(v) for v in VOCAB] for ws in words], dtype=np.float32).reshape(len(words), len(VOCAB))

    def encode_queries(self, queries):
        self.query_batches.append(list(queries))
        return self.embed(queries)

    def encode_passages(self, passages):
        return self.embed(passages)


QUESTION = "Where was the director of the film with Ann born?"  # film 1, ann 1, director 1, born 1
# each paragraph's score against QUESTION ("Title: text" embedded): the keyword counts it shares
CONTEXT = [
    ("Film X", "Film X stars Ann."),  # film 2, ann 1: 3 (supporting)
    ("Bo Lee", "Bo Lee was a director, born by a river."),  # director 1, born 1: 2 (supporting)
    ("Ann Film Fest", "A film fest for Ann."),  # film 2, ann 2: 4
    ("River", "A river with cake."),  # 0
    ("Film Ann", "Film with Ann."),  # film 2, ann 2: 4
    ("Director Ann", "Ann the director."),  # director 2, ann 2: 4
]
# so the question alone ranks (ties by position): Ann Film Fest, Film Ann, Director Ann, Film X, Bo Lee, River
GOLD = ["Film X", "Bo Lee"]


def record(qid: str, qtype: str = "bridge", supporting=GOLD, question: str = QUESTION) -> Record:
    meta = {"context": [{"title": t, "text": x} for t, x in CONTEXT], "type": qtype, "answers": ["Oslo"]}
    if supporting is not None:
        meta["supporting_titles"] = list(supporting)
    return Record(id=qid, src="test", question=question, multihop=True, meta=meta)


def conv(r: Record, retrieved: list[list[str]]) -> agent.Conversation:
    """A finished conversation whose retrieve calls returned these titles, one list per call."""
    c = agent.Conversation(r.id, r.question, search=lambda q: [])
    c.steps = [{"reply": "call", "query": "q", "retrieved": titles} for titles in retrieved] + [{"reply": "Answer: Oslo"}]
    c.calls, c.status = len(retrieved), "answered"
    return c


# (record, the titles each of the model's calls got)
CASES = {
    # two calls find both supporting paragraphs; the question alone at k = 4 misses Bo Lee
    "two": [["Film X", "Ann Film Fest"], ["Bo Lee", "River"]],
    # one call, Bo Lee never found; the question alone at k = 2 gets neither
    "one": [["Film X", "Ann Film Fest"]],
    # three calls find both; the question alone at k = 6 gets all six paragraphs
    "three": [["Ann Film Fest", "Film Ann"], ["Director Ann", "Film X"], ["Bo Lee", "River"]],
    # no call: nothing found either way (k = 0)
    "zero": [],
}
EXPECTED = {"two": (1.0, 0.0), "one": (0.0, 0.0), "three": (1.0, 1.0), "zero": (0.0, 0.0)}  # (covered, covered_single)


def rows_of(cases: dict, top_k: int = 2, qtype: str = "bridge") -> tuple[list[dict], KeywordRetriever]:
    records = [record(name, qtype) for name in cases]
    retriever = KeywordRetriever()
    indexes = record_indexes(records, retriever, "question")
    convs = [conv(r, cases[r.id]) for r in records]
    ks = [c.calls * top_k if supporting_titles(r) else 0 for r, c in zip(records, convs)]
    retriever.query_batches.clear()
    singles = single_retrievals(records, indexes, retriever, ks)
    return [prediction_row(r, c, s) for r, c, s in zip(records, convs, singles)], retriever


def test_the_search_and_the_single_retrieval_rank_by_hand():
    r = record("q")
    retriever = KeywordRetriever()
    indexes = record_indexes([r], retriever, "question")
    (c,) = conversations([r], retriever, "question", 2, indexes)
    assert [t for t, _ in c.search(QUESTION)] == ["Ann Film Fest", "Film Ann"]
    assert single_retrievals([r], indexes, retriever, [4]) == [["Ann Film Fest", "Film Ann", "Director Ann", "Film X"]]
    assert single_retrievals([r], indexes, retriever, [0]) == [[]]


def test_coverage_fields_worked_by_hand():
    rows, retriever = rows_of(CASES)
    assert {r["id"]: (r["covered"], r["covered_single"]) for r in rows} == EXPECTED
    assert all(r["supporting_titles"] == GOLD for r in rows)
    # the questions with a call are embedded in one batch; the 0-call one is not searched
    assert retriever.query_batches == [[QUESTION] * 3]


def test_a_record_without_supporting_titles_gets_no_coverage_fields():
    r = record("sq", qtype=None, supporting=None)
    row = prediction_row(r, conv(r, [["Film X"]]), ["Film X"])
    assert not {"supporting_titles", "covered", "covered_single"} & set(row)
    assert single_retrievals([r], record_indexes([r], KeywordRetriever(), "question"), KeywordRetriever(), [0]) == [[]]


def test_global_scope_searches_one_index_for_every_record():
    a, b = record("a"), record("b", question="Which river has cake?")  # river 1, cake 1: only River scores
    retriever = KeywordRetriever()
    indexes = record_indexes([a, b], retriever, "global")
    assert indexes[0] is indexes[1] and len(indexes[0]) == 6
    assert single_retrievals([a, b], indexes, retriever, [2, 1]) == [["Ann Film Fest", "Film Ann"], ["River"]]


def scored(rows: list[dict]) -> list[dict]:
    for r in rows:
        r.update(answer="Oslo", short_answer="Oslo", final_message="Answer: Oslo\nShort answer: Oslo")
    return rows


def test_score_hotpot_reports_coverage_of_the_chain_questions():
    rows, _ = rows_of(CASES)
    comparison, _ = rows_of({"cmp": [["Film X", "Bo Lee"]]}, qtype="comparison")  # covered, but not a chain
    s = score_hotpot(scored(rows + comparison), P)
    cov = s["coverage"]
    # chains two, one, three, zero: the model covers 2 of 4, the question alone 1 of 4
    assert cov["n"] == 4
    assert (cov["model"]["value"], cov["model"]["n"]) == (0.5, 4)
    # Wilson 2 of 4: [0.15, 0.85]; 1 of 4: [0.0456, 0.6994]
    assert (cov["model"]["ci95_lo"], cov["model"]["ci95_hi"]) == (pytest.approx(0.15, abs=1e-4), pytest.approx(0.85, abs=1e-4))
    assert (cov["single"]["value"], cov["single"]["ci95_lo"], cov["single"]["ci95_hi"]) == (
        0.25,
        pytest.approx(0.0456, abs=1e-4),
        pytest.approx(0.6994, abs=1e-4),
    )
    # paired: one question ("two") only the model covers, none only the single retrieval: +0.25
    d = cov["difference"]
    # one discordant question of four: the interval includes 0
    assert d["value"] == 0.25 and d["n"] == 4 and d["ci95_lo"] < 0 and 0.25 < d["ci95_hi"] < 1
    # calls 2, 1, 3, 0 and 1: mean 1.4, a bootstrap interval
    assert s["mean_retrieve_calls"] == 1.4
    rc = s["retrieve_calls"]
    assert (rc["value"], rc["n"]) == (1.4, 5) and 0 <= rc["ci95_lo"] < 1.4 < rc["ci95_hi"] <= 3


def test_retrieve_calls_of_only_ones_get_a_bootstrap_not_a_wilson_interval():
    rows, _ = rows_of({"a": [["Film X"]], "b": [["Bo Lee"]]}, qtype="comparison")
    s = score_hotpot(scored(rows), P)
    # every question made 1 call: the bootstrap's degenerate [1, 1] (Wilson 2 of 2 would say [0.3424, 1])
    assert s["retrieve_calls"] == {"value": 1.0, "n": 2, "ci95_lo": 1.0, "ci95_hi": 1.0}
    assert s["coverage"] == {"n": 0}  # no chain question


def test_2wikimultihopqa_is_registered_and_scored_like_hotpotqa(tmp_path):
    task = TASKS["2wikimultihopqa"]
    assert task.score is score_hotpot and task.plots == () and task.summary is TASKS["hotpotqa"].summary
    sets = {
        **raw("evaluate")["sets"],
        "2wikimultihopqa": {"path": "data/fetched/eval_2wikimultihopqa.jsonl", "n": 5, "scope": "question", "top_k": 2},
    }
    assert "2wikimultihopqa" in params("evaluate", sets=sets).sets

    chains, _ = rows_of({"c1": CASES["two"], "c2": CASES["one"]}, qtype="compositional")
    inference, _ = rows_of({"i1": [["Film X", "Bo Lee"]]}, qtype="inference")
    s = score_hotpot(scored(chains + inference), P)
    assert set(s["by_type"]) == {"compositional", "inference"} and s["em"]["value"] == 1.0
    # compositional is the chain type: c1 covered by the model only, c2 by neither
    assert (s["coverage"]["n"], s["coverage"]["model"]["value"], s["coverage"]["single"]["value"]) == (2, 0.5, 0.0)

    report = {"model": "base", "hotpotqa": s, "2wikimultihopqa": s, "squad_v2": {"exact_match": {"value": 0.5}, "f1": 0.5, "parseable": 1}}
    view = metrics_view(report)
    assert group_keys(task) == {"by_type", "by_retrieve_calls"}
    for name in ("hotpotqa", "2wikimultihopqa"):
        assert "by_type" not in view[name] and "by_retrieve_calls" not in view[name]
        # calls 2, 1 and 1: mean 4/3
        assert view[name]["coverage"]["model"]["value"] == 0.5 and view[name]["retrieve_calls"]["value"] == 1.3333
    lines = headline(report)
    assert len(lines) == 3 and lines[2].startswith("base 2wikimultihopqa: recall 1.0, containing_accuracy 1.0, em 1.0")
    write_plots(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by_retrieve_calls.csv", "by_type.csv"]  # hotpotqa's only


def summary_rows(covered: list[float], calls: list[int], types: list[str]) -> list[dict]:
    return [
        {"id": f"q{i}", "type": t, "retrieve_calls": n, "covered": c, "covered_single": 0.0,
         "containing_message": 1.0, "recall_message": 1.0, "em": 1.0, "f1": 1.0}
        for i, (c, n, t) in enumerate(zip(covered, calls, types))
    ]  # fmt: skip


def test_summary_reports_coverage_and_retrieve_calls():
    types = ["bridge", "bridge", "bridge", "comparison"]
    base = summary_rows([0.0, 0.0, 1.0, 1.0], [1, 1, 1, 1], types)
    tuned = summary_rows([1.0, 1.0, 1.0, 0.0], [2, 3, 1, 1], types)
    s = compare_set("hotpotqa", base, tuned, 200, 0, "x")
    assert list(s) == ["n", "containing_accuracy", "recall", "em", "f1", "retrieve_calls", "coverage"]
    cov = s["coverage"]  # the three bridge questions: base covers 1, fine-tuned 3
    assert cov["base"]["value"] == pytest.approx(1 / 3, abs=1e-4) and cov["finetuned"]["value"] == 1.0
    assert cov["difference"]["value"] == pytest.approx(2 / 3, abs=1e-4) and cov["difference"]["n"] == 3
    rc = s["retrieve_calls"]
    # the base's calls are all 1: a bootstrap's [1, 1], not Wilson's; fine-tuned - base: +1, +2, 0, 0, mean 0.75
    assert rc["base"] == {"value": 1.0, "n": 4, "ci95_lo": 1.0, "ci95_hi": 1.0}
    assert rc["finetuned"]["value"] == 1.75 and rc["difference"]["value"] == 0.75 and rc["difference"]["ci95_lo"] >= 0


def test_summary_of_a_set_without_chain_questions_gives_coverage_n_0():
    rows = summary_rows([1.0, 0.0], [1, 2], ["comparison", "inference"])
    s = compare_set("2wikimultihopqa", rows, rows, 200, 0, "x")
    empty = {"value": None, "n": 0, "ci95_lo": None, "ci95_hi": None}
    assert s["coverage"] == {"base": empty, "finetuned": empty, "difference": empty}
    assert s["retrieve_calls"]["base"]["value"] == 1.5


def test_summary_coverage_from_only_one_model_fails_clearly():
    base = summary_rows([1.0], [1], ["bridge"])
    tuned = [{k: v for k, v in r.items() if k not in ("covered", "covered_single")} for r in base]  # an older evaluate
    with pytest.raises(UserError, match="score 'coverage'.*re-run both evaluate stages"):
        compare_set("hotpotqa", base, tuned, 200, 0, "x")


def test_summary_squad_has_answer_em():
    rows = [
        {"id": f"s{i}", "em": e, "f1": e, "no_answer": i < 2}
        for i, e in enumerate([1.0, 0.0, 1.0, 0.0, 0.0])
    ]  # fmt: skip
    tuned = [{**r, "em": 1.0} for r in rows]
    s = compare_set("squad_v2", rows, tuned, 200, 0, "x")
    # the three questions with an answer: base 1 of 3, fine-tuned 3 of 3; abstention stays (1 of 2)
    assert s["has_answer_em"]["base"]["value"] == pytest.approx(1 / 3, abs=1e-4) and s["has_answer_em"]["base"]["n"] == 3
    assert s["has_answer_em"]["difference"]["value"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["abstention"]["base"]["value"] == 0.5 and s["abstention"]["finetuned"]["n"] == 2
