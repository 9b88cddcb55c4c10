"""compare: a scripted judge on a loopback OpenAI-compatible server. Scores count parsed verdicts
only, with their N; unparsable verdicts are counted and, past `judge.max_unparsable`, fail the
stage; a disabled judge calls nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.llm_server import LLMServer
from tests.params import merge, raw

QUESTIONS = [(f"q{i}", f"Who founded company {i}?", f"Founder{i}") for i in range(10)]
BASE_RIGHT = {0, 1, 2, 3}  # the base model names the founder on these questions
TUNED_RIGHT = {0, 1, 2, 3, 4, 5, 6}
GARBLED = {"q8", "q9"}  # the judge rambles instead of answering in the format on these questions


def field(prompt: str, label: str) -> str:
    return re.search(rf"^{label}: (.*)$", prompt, re.MULTILINE).group(1)


def scripted_judge(messages: list[dict], body: dict) -> str:
    """Grades by containment of the reference, as a careful judge would, but rambles on GARBLED."""
    prompt = messages[-1]["content"]
    ref = field(prompt, "Reference answer")
    if any(f"Founder{q[1:]}" == ref for q in GARBLED):
        return "Well, it depends on how one reads the question."
    if "Candidate answer:" in prompt:
        return "Verdict: " + ("correct" if ref in field(prompt, "Candidate answer") else "incorrect")
    a, b = ref in field(prompt, "Answer A"), ref in field(prompt, "Answer B")
    return "Better: " + ("A" if a and not b else "B" if b and not a else "tie")


def write_predictions(folder: Path, right: set[int]) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {"id": qid, "question": q, "gold": [gold], "final_message": f"It was {gold if i in right else 'someone else'}."}
        for i, (qid, q, gold) in enumerate(QUESTIONS)
    ]
    (folder / "hotpotqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def compare(tmp_path: Path, server: LLMServer, **judge):
    params = tmp_path / "params.yaml"
    llm = {
        "backend": "openai",
        "model": "judge-model",
        "base_url": server.url,
        "api_key_env": None,
        "cache_dir": str(tmp_path / "cache"),
        "timeout_s": 5.0,
    }
    params.write_text(yaml.safe_dump({"judge": merge(raw("judge"), {"enabled": True, "llm": llm, **judge})}))
    metrics = tmp_path / "compare.json"
    base, tuned = write_predictions(tmp_path / "base", BASE_RIGHT), write_predictions(tmp_path / "tuned", TUNED_RIGHT)
    args = ["--base", str(base), "--finetuned", str(tuned), "--params", str(params), "--metrics", str(metrics)]
    proc = subprocess.run([sys.executable, "-m", "qa_forge", "compare", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return proc, metrics


@pytest.fixture
def server():
    with LLMServer(script=scripted_judge) as s:
        yield s


def test_scores_count_parsed_verdicts_only(tmp_path, server):
    proc, metrics = compare(tmp_path, server, max_unparsable=0.25)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(metrics.read_text())["hotpotqa"]
    parsed = [i for i, (qid, _, _) in enumerate(QUESTIONS) if qid not in GARBLED]  # 8 questions
    assert r["n"] == 10
    assert r["accuracy"]["base"]["n"] == r["accuracy"]["finetuned"]["n"] == len(parsed)
    assert r["accuracy"]["base"]["value"] == pytest.approx(len(BASE_RIGHT) / len(parsed))
    assert r["accuracy"]["finetuned"]["value"] == pytest.approx(len(TUNED_RIGHT) / len(parsed))
    tuned = r["accuracy"]["finetuned"]
    assert tuned["ci95_lo"] <= tuned["value"] <= tuned["ci95_hi"]
    # paired on the questions both verdicts parsed for: fine-tuned - base
    d = r["accuracy"]["difference"]
    assert d["value"] == pytest.approx((len(TUNED_RIGHT) - len(BASE_RIGHT)) / len(parsed)) and d["ci95_lo"] < d["value"] < d["ci95_hi"]
    # fine-tuned alone right on q4..q6 (3 wins), both right or both wrong elsewhere (5 ties), base never better
    assert r["wins"] == {"finetuned": 3, "base": 0, "tie": 5}
    assert r["win_rate"]["n"] == len(parsed) and r["win_rate"]["finetuned"]["value"] == pytest.approx(3 / 8)
    assert r["unparsable"] == {"accuracy": {"base": 2, "finetuned": 2}, "pairs": 2, "verdicts": 8, "of": 40}


def test_too_many_unparsable_verdicts_fail_the_stage(tmp_path, server):
    (tmp_path / "compare.json").write_text('{"old": true}\n')
    proc, metrics = compare(tmp_path, server, max_unparsable=0.1)
    assert proc.returncode == 1
    assert "8 of 40 verdicts on hotpotqa were unparsable" in proc.stderr and "judge.max_unparsable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(metrics.read_text()) == {"old": True}  # the previous metrics stay


def test_a_disabled_judge_calls_nothing(tmp_path, server):
    proc, metrics = compare(tmp_path, server, enabled=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(metrics.read_text()) == {"enabled": False}
    assert server.n_requests == 0 and "judge is off" in proc.stdout


def test_a_position_biased_judge_wins_nothing(tmp_path):
    """A judge that always prefers the first answer: both orders disagree on every pair, all ties."""
    with LLMServer(script=lambda m, b: "Verdict: correct" if "Candidate answer:" in m[-1]["content"] else "Better: A") as s:
        proc, metrics = compare(tmp_path, s)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(metrics.read_text())["hotpotqa"]
    assert r["wins"] == {"finetuned": 0, "base": 0, "tie": 10} and r["win_rate"]["tie"]["value"] == 1.0
