"""Retriever fine-tuning (issue 14): the ranking metrics against hand-worked examples, training pairs
and their overlap with evaluation paragraphs, hard-negative mining with BM25 and the real
all-MiniLM-L6-v2, the batch sampler, and a tiny training run that must separate positives from
negatives better than the untuned model."""

from __future__ import annotations

import numpy as np
import pytest

from qa_forge.core.records import Record, SubQuestion
from qa_forge.retrieval import metrics as M
from qa_forge.retrieval.retriever import Retriever, model_path, passage_text
from qa_forge.retrieval.tuning.mining import MiningParams, Negative, WindowParams, mine_negatives
from qa_forge.retrieval.tuning.pairs import Pair, PairsParams, build_pairs, split_pairs
from qa_forge.retrieval.tuning.sampler import conflict_free_batches, sampler_factory
from qa_forge.retrieval.tuning.train import Row, TuneParams, row_texts, sampler_keys, train_retriever, training_rows
from tests.params import retriever as retriever_params

# --- ranking metrics, worked by hand --------------------------------------------------------------
# log2(2) = 1, log2(3) = 1.5849625, log2(4) = 2: the discounts of ranks 1, 2, 3 are 1, 0.6309298, 0.5.


def test_ndcg_mrr_recall_all_by_hand():
    ranked = ["a", "x", "b", "y", "c"]
    gold = {"a", "b"}
    # DCG = 1/log2(2) [a, rank 1] + 1/log2(4) [b, rank 3] = 1 + 0.5 = 1.5
    # ideal: both relevant first, 1 + 1/log2(3) = 1.6309298; NDCG = 1.5 / 1.6309298 = 0.9197208
    assert M.ndcg_at_k(ranked, gold, 10) == pytest.approx(0.9197208, abs=1e-7)
    assert M.reciprocal_rank_at_k(ranked, gold, 10) == 1.0  # a at rank 1
    assert M.recall_at_k(ranked, gold, 2) == 0.5  # a of {a, b}
    assert M.all_found_at_k(ranked, gold, 2) == 0.0 and M.all_found_at_k(ranked, gold, 3) == 1.0
    # one relevant item at rank 3: DCG = 0.5, ideal = 1 -> 0.5; RR = 1/3
    assert M.ndcg_at_k(["x", "y", "b"], {"b"}, 10) == 0.5
    assert M.reciprocal_rank_at_k(["x", "y", "b"], {"b"}, 10) == pytest.approx(1 / 3)
    # the cutoff: gold at rank 11 earns nothing at @10 (plain reciprocal rank still sees 1/11)
    late = [f"x{i}" for i in range(10)] + ["g"]
    assert M.reciprocal_rank_at_k(late, {"g"}, 10) == 0.0 and M.ndcg_at_k(late, {"g"}, 10) == 0.0
    assert M.reciprocal_rank(late, {"g"}) == pytest.approx(1 / 11)
    # ideal DCG over min(|gold|, k): 3 relevant, k = 2, both top slots relevant -> 1.0
    assert M.ndcg_at_k(["a", "b", "c"], {"a", "b", "c"}, 2) == 1.0
    # [a, x] with gold {a, b, c} at k = 2: DCG 1, ideal 1 + 0.6309298 -> 0.6131472
    assert M.ndcg_at_k(["a", "x", "b"], {"a", "b", "c"}, 2) == pytest.approx(0.6131472, abs=1e-7)
    # a repeated id counts once: [a, a] with gold {a, b} -> DCG 1 (not 1.63), ideal 1.6309298 -> 0.6131472
    assert M.ndcg_at_k(["a", "a"], {"a", "b"}, 10) == pytest.approx(0.6131472, abs=1e-7)


def test_mean_ranking_metrics_by_hand():
    runs = [(["a", "x", "b", "y", "c"], {"a", "b"}), (["x", "y", "b"], {"b"})]
    out = M.mean_ranking_metrics(runs, recall_ks=(1, 2, 5), all_ks=(2,), cutoff=10)
    assert out["n"] == 2
    assert out["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)  # 0.6666667
    assert out["ndcg@10"] == pytest.approx((0.9197208 + 0.5) / 2, abs=1e-7)  # 0.7098604
    assert out["recall@1"] == 0.25  # (1/2 + 0) / 2
    assert out["recall@2"] == 0.25  # (1/2 + 0) / 2
    assert out["recall@5"] == 1.0  # both complete by rank 5
    assert out["all@2"] == 0.0
    assert M.mean_ranking_metrics([]) == {"n": 0}


# --- pairs and the overlap with evaluation paragraphs ----------------------------------------------

FILM_X = "Film X is a 1999 drama directed by Bo Lee and starring Ann Moore."
BO_LEE = "Bo Lee (born 1950 in Springfield) is a film director."
SPRINGFIELD = "Springfield is a town on the Blue river."
PASTA = "Pasta is made from durum wheat flour and water."


def sub(question, title, paragraph, unanswerable=False):
    return SubQuestion(question=question, title=title, paragraph=paragraph, unanswerable=unanswerable)


def training_records() -> list[Record]:
    r1 = Record(
        id="r1",
        src="test",
        question="Where was the director of Film X born?",
        multihop=True,
        sub_questions=[sub("Who directed Film X?", "Film X", FILM_X), sub("Where was Bo Lee born?", "Bo Lee", BO_LEE)],
    )
    r2 = Record(  # its first hop repeats r1's (deduplicated); its second is unanswerable (never a positive)
        id="r2",
        src="test",
        question="Which river flows through the birthplace of Bo Lee?",
        multihop=True,
        sub_questions=[
            sub("Where was Bo Lee born?", "Bo Lee", BO_LEE),
            sub("Which river is in Springfield?", "Springfield", SPRINGFIELD, True),
        ],
    )
    r3 = Record(  # single hop: hop query == question, one pair after dedup
        id="r3", src="test", question="What is pasta made from?", sub_questions=[sub("What is pasta made from?", "Pasta", PASTA)]
    )
    return [r1, r2, r3]


def eval_records() -> list[Record]:
    ctx = [
        {"title": "Bo Lee", "text": "Bo Lee  (born 1950 in Springfield)\nis a film director."},  # BO_LEE, other whitespace
        {"title": "Film X", "text": "Film X is a drama film."},  # same title, another text
        {"title": "Volcano", "text": "A volcano is a rupture in the crust."},
    ]
    return [Record(id="e1", src="eval", question="q", multihop=True, meta={"context": ctx})]


def test_pairs_dedupe_and_skip_unanswerable_hops():
    pairs = build_pairs(training_records())
    got = [(p.record_id, p.kind, p.query, p.title) for p in pairs]
    assert got == [
        ("r1", "hop", "Who directed Film X?", "Film X"),
        ("r1", "hop", "Where was Bo Lee born?", "Bo Lee"),
        ("r1", "question", "Where was the director of Film X born?", "Film X"),
        ("r1", "question", "Where was the director of Film X born?", "Bo Lee"),
        # r2: its Bo Lee hop is r1's pair again, its Springfield hop is unanswerable
        ("r2", "question", "Which river flows through the birthplace of Bo Lee?", "Bo Lee"),
        ("r3", "hop", "What is pasta made from?", "Pasta"),
    ]
    assert SPRINGFIELD not in {p.paragraph for p in pairs}


def test_overlap_with_eval_paragraphs_is_counted_and_kept_out_of_heldout():
    pairs = build_pairs(training_records())
    # overlapping by text (BO_LEE): r1 hop, r1 question, r2 question = 3; by title only (Film X): r1 hop,
    # r1 question = 2; 5 pairs over 2 paragraphs. Only r3's pasta pair may ever be held out.
    # 3 records at fraction 0.5 -> 2 held out: {r1, r2} excludes 4 + 1 = 5 pairs, holds out none;
    # {r1, r3} excludes 4, holds out the pasta pair; {r2, r3} excludes 1, holds out the pasta pair.
    outcomes = set()
    for seed in range(30):
        s = split_pairs(pairs, eval_records(), PairsParams(heldout_fraction=0.5, seed=seed, eval_overlap="train"))
        assert (s.overlap.pairs, s.overlap.by_text, s.overlap.by_title, s.overlap.paragraphs) == (5, 3, 2, 2)
        assert [p.paragraph for p in s.heldout] in ([], [PASTA])
        assert sorted(map(id, s.train + s.heldout)) == sorted(map(id, pairs)) and not s.dropped  # a partition
        outcome = (s.overlap.heldout_excluded, len(s.heldout))
        assert outcome in {(5, 0), (4, 1), (1, 1)}
        outcomes.add(outcome)
    assert len(outcomes) >= 2  # the seed moves the split
    dropped = split_pairs(pairs, eval_records(), PairsParams(heldout_fraction=0.5, seed=0, eval_overlap="drop"))
    assert len(dropped.dropped) == 5 and [p.paragraph for p in dropped.train + dropped.heldout] == [PASTA]


# --- mining -----------------------------------------------------------------------------------------

JAZZ = ("Jazz", "Jazz originated in the African-American communities of New Orleans, Louisiana, in the late 19th century.")
POOL = [
    JAZZ,
    ("Jazz (mirror)", JAZZ[1]),  # the positive's text under another title: still a positive, never mined
    ("Louis Armstrong", "Louis Armstrong was an American jazz trumpeter born in New Orleans."),
    ("New Orleans", "New Orleans is a city in Louisiana known for its music and its late 19th century architecture."),
    ("Blues", "The blues is a music genre that originated in the Deep South of the United States around the 1860s."),
    ("Jazz festival", "The New Orleans Jazz festival takes place every spring."),
    ("Marie Curie", "Marie Curie was born in Warsaw, the capital of Poland, in 1867, and later moved to Paris."),
    ("Warsaw", "Warsaw is the capital and largest city of Poland, on the Vistula river."),
    ("Krakow", "Krakow is the second-largest city of Poland and its former capital."),
    ("Pierre Curie", "Pierre Curie was a French physicist born in Paris, husband of Marie Curie."),
    ("Pasta", "Pasta is a type of food made from wheat flour dough, cooked by boiling in water."),
    ("Volcano", "A volcano is a rupture in the crust of a planet through which lava and gases escape."),
    ("Banana", "The banana is an elongated, edible fruit produced by several kinds of large herbaceous flowering plants."),
]
QUERIES = {
    "Where did jazz music originate?": [JAZZ[1]],
    "In which city was Marie Curie born, and what is the capital of Poland?": [POOL[6][1], POOL[7][1]],
}


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    return Retriever(retriever_params(cache_dir=str(tmp_path_factory.mktemp("embeddings"))))


def mine(retriever, bm25=(2, 0), dense=(2, 0)):
    params = MiningParams(bm25=WindowParams(n=bm25[0], skip=bm25[1]), dense=WindowParams(n=dense[0], skip=dense[1]), query_chunk=1)
    return mine_negatives(list(QUERIES), QUERIES, POOL, retriever, params)


def test_mining_never_returns_a_positive_and_uses_both_sources(retriever):
    mined = mine(retriever, bm25=(2, 0), dense=(2, 1))
    for (query, positives), negs in zip(QUERIES.items(), mined):
        assert [n.source for n in negs] == ["bm25", "bm25", "dense", "dense"], (query, negs)
        assert not {n.text for n in negs} & set(positives)
        assert len({n.text for n in negs}) == 4  # a passage BM25 took is not taken again by dense
        assert [n.rank for n in negs if n.source == "dense"] == [2, 3]  # skip 1: ranks 2 and 3
    jazz = [n.title for n in mined[0]]
    assert "Jazz (mirror)" not in jazz and "Jazz" not in jazz


def test_mining_window_skips_the_top_ranks(retriever):
    top = mine(retriever, bm25=(4, 0), dense=(0, 0))
    skipped = mine(retriever, bm25=(2, 1), dense=(0, 0))
    for a, b in zip(top, skipped):
        assert [n.text for n in b] == [n.text for n in a][1:3]
        assert [n.rank for n in b] == [2, 3]
    dense_top = mine(retriever, bm25=(0, 0), dense=(4, 0))
    dense_skipped = mine(retriever, bm25=(0, 0), dense=(2, 2))
    for a, b in zip(dense_top, dense_skipped):
        assert [n.text for n in b] == [n.text for n in a][2:4] and {n.source for n in b} == {"dense"}


# --- the batch sampler ------------------------------------------------------------------------------


def sampler_rows() -> list[Row]:
    """Q has positives p1 p2 p3; hop queries h1..h3 each have one of them; s1..s4 are unrelated;
    h3's negative is p1, a positive of Q (a hop's mined negative can be another query's positive)."""
    q_pos = ("p1", "p2", "p3")
    rows = [Row("Q", ("", p), (("", "n0"),), q_pos) for p in q_pos]
    rows += [Row(f"h{i}", ("", f"p{i}"), (("", f"n{i}"),), (f"p{i}",)) for i in (1, 2)]
    rows += [Row("h3", ("", "p3"), (("", "p1"),), ("p3",))]
    rows += [Row(f"s{i}", ("", f"x{i}"), (("", f"y{i}"),), (f"x{i}",)) for i in range(1, 5)]
    return rows


def assert_clean(batches, rows):
    for batch in batches:
        queries = [rows[i].query for i in batch]
        assert len(set(queries)) == len(queries), queries  # never two rows of one query
        for i in batch:
            for j in batch:
                if i != j:  # no passage another row brings is a positive of this row's query
                    brought = {rows[j].positive[1], *(x for _, x in rows[j].negatives)}
                    assert not brought & set(rows[i].query_positives), (rows[i], rows[j])


def test_sampler_keeps_a_querys_positives_out_of_its_batch():
    rows = sampler_rows()
    keys = sampler_keys(rows)
    for seed in range(50):
        for batch_size in (2, 3, 4):
            sampler = sampler_factory(keys)(list(range(len(rows))), batch_size=batch_size, drop_last=False, seed=seed)
            batches = list(sampler)
            assert len(sampler) == len(batches)
            assert sorted(i for b in batches for i in b) == list(range(len(rows)))  # each row once per epoch
            assert_clean(batches, rows)
    # drop_last drops every short batch
    assert all(len(b) == 4 for b in conflict_free_batches(keys, range(len(rows)), 4, drop_last=True))


def test_no_duplicates_sampler_would_let_false_negatives_in():
    """Why not sentence-transformers' NoDuplicatesBatchSampler: it compares the rows' own column
    values, so (Q, p1) and (h2, p2) can share a batch, and p2 is a positive of Q."""
    import torch
    from datasets import Dataset
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    rows = sampler_rows()
    ds = Dataset.from_dict(
        {"anchor": [r.query for r in rows], "positive": [r.positive[1] for r in rows], "negative": [r.negatives[0][1] for r in rows]}
    )
    leaks = 0
    for seed in range(20):
        batches = list(NoDuplicatesBatchSampler(ds, batch_size=4, drop_last=False, seed=seed, generator=torch.Generator()))
        try:
            assert_clean(batches, rows)
        except AssertionError:
            leaks += 1
    assert leaks > 0


# --- training ---------------------------------------------------------------------------------------


def test_row_texts_carry_the_retrievers_prefixes():
    row = Row("Who directed Film X?", ("Film X", FILM_X), (("Bo Lee", BO_LEE),), (FILM_X,))
    e5 = retriever_params(query_prefix="query: ", passage_prefix="passage: ")
    assert row_texts(row, e5) == ["query: Who directed Film X?", f"passage: Film X: {FILM_X}", f"passage: Bo Lee: {BO_LEE}"]


def margins(model_folder_or_name: str, rows: list[Row], cache_dir: str) -> float:
    """Mean over rows of cos(query, positive) - cos(query, negative), through a Retriever."""
    r = Retriever(retriever_params(model=model_folder_or_name, cache_dir=cache_dir))
    q = r.encode_queries([row.query for row in rows])
    pos = r.encode_passages([passage_text(*row.positive) for row in rows])
    neg = r.encode_passages([passage_text(*row.negatives[0]) for row in rows])
    return float(np.mean(np.sum(q * pos, axis=1) - np.sum(q * neg, axis=1)))


def test_tiny_training_run_separates_positives_from_negatives(tmp_path, one_thread, monkeypatch):
    # hard cases: the negative shares the query's words, the positive answers it
    pairs = [
        Pair("Who composed the opera Lumen?", "Lumen is an opera by Clara Veit, first staged in 1921.", "Lumen", "a", "hop"),
        Pair("When was Lumen first staged?", "Lumen is an opera by Clara Veit, first staged in 1921.", "Lumen", "a", "hop"),
        Pair("Where was Clara Veit born?", "Clara Veit was born in Graz and studied in Vienna.", "Clara Veit", "b", "hop"),
        Pair("Which river flows through Graz?", "The Mur river flows through the city of Graz.", "Graz", "c", "hop"),
        Pair("What instrument did Otto Renn play?", "Otto Renn was a cellist in the Vienna orchestra.", "Otto Renn", "d", "hop"),
        Pair("What is the capital of Styria?", "Graz is the capital of the Austrian state of Styria.", "Styria", "e", "hop"),
        Pair("Who founded the Veit Quartet?", "The Veit Quartet was founded by Anton Veit in 1930.", "Veit Quartet", "f", "hop"),
        Pair("When did Otto Renn retire?", "Otto Renn retired from the orchestra in 1960.", "Otto Renn (career)", "g", "hop"),
    ]
    confusers = {
        "Who composed the opera Lumen?": ("Lumen (film)", "Lumen is a film about an opera composer who loses her voice."),
        "When was Lumen first staged?": ("Lumen (play)", "The play Lumen was written about a stage in Vienna."),
        "Where was Clara Veit born?": ("Clara Veit (ship)", "The ship Clara Veit was built in Hamburg."),
        "Which river flows through Graz?": ("Graz (band)", "Graz is a band whose song River was a hit."),
        "What instrument did Otto Renn play?": ("Otto Renn Hall", "The Otto Renn Hall hosts instrument makers."),
        "What is the capital of Styria?": ("Styria (font)", "Styria is a capital-letter font."),
        "Who founded the Veit Quartet?": ("Veit Quartet (album)", "Veit Quartet is an album founded on jazz standards."),
        "When did Otto Renn retire?": ("Retire (song)", "Retire is a song Otto Renn never heard."),
    }
    negatives = {q: [Negative(t, x, "bm25", 1)] for q, (t, x) in confusers.items()}
    rows, dropped = training_rows(pairs, negatives, k=1)
    assert dropped == 0 and len(rows) == 8
    cache = str(tmp_path / "emb")
    before = margins("minilm", rows, cache)
    from qa_forge.retrieval.tuning import train as train_module

    used: list = []  # the trainer's batch samplers: the training batches must be ours, conflict-free

    def spy_factory(keys):
        make = sampler_factory(keys)
        return lambda dataset, **kw: used.append(make(dataset, **kw)) or used[-1]

    monkeypatch.setattr(train_module, "sampler_factory", spy_factory)
    params = TuneParams(
        seed=0, epochs=1, max_steps=4, learning_rate=1e-4, batch_size=4, warmup_ratio=0.0, negatives=1, scale=20.0, max_seq_length=None
    )
    report = train_retriever(rows, retriever_params(), params, tmp_path / "tuned")
    after = margins(str(tmp_path / "tuned"), rows, cache)
    print(f"margin before {before:.4f} after {after:.4f}, losses {report.losses}")
    assert report.steps == 4 and len(report.losses) == 4
    assert used and all(assert_clean(list(s), rows) is None for s in used)
    # measured: margin 0.068 -> 0.418 (loss 0.48 -> 0.004 over the 4 steps)
    assert after > before + 0.15, (before, after)


def test_one_negative_a_row_takes_turns_between_bm25_and_dense():
    pairs = [Pair(f"q{i}", f"positive {i}", f"P{i}", f"r{i}", "hop") for i in range(4)]
    mined = {f"q{i}": [Negative("B", f"bm25 {i}", "bm25", 1), Negative("D", f"dense {i}", "dense", 1)] for i in range(4)}
    rows, _ = training_rows(pairs, mined, k=1)
    assert [r.negatives[0][1] for r in rows] == ["bm25 0", "dense 1", "bm25 2", "dense 3"]
    # two a row: both kinds in every row, whichever comes first
    rows, _ = training_rows(pairs, mined, k=2)
    assert all({x for _, x in r.negatives} == {f"bm25 {i}", f"dense {i}"} for i, r in enumerate(rows))


def test_max_seq_length_cuts_training_texts_and_the_saved_model_keeps_its_own(tmp_path, one_thread, monkeypatch):
    from sentence_transformers import SentenceTransformer

    long_text = " ".join(f"word{i}" for i in range(200))  # far past 24 tokens
    rows = [
        Row(f"question {i}?", (f"T{i}", f"{long_text} {i}"), ((f"N{i}", f"other {long_text} {i}"),), (f"{long_text} {i}",))
        for i in range(4)
    ]
    widths: list[int] = []
    preprocess = SentenceTransformer.preprocess

    def spy(self, inputs, *args, **kwargs):
        out = preprocess(self, inputs, *args, **kwargs)
        widths.append(int(out["input_ids"].shape[1]))
        return out

    monkeypatch.setattr(SentenceTransformer, "preprocess", spy)
    params = TuneParams(
        seed=0, epochs=1, max_steps=1, learning_rate=1e-5, batch_size=4, warmup_ratio=0.0, negatives=1, scale=20.0, max_seq_length=24
    )
    train_retriever(rows, retriever_params(), params, tmp_path / "tuned")
    assert widths and max(widths) == 24  # the passages were cut: the queries are shorter
    saved = SentenceTransformer(str(tmp_path / "tuned"), device="cpu")
    assert saved.max_seq_length == SentenceTransformer(model_path("minilm"), device="cpu").max_seq_length == 256
