"""Loaders on every ../shared/data file, and the hub column layouts on small local datasets."""

import pytest
from datasets import Dataset

from qa_forge.data.fetch import convert
from qa_forge.data.sources import loader


def load(shared, name, rel):
    items = loader(name).read_local(shared / rel)
    return items, *convert(name, items, rel)


@pytest.mark.parametrize(
    "name, rel, read, kept, answerable, dropped",
    [
        ("squad_v2", "squad_v2/train_11articles.json", 5147, 5147, 4799, {}),
        ("squad_v2", "squad_v2/dev_normans_rhine.json", 706, 706, 386, {}),
        ("boolq", "boolq/boolq_1491.jsonl", 1491, 1491, 1491, {}),
        ("drop", "drop/drop_19.json", 19, 19, 19, {}),
        ("drop", "drop/drop_contrast_947.json", 947, 947, 947, {}),
        ("musique", "musique/train_full_first100.jsonl", 100, 38, 17, {"malformed_sub_question": 62}),
        ("musique", "musique/train_ans_100.json", 100, 34, 34, {"malformed_sub_question": 66}),
        ("musique", "musique/ans_200.jsonl", 200, 84, 84, {"malformed_sub_question": 116}),
        ("hotpotqa", "hotpotqa/train_100.json", 100, 100, 100, {}),
        ("hotpotqa", "hotpotqa/dev_277.json", 277, 277, 277, {}),
        ("2wikimultihopqa", "2wikimultihopqa/train_500.json", 500, 500, 500, {}),
        ("2wikimultihopqa", "2wikimultihopqa/dev_200.jsonl", 200, 164, 164, {"no_context": 36}),
    ],
)
def test_counts(shared, name, rel, read, kept, answerable, dropped):
    items, records, drops = load(shared, name, rel)
    assert len(items) == read
    assert len(records) == kept
    assert sum(r.answerable for r in records) == answerable
    assert dict(drops) == dropped
    assert len({r.id for r in records}) == kept
    for r in records:
        assert r.src == name and r.question and r.sub_questions
        assert all(sq.paragraph for sq in r.sub_questions)


def test_squad_unanswerable(shared):
    _, records, _ = load(shared, "squad_v2", "squad_v2/dev_normans_rhine.json")
    un = [r for r in records if not r.answerable]
    assert len(un) == 320
    assert all(r.short_answer is None and r.meta["answers"] == [] and r.sub_questions[0].unanswerable for r in un)
    ans = [r for r in records if r.answerable]
    assert all(r.short_answer in r.sub_questions[0].paragraph for r in ans)


def test_musique_placeholders_filled(shared):
    items, records, _ = load(shared, "musique", "musique/ans_200.jsonl")
    raw = {f"musique-{i['id']}": i for i in items}
    filled = 0
    for r in records:
        hops = raw[r.id]["question_decomposition"]
        for k, (sq, hop) in enumerate(zip(r.sub_questions, hops)):
            assert "#" not in sq.question
            if "#1" in hop["question"]:
                assert hops[0]["answer"] in sq.question
                filled += 1
            assert sq.short_answer == hop["answer"]
    assert filled >= 50


def test_musique_unanswerable_cut_at_first_unsupported_hop(shared):
    items, records, _ = load(shared, "musique", "musique/train_full_first100.jsonl")
    raw = {f"musique-{i['id']}": i for i in items}
    un = [r for r in records if not r.answerable]
    assert len(un) == 21
    for r in un:
        hops = raw[r.id]["question_decomposition"]
        first_missing = next(k for k, h in enumerate(hops) if h["paragraph_support_idx"] is None)
        assert len(r.sub_questions) == first_missing + 1
        last = r.sub_questions[-1]
        assert last.unanswerable and last.short_answer is None
        supporting = {p["paragraph_text"] for p in raw[r.id]["paragraphs"] if p["is_supporting"]}
        assert last.paragraph not in supporting
        assert all(not sq.unanswerable for sq in r.sub_questions[:-1])


def test_musique_most_similar_paragraph():
    item = {
        "id": "2hop__1_2",
        "question": "When did the composer of Boléro die?",
        "answer": "1937",
        "answerable": False,
        "paragraphs": [
            {"idx": 0, "title": "Boléro", "paragraph_text": "Boléro is a work by Maurice Ravel.", "is_supporting": True},
            {"idx": 1, "title": "Paris", "paragraph_text": "Paris is the capital of France.", "is_supporting": False},
            {"idx": 2, "title": "Ravel", "paragraph_text": "Maurice Ravel was a French composer of the piano.", "is_supporting": False},
        ],
        "question_decomposition": [
            {"id": 1, "question": "Who composed Boléro?", "answer": "Maurice Ravel", "paragraph_support_idx": 0},
            {"id": 2, "question": "When did #1 die?", "answer": "1937", "paragraph_support_idx": None},
        ],
    }
    r = loader("musique").to_record(item)
    assert [sq.question for sq in r.sub_questions] == ["Who composed Boléro?", "When did Maurice Ravel die?"]
    assert r.sub_questions[1].title == "Ravel" and r.sub_questions[1].unanswerable


def test_hotpot_paragraphs(shared):
    items, records, _ = load(shared, "hotpotqa", "hotpotqa/dev_277.json")
    r, item = records[0], items[0]
    assert len(r.meta["context"]) == len(item["context"])
    assert [sq.title for sq in r.sub_questions] == list(dict.fromkeys(t for t, _ in item["supporting_facts"]))
    assert {r.meta["type"] for r in records} == {"bridge", "comparison"}


# --- hub column layouts, on small local datasets shaped like the hub's ---------------------------


def test_hub_squad_v2():
    ds = Dataset.from_dict(
        {
            "id": ["a1", "a2"],
            "title": ["T", "T"],
            "context": ["Paris is in France.", "Paris is in France."],
            "question": ["Where is Paris?", "Where is Lyon?"],
            "answers": [{"text": ["France"], "answer_start": [12]}, {"text": [], "answer_start": []}],
        }
    )
    records, _ = convert("squad_v2", loader("squad_v2").read_hub(ds), "hub")
    assert [r.short_answer for r in records] == ["France", None]
    assert [r.answerable for r in records] == [True, False]


def test_hub_boolq():
    ds = Dataset.from_dict({"question": ["is paris in france"], "answer": [True], "passage": ["Paris is in France."]})
    (r,), _ = convert("boolq", loader("boolq").read_hub(ds), "hub")
    assert r.short_answer == "yes" and r.question == "Is paris in france?"


def test_hub_drop():
    ds = Dataset.from_dict(
        {
            "section_id": ["s1", "s1"],
            "query_id": ["q1", "q2"],
            "passage": ["The Bears scored 14 and 7."] * 2,
            "question": ["How many points in all?", "Who scored?"],
            "answers_spans": [{"spans": ["21"], "types": ["number"]}, {"spans": ["Bears"], "types": ["span"]}],
        }
    )
    records, _ = convert("drop", loader("drop").read_hub(ds), "hub")
    assert [r.short_answer for r in records] == ["21", "Bears"]


def test_hub_musique():
    para = [
        {"idx": 0, "title": "A", "paragraph_text": "A was written by B.", "is_supporting": True},
        {"idx": 1, "title": "B", "paragraph_text": "B was born in C.", "is_supporting": True},
    ]
    ds = Dataset.from_list(
        [
            {
                "id": "2hop__1_2",
                "paragraphs": para,
                "question": "Where was the writer of A born?",
                "question_decomposition": [
                    {"id": 1, "question": "Who wrote A?", "answer": "B", "paragraph_support_idx": 0},
                    {"id": 2, "question": "Where was #1 born?", "answer": "C", "paragraph_support_idx": 1},
                ],
                "answer": "C",
                "answer_aliases": [],
                "answerable": True,
            }
        ]
    )
    (r,), _ = convert("musique", loader("musique").read_hub(ds), "hub")
    assert [sq.question for sq in r.sub_questions] == ["Who wrote A?", "Where was B born?"]


@pytest.mark.parametrize("name", ["hotpotqa", "2wikimultihopqa"])
def test_hub_hotpot_layout(name):
    ds = Dataset.from_dict(
        {
            "id": ["h1"],
            "question": ["Which is older, X or Y?"],
            "answer": ["X"],
            "type": ["comparison"],
            "level": ["hard"],
            "supporting_facts": [{"title": ["X", "Y"], "sent_id": [0, 0]}],
            "context": [
                {"title": ["X", "Z", "Y"], "sentences": [["X was built in 1900. ", "It is old."], ["Z is new."], ["Y was built in 1950."]]}
            ],
        }
    )
    (r,), _ = convert(name, loader(name).read_hub(ds), "hub")
    assert r.id == f"{name}-h1"
    assert [sq.title for sq in r.sub_questions] == ["X", "Y"]
    assert r.sub_questions[0].paragraph == "X was built in 1900. It is old."
    assert len(r.meta["context"]) == 3
