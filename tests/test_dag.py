"""The real DVC pipeline on the tiny profile: runs, re-runs nothing, re-runs only what changed."""

import json

import pytest

from stages.io import read_records
from tests.dag import dvc, make_repo, ran_stages, set_param

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("dag"))
    first = dvc(repo, "repro")
    assert {"base_model", "fetch"} <= set(ran_stages(first)), first.stdout
    return repo


def test_second_repro_does_nothing(repo):
    again = dvc(repo, "repro")
    assert ran_stages(again) == [], again.stdout
    status = dvc(repo, "status")
    assert "up to date" in status.stdout


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
    metrics = next(iter(shown.values()))["data"]["metrics/fetch.json"]["data"]
    assert metrics["overlap"] == 0 and metrics["train"]["musique"]["dropped"] == {"malformed_sub_question": 1}


def test_param_change_reruns_only_fetch(repo):
    set_param(repo, "fetch.seed", 7)
    proc = dvc(repo, "repro")
    assert ran_stages(proc) == ["fetch"], proc.stdout
