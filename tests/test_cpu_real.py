"""The cpu-real profile's wiring on its real inputs (../shared/data), without training: what fetch and
filter make of them is what the 40-minute run trains and evaluates on. The run itself is a
measurement (bench/results/cpu_real.md), not a test."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from qa_forge.core import profiles
from qa_forge.data.fetch import FetchParams, fetch
from qa_forge.data.filter import FilterParams, filter_records
from qa_forge.eval.evaluate import EvaluateParams
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def cpu_real() -> dict:
    return yaml.safe_load(profiles.compose(ROOT, "cpu-real"))


@pytest.fixture(scope="module")
def fetched(cpu_real, shared_module):
    import os

    here = os.getcwd()
    os.chdir(ROOT)  # the profile names the shared files relative to the repo root, as dvc runs the stage
    try:
        return fetch(FetchParams(**cpu_real["fetch"]))
    finally:
        os.chdir(here)


@pytest.fixture(scope="module")
def shared_module():
    from tests.conftest import SHARED

    if not SHARED.is_dir():
        pytest.skip(f"real QA samples not found at {SHARED} (they sit beside the repo in ../shared/data)")
    return SHARED


def test_train_records_are_rule_traces_of_the_four_sources(fetched):
    outputs, report = fetched
    train = outputs["train"]
    assert 1000 <= len(train) <= 2000
    assert Counter(r.src for r in train) == {"squad_v2": 500, "2wikimultihopqa": 446, "musique": 99, "hotpotqa": 76}
    assert report["train"]["boolq"]["records"] == report["train"]["drop"]["records"] == 0
    assert all(r.final_origin.kind == "rule" and r.final_answer for r in train)
    assert sum(not r.answerable for r in train) == 200 + 50  # SQuAD v2's and MuSiQue's unanswerable items


def test_eval_sets_are_the_issues_questions(fetched, cpu_real):
    outputs, report = fetched
    assert report["overlap"] == 0
    assert len(outputs["eval_hotpotqa"]) == 277
    assert len(outputs["eval_2wikimultihopqa"]) == 164  # the dev questions that carry context
    assert report["eval"]["2wikimultihopqa"]["dropped"] == {"no_context": 36}
    squad = outputs["eval_squad_v2"]
    assert (sum(r.answerable for r in squad), sum(not r.answerable for r in squad)) == (100, 100)
    # every multi-hop eval record can be scored for coverage: its supporting titles are among its paragraphs
    for name in ("eval_hotpotqa", "eval_2wikimultihopqa"):
        for r in outputs[name]:
            titles = {p["title"] for p in r.meta["context"]}
            assert r.meta["supporting_titles"] and set(r.meta["supporting_titles"]) <= titles, r.id
    sets = EvaluateParams(**cpu_real["evaluate"]).sets
    # evaluate reads exactly what fetch writes: data/fetched/eval_<set>.jsonl for each fetched eval source
    assert {n: s.path for n, s in sets.items()} == {n.removeprefix("eval_"): f"data/fetched/{n}.jsonl" for n in outputs if n != "train"}
    assert all(s.n is None for s in sets.values())


def test_the_filter_keeps_the_rule_traces(fetched, cpu_real):
    outputs, _ = fetched
    kept, rejected, _ = filter_records(outputs["train"], FilterParams(**cpu_real["filter"]))
    assert len(rejected) <= 2, Counter(r.meta.get("reject_reason") for r in rejected)
    assert len(kept) >= len(outputs["train"]) - 2
