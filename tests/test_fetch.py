"""fetch end to end through its CLI: metrics, sampling, and clear errors with no partial output."""

import json
import subprocess
import sys

import pytest
import yaml

from qa_forge.core.io import read_records
from qa_forge.data.fetch import FetchParams, fetch
from tests.conftest import ROOT
from tests.params import raw


def run_fetch(tmp_path, fetch_params: dict):
    """The fetch stage on params.yaml's fetch settings with `fetch_params` instead of its sources."""
    base = {k: v for k, v in raw("fetch").items() if k not in ("train", "eval")}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"fetch": {**base, "train": {}, "eval": {}, **fetch_params}}))
    out, metrics = tmp_path / "out", tmp_path / "metrics.json"
    proc = subprocess.run(
        [sys.executable, "-m", "qa_forge", "fetch", "--params", str(params), "--out", str(out), "--metrics", str(metrics)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc, out, metrics


def shared_params(shared):
    return {
        "seed": 3,
        "answers_path": str(ROOT / raw("fetch")["answers_path"]),
        "unanswerable_answer": raw("fetch")["unanswerable_answer"],
        "train": {
            "squad_v2": {"path": str(shared / "squad_v2/train_11articles.json"), "answerable": 40, "unanswerable": 24},
            "boolq": {"path": str(shared / "boolq/boolq_1491.jsonl"), "n": 16},
            "drop": {"path": str(shared / "drop/drop_contrast_947.json"), "n": 16},
            "musique": {"path": str(shared / "musique/train_full_first100.jsonl"), "answerable": None, "unanswerable": 10},
            "hotpotqa": {"path": str(shared / "hotpotqa/train_100.json"), "n": 20},
            "2wikimultihopqa": {"path": str(shared / "2wikimultihopqa/train_500.json"), "n": 20},
        },
        "eval": {
            "hotpotqa": {"path": str(shared / "hotpotqa/dev_277.json"), "n": 30},
            "squad_v2": {"path": str(shared / "squad_v2/dev_normans_rhine.json")},
        },
    }


def test_fetch_shared(shared, tmp_path):
    proc, out, metrics = run_fetch(tmp_path, shared_params(shared))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(metrics.read_text())
    assert m["overlap"] == 0
    assert m["train"]["squad_v2"] == {
        "read": 5147,
        "dropped": {},
        "kept": 5147,
        "records": 64,
        "answerable": 40,
        "unanswerable": 24,
        "with_answers": 0,
    }
    assert m["train"]["musique"]["dropped"] == {"malformed_sub_question": 62}
    assert (m["train"]["musique"]["answerable"], m["train"]["musique"]["unanswerable"]) == (17, 10)
    assert m["train_records"] == 64 + 16 + 16 + 27 + 20 + 20
    assert m["eval"]["hotpotqa"]["records"] == 30 and m["eval"]["squad_v2"]["records"] == 706
    train = read_records(out / "train.jsonl")
    assert len(train) == m["train_records"]
    assert sorted(p.name for p in out.iterdir()) == ["eval_hotpotqa.jsonl", "eval_squad_v2.jsonl", "train.jsonl"]
    # unanswerable MuSiQue items get the rule's final answer
    un = [r for r in train if r.src == "musique" and not r.answerable]
    assert un and all(r.final_answer.startswith("The question cannot be answered") and r.final_origin.kind == "rule" for r in un)


def test_sampling_is_seeded(shared):
    p = FetchParams.model_validate(shared_params(shared))
    a, _ = fetch(p)
    b, _ = fetch(p)
    c, _ = fetch(p.model_copy(update={"seed": 4}))
    ids = lambda o: [r.id for r in o["train"]]
    assert ids(a) == ids(b) != ids(c)


def assert_failed(proc, out, metrics, *patterns):
    assert proc.returncode != 0
    for pat in patterns:
        assert pat in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not metrics.exists()
    assert not list(out.parent.glob("*.tmp"))


def test_missing_file(tmp_path):
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"path": "nowhere/boolq.jsonl"}}})
    assert_failed(proc, out, metrics, "nowhere/boolq.jsonl: file not found")


def test_empty_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"path": str(tmp_path / "e.jsonl")}}})
    assert_failed(proc, out, metrics, "e.jsonl: file is empty")


def test_wrong_format(shared, tmp_path):
    proc, out, metrics = run_fetch(tmp_path, {"train": {"musique": {"path": str(shared / "hotpotqa/train_100.json")}}})
    assert_failed(proc, out, metrics, "train_100.json: record 0: missing field 'question_decomposition'")
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"path": str(shared / "squad_v2/dev_normans_rhine.json")}}})
    assert_failed(proc, out, metrics, "dev_normans_rhine.json: expected JSON lines")


def test_bad_json_line(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"question": "is it", "passage": "p", "answer": true}\n{oops\n')
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"path": str(tmp_path / "b.jsonl")}}})
    assert_failed(proc, out, metrics, "b.jsonl:2: not valid JSON")


def test_bad_field_value(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"question": "is it", "passage": "p", "answer": "maybe"}\n')
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"path": str(tmp_path / "b.jsonl")}}})
    assert_failed(proc, out, metrics, "b.jsonl: record 0", "'answer' must be true or false")


def test_unknown_source(tmp_path):
    proc, out, metrics = run_fetch(tmp_path, {"train": {"natural_questions": {"path": "x.json"}}})
    assert_failed(proc, out, metrics, "unknown source 'natural_questions'")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"path": "x.jsonl", "n": "many"}, "param 'fetch.train.boolq.n'"),
        ({"path": "x.jsonl", "n": -1}, "param 'fetch.train.boolq.n'"),
        ({"path": "x.jsonl", "hub": "google/boolq"}, "exactly one of 'path'"),
        ({"path": "x.jsonl", "size": 3}, "param 'fetch.train.boolq.size': Extra inputs"),
        ({"path": "x.jsonl", "answers_from": "rule"}, "boolq has no supporting sentences"),
        ({"path": "x.jsonl", "answers_from": "model"}, "param 'fetch.train.boolq.answers_from'"),
    ],
)
def test_bad_param(tmp_path, spec, message):
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": spec}})
    assert_failed(proc, out, metrics, message)


def test_overlap_is_an_error(shared, tmp_path):
    dev = str(shared / "squad_v2/dev_normans_rhine.json")
    proc, out, metrics = run_fetch(tmp_path, {"train": {"squad_v2": {"path": dev, "n": 50}}, "eval": {"squad_v2": {"path": dev}}})
    assert_failed(proc, out, metrics, "train/eval overlap: 50 question(s)")


def test_failure_keeps_previous_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("previous\n")
    proc, _, _ = run_fetch(tmp_path, {"train": {"boolq": {"path": "nowhere.jsonl"}}})
    assert proc.returncode != 0
    assert (out / "train.jsonl").read_text() == "previous\n"


def test_hub_offline_error_is_clear(tmp_path):
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"hub": "google/boolq"}}})
    assert_failed(proc, out, metrics, "param 'fetch.train.boolq'", "a hub source needs 'split'")
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": {"hub": "google/boolq", "split": "train"}}})
    assert_failed(proc, out, metrics, "param 'fetch.train.boolq'", "'revision' must pin a hub commit")
    pinned = {"hub": "google/boolq", "split": "train", "revision": "35b264d03638db9f4ce671b711558bf7ff0f80d5"}
    proc, out, metrics = run_fetch(tmp_path, {"train": {"boolq": pinned}})
    assert_failed(proc, out, metrics, "hub:google/boolq@35b264d0[train]: cannot load")


def test_rule_traces_replace_the_loaders_records(shared):
    """answers_from: rule turns each item into its rule trace (qa_forge.traces), per source: the
    rule's drops are counted with the loader's, unanswerable items abstain with the params' answer,
    and a source without the switch keeps the loader's records without answers."""
    abstain = "No answer in what was retrieved."
    spec = shared_params(shared)
    train = {
        "hotpotqa": {"path": spec["train"]["hotpotqa"]["path"], "n": None, "answers_from": "rule"},
        "musique": {"path": spec["train"]["musique"]["path"], "answerable": None, "unanswerable": None, "answers_from": "rule"},
        "squad_v2": {"path": spec["train"]["squad_v2"]["path"], "answerable": 5, "unanswerable": 5, "answers_from": "rule"},
        "2wikimultihopqa": {"path": spec["train"]["2wikimultihopqa"]["path"], "n": 10},
    }
    p = FetchParams(**{**spec, "unanswerable_answer": abstain, "train": train, "eval": {}})
    outputs, report = fetch(p)
    hot = report["train"]["hotpotqa"]
    # 100 items: 24 dropped by the HotpotQA rule (tests/test_traces.py checks the reasons by hand)
    assert (hot["read"], hot["kept"], sum(hot["dropped"].values())) == (100, 76, 24)
    assert report["train"]["musique"]["kept"] == 99
    by_src: dict[str, list] = {}
    for r in outputs["train"]:
        by_src.setdefault(r.src, []).append(r)
    assert len(by_src["squad_v2"]) == 10 and len(by_src["2wikimultihopqa"]) == 10
    for r in by_src["hotpotqa"] + by_src["musique"] + by_src["squad_v2"]:
        assert r.final_answer and r.final_origin.kind == "rule", r.id
        assert all(sq.answer and sq.answer_origin.kind == "rule" for sq in r.sub_questions), r.id
        if not r.answerable:
            assert r.final_answer == abstain, r.id
    assert sum(not r.answerable for r in by_src["squad_v2"]) == 5
    assert sum(not r.answerable for r in by_src["musique"]) == 50  # the dropped item is answerable
    assert all(not r.final_answer and not r.sub_questions[0].answer for r in by_src["2wikimultihopqa"])
