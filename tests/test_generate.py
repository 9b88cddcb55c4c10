"""generate -> regenerate -> filter through the real `openai` client against a scripted loopback
server: well-formed and malformed completions, origins, and re-runs that pay nothing."""

import itertools
import os
import re
import subprocess
import sys

import pytest
import yaml

import qa_forge.llm.backends as llm_mod
from qa_forge.data import generate, regenerate
from qa_forge.data.fetch import FetchParams, fetch
from qa_forge.data.filter import filter_records
from qa_forge.llm import LLM, LLMParams
from tests.conftest import ROOT
from tests.llm_server import LLMServer
from tests.params import params as section
from tests.params import raw

ENTITIES = [
    ("Lake Baikal", "Lake Tanganyika", "maximum depth"),
    ("Danube", "Rhine", "length"),
    ("Oxford", "Cambridge", "year founded"),
    ("Mount Fuji", "Mount Etna", "height"),
]


class Writer:
    """Scripted completions chosen by the prompt's wording; some deliberately broken."""

    def __init__(self):
        self.pair = itertools.count()

    def __call__(self, messages, body) -> str:
        p = messages[-1]["content"]
        if "Choose two different, real entities" in p:
            k = next(self.pair)
            a, b, attr = ENTITIES[k % len(ENTITIES)]
            question = {
                0: f"Which is greater, the {attr} of {a} or of {b}?",
                1: f"Is the {attr} of {a} larger than this of {b}?",  # coreference
                2: f"Which is older, {a} or the other one?",
            }.get(k, f"What is the {attr} of {a} and {b} combined?")  # 2: entity not named
            lines = [
                f"Entity 1: {a}",
                f"Entity 2: {b}",
                f"Common attributes: {attr}, location",
                f"Selected attribute: {attr}",
                f"Question 1: What is the {attr} of {a}?",
                f"Question 2: What is the {attr} of {b}?",
                f"Paragraph 1: {a} is well known. Its {attr} is 100 units.",
                f"Paragraph 2: {b} is well known. Its {attr} is 200 units.",
                f"Multi-hop question: {question}",
            ]
            return "\n".join(lines if k != 3 else lines[:7])  # 3: malformed, paragraph 2 and question missing
        if "Choose one real entity" in p:
            return (
                "Entity: Marie Curie\nAttributes: birthplace, field, awards\nAttribute 1: birthplace\nAttribute 2: field\n"
                "Question 1: Where was Marie Curie born?\nQuestion 2: What field did Marie Curie work in?\n"
                "Paragraph 1: Marie Curie was born in Warsaw in 1867.\nParagraph 2: Marie Curie worked in physics and chemistry.\n"
                "Multi-hop question: Where was Marie Curie born and what field did she work in?"
            )
        if "Write the one simple question" in p:
            return "Question: What does " + re.search(r"Paragraph: (\S+ \S+)", p).group(1) + " say?"
        if "The correct answer is" in p or "The correct short answer is given" in p:
            gold = re.search(r'(?:correct answer is "|Short answer: )([^"\n]+)', p).group(1)
            if "Who wrote" in p:  # one source answer disagrees with its gold answer
                return "Thought: The paragraph names someone.\nAnswer: It was written by Nobody In Particular."
            return f"Thought: The paragraph states it.\nAnswer: {gold.capitalize()}, as the paragraph says."
        if "does not contain the answer to the question" in p:
            return "Thought: The paragraph is about something else.\nAnswer: The question cannot be answered from this knowledge."
        if "Answer the question using only the paragraph. If" in p:
            first = re.search(r"Paragraph: ([^\n]+)", p).group(1).split(".")[0]
            return f"Thought: The paragraph says: {first}.\nAnswer: {first}.\nShort answer: {first.split()[-1]}"
        if "Combine those answers" in p:
            return "Summary: Both answers are known.\nThought: Comparing them gives the answer.\nAnswer: The second is larger.\nShort answer: the second"
        if "name its theme" in p:
            return "Theme: the water cycle"
        if "list the separate facts" in p:
            return "Fact: About 86 percent of evaporation on Earth is from the sea.\nFact: Groundwater can stay underground for thousands of years."
        if "Turn this fact into one question" in p:
            return (
                "SKIP"
                if "Groundwater" in p
                else "Question: Where does most evaporation on Earth happen?\nAnswer: Most of it, about 86 percent, is from the sea."
            )
        if "Rewrite this question and answer as" in p:
            return "Question: Hey, where does most water evaporate from?\nAnswer: Mostly from the sea: about 86 percent!"
        return "unexpected prompt"


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(llm_mod, "BACKOFF_BASE", 0.01)


@pytest.fixture
def server():
    with LLMServer(script=Writer()) as s:
        yield s


def params(server, tmp_path) -> LLMParams:
    return section(
        "llm",
        backend="openai",
        model="test-model",
        base_url=server.url,
        cache_dir=str(tmp_path / "cache"),
        timeout_s=5.0,
        concurrency=4,
        api_key_env=None,
    )


def gen_params(tmp_path) -> generate.GenerateParams:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "water.txt").write_text((ROOT / "data/documents/water_cycle.txt").read_text())
    return section(
        "generate",
        entities={"n": 4},
        attributes={"n": 1},
        documents={"folder": str(docs), "chunk_tokens": 256, "max_chunks": 1, "max_facts": 3, "roles": ["a child"]},
    )


def fetched():
    s = "data/samples/"
    p = FetchParams(
        seed=0,
        unanswerable_answer=raw("fetch")["unanswerable_answer"],
        eval={},
        train={
            "squad_v2": {"path": str(ROOT / s / "squad_v2_train.json")},  # no answers: generator 3 writes them
            "boolq": {"path": str(ROOT / s / "boolq_train.jsonl")},
            "musique": {"path": str(ROOT / s / "musique_train.jsonl")},
            "hotpotqa": {"path": str(ROOT / s / "hotpotqa_train.json"), "answers_from": "samples"},  # kept as they are
        },
        answers_path=str(ROOT / s / "answers.jsonl"),
    )
    return fetch(p)[0]["train"]


def run_all(server, tmp_path):
    llm = LLM(params(server, tmp_path))
    p = gen_params(tmp_path)
    out = {
        "entities": generate.gen_entities(llm, p, generate.rng_for(p, "entities")),
        "attributes": generate.gen_attributes(llm, p, generate.rng_for(p, "attributes")),
        "sources": generate.gen_answers(llm, fetched(), p, "test-model"),
        "documents": generate.gen_documents(llm, p, generate.rng_for(p, "documents")),
    }
    regen = {k: regenerate.regenerate(llm, v, section("regenerate"))[0] for k, v in out.items()}
    return llm, out, regen


def test_pipeline_end_to_end(server, tmp_path):
    llm, out, regen = run_all(server, tmp_path)
    assert [len(out[k]) for k in ("entities", "attributes", "documents")] == [4, 1, 2]  # documents: 1 fact kept + 1 voice
    # generator 1 writes no answers; hot document answers get regenerated at temperature 0
    assert all(sq.answer_origin is None for r in out["entities"] for sq in r.sub_questions if not r.meta.get("errors"))
    assert all(r.sub_questions[0].answer_origin.temperature >= 0.7 for r in out["documents"])
    assert all(sq.answer_origin.temperature == 0.0 for r in regen["documents"] + regen["attributes"] for sq in r.sub_questions)
    # samples answers pass through untouched; generator 3 answers are temperature 0 and kept by regenerate
    src = {r.id: r for r in regen["sources"]}
    hot = [r for r in out["sources"] if r.src == "hotpotqa"]
    assert hot and all(src[r.id] == r and r.final_origin.kind == "samples" for r in hot)
    sq0 = next(r for r in regen["sources"] if r.src == "squad_v2").sub_questions[0]
    assert sq0.answer_origin.kind == "model" and sq0.answer_origin.temperature == 0.0
    assert all(r.final_answer for r in regen["sources"])

    kept, rejected, report = filter_records([r for v in regen.values() for r in v], section("filter"))
    reasons = report["reasons"]
    assert reasons["format"] == 1 and reasons["coreference"] == 1 and reasons["entity_not_named"] == 1
    assert reasons["disagrees_with_gold"] >= 1
    bad = next(r for r in rejected if r.meta["reject_reason"] == "format")
    assert "missing 'Paragraph 2'" in bad.meta["reject_detail"]
    assert {r.src for r in kept} >= {"gen_entities", "gen_attributes", "gen_documents", "squad_v2", "boolq", "musique", "hotpotqa"}

    calls = server.n_requests
    assert calls == llm.stats["calls"] > 0
    # a second run makes zero calls and gives the same records
    llm2, _, regen2 = run_all(server, tmp_path)
    assert server.n_requests == calls and llm2.stats["calls"] == 0
    assert regen2 == regen
    assert max(server.successes.values()) == 1


def test_dry_run_calls_nothing(server, tmp_path):
    p = tmp_path / "params.yaml"
    fetched_path = tmp_path / "train.jsonl"
    from qa_forge.core.io import write_records

    write_records(fetched_path, fetched())
    p.write_text(
        yaml.safe_dump(
            {
                "llm": {**params(server, tmp_path).model_dump(), "price_input_per_mtok": 1.0, "price_output_per_mtok": 2.0},
                "generate": gen_params(tmp_path).model_dump(mode="json"),
            }
        )
    )
    out = tmp_path / "gen"
    proc = subprocess.run(
        [sys.executable, "-m", "qa_forge", "generate", "--params", str(p), "--fetched", str(fetched_path), "--out", str(out), "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert server.n_requests == 0 and not out.exists()
    assert "dry run" in proc.stdout and "total" in proc.stdout
    total = next(line for line in proc.stdout.splitlines() if "total" in line)
    assert float(total.split()[-2]) > 0  # an estimated cost
