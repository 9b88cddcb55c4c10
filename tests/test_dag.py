"""The real DVC pipeline on the tiny profile: runs, re-runs nothing, re-runs only what changed,
and never pays for an LLM call twice."""

import json

import pytest

from qa_forge.core.io import read_records
from tests.dag import dvc, ran_stages, set_param

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(dag):
    """The repo after the first repro, in which every stage ran (tests/dag.py first_repro)."""
    return dag.repo


def metrics(repo, name):
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_second_repro_does_nothing(repo):
    again = dvc(repo, "repro")
    assert ran_stages(again) == [], again.stdout
    assert "up to date" in dvc(repo, "status").stdout


def test_outputs_and_metrics(repo):
    assert (repo / "models/base/config.json").is_file()
    train = read_records(repo / "data/fetched/train.jsonl")
    assert {r.src for r in train} == {"squad_v2", "boolq", "drop", "musique", "hotpotqa", "2wikimultihopqa"}
    # the samples give every train record complete answers
    assert all(r.final_answer for r in train)
    assert all(sq.answer and sq.question for r in train for sq in r.sub_questions)
    assert len(read_records(repo / "data/fetched/eval_hotpotqa.jsonl")) >= 20
    assert len(read_records(repo / "data/fetched/eval_squad_v2.jsonl")) >= 20
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    fetch = next(iter(shown.values()))["data"]["metrics/fetch.json"]["data"]
    assert fetch["overlap"] == 0 and fetch["train"]["musique"]["dropped"] == {"malformed_sub_question": 1}
    # a random tiny model writes nothing parseable: filter rejects it with a reason, samples are kept
    f = metrics(repo, "filter")
    assert f["kept"] == len(train) and f["reasons"]["format"] == 3
    assert len(read_records(repo / "data/filtered/rejected.jsonl")) == f["rejected"]
    assert metrics(repo, "generate")["llm"]["calls"] > 0


def test_pack_outputs(repo):
    m = metrics(repo, "pack")
    assert m["conversations"] == metrics(repo, "filter")["kept"] and m["rows_train"] >= 1 and m["rows_valid"] >= 1
    o = m["overlong"]  # the tiny profile packs to 512: some sample conversations are longer
    assert o["count"] > 0 and o["count"] == o["truncated"] + o["dropped"] + o["dropped_no_labels"]
    rows = [json.loads(line) for line in (repo / "data/packed/train.jsonl").read_text().splitlines()]
    assert len(rows) == m["rows_train"] and all(len(r["input_ids"]) <= 512 for r in rows)
    shown = json.loads(dvc(repo, "plots", "show", "--json", "metrics/pack_lengths.csv", check=False).stdout)
    assert shown["data"]["metrics/pack_lengths.csv"][0]["type"] == "vega"  # the length histogram renders


def test_filter_param_reruns_only_filter_without_llm_calls(repo):
    cache = repo / ".cache/llm/llm.sqlite"
    before = cache.stat().st_mtime_ns, cache.stat().st_size
    set_param(repo, "filter.near_duplicate_jaccard", 0.9)
    proc = dvc(repo, "repro")
    assert ran_stages(proc) == ["filter"], proc.stdout
    assert (cache.stat().st_mtime_ns, cache.stat().st_size) == before


def test_more_items_pay_only_for_the_new_ones(repo):
    set_param(repo, "generate.entities.n", 3)
    proc = dvc(repo, "repro")
    assert ran_stages(proc)[:1] == ["generate"], proc.stdout
    llm = metrics(repo, "generate")["llm"]
    assert llm["calls"] == 1 and llm["cached"] >= 3  # only the third entity pair is new


def test_fetch_param_reruns_downstream(repo):
    set_param(repo, "fetch.seed", 7)
    proc = dvc(repo, "repro")
    assert ran_stages(proc)[0] == "fetch" and "base_model" not in ran_stages(proc), proc.stdout


def test_a_data_change_never_reruns_retrieve_while_the_retriever_is_untuned(repo):
    """retriever.finetune off: train_retriever re-runs on new training data, but writes the same
    marker, so retrieve and the base model's evaluation stay as they are."""
    kept = metrics(repo, "filter")["kept"]
    set_param(repo, "filter.max_chars.question", 80)
    # only what the retriever's consumers need (the training stages run in the next test)
    proc = dvc(repo, "repro", "retrieve", "evaluate@base")
    ran = ran_stages(proc)
    assert 0 < metrics(repo, "filter")["kept"] < kept, proc.stdout  # the training data did change
    assert {"filter", "train_retriever"} <= set(ran), proc.stdout
    assert "retrieve" not in ran and "evaluate@base" not in ran, proc.stdout


def test_train_param_never_reevaluates_the_base(repo):
    set_param(repo, "train.learning_rate", 5.0e-4)
    proc = dvc(repo, "repro")
    ran = ran_stages(proc)
    assert {"train", "merge", "evaluate@finetuned"} <= set(ran), proc.stdout
    assert "evaluate@base" not in ran and "fetch" not in ran, proc.stdout
    shown = next(iter(json.loads(dvc(repo, "metrics", "show", "--json").stdout).values()))["data"]
    for name in ("base", "finetuned"):
        hotpot = shown[f"metrics/eval_{name}.json"]["data"]["hotpotqa"]
        assert {"recall", "containing_accuracy", "em", "f1"} <= set(hotpot)
        assert hotpot["recall"]["n"] == 3
    assert shown["metrics/compare.json"]["data"] == {"enabled": False}  # the tiny model cannot judge
    assert "metrics/retrieval.json" in shown
