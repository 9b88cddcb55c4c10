"""The LLM layer under attack, against a real OpenAI-compatible server on loopback that bills every
request it runs and dedupes nothing: faults of every kind at concurrency 8, kill -9 mid-run, a
cost cap against a server billing one token per UTF-8 byte, and what the cache keys on."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

from qa_forge.core.io import UserError
from qa_forge.llm import LLM, CostCapReached, Request, backends
from qa_forge.llm.identity import legacy_identity
from tests.conftest import ROOT
from tests.llm_server import ALL_FAULTS, LLMServer
from tests.test_llm import api, local, questions, save_tiny

DELIVERED = {"ok", "empty", "cutoff"}  # outcomes that reach the client as a completion


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(backends, "BACKOFF_BASE", 0.01)


def test_every_item_ends_answered_or_failed_and_nothing_is_paid_twice(tmp_path):
    n = 120
    with LLMServer(fault_rate=0.3, faults=ALL_FAULTS, timeout_sleep_s=1.2, seed=3) as server:
        p = api(server, tmp_path, concurrency=8, timeout_s=0.8, max_retries=12, max_new_tokens=64)
        llm = LLM(p)
        out = llm.complete(questions(n))
        outcomes = Counter(e["outcome"] for e in server.requests)
        faults = Counter(e["fault"] for e in server.requests)  # a late answer's outcome comes after the test moves on
        assert set(faults) - {None} == set(ALL_FAULTS)

        # 0 items lost: each is answered with its own text, or failed with the reason the server gave
        answered = [r for r in out if r.failure is None]
        assert len(out) == n and all(r.text == f"echo: question {i}" for i, r in enumerate(out) if r.failure is None)
        assert Counter(r.failure for r in out if r.failure) == {"empty": outcomes["empty"], "cut_off": outcomes["cutoff"]}
        assert llm.stats["failed"] == {k: v for k, v in {"empty": outcomes["empty"], "cut_off": outcomes["cutoff"]}.items() if v}
        assert len(answered) + outcomes["empty"] + outcomes["cutoff"] == n
        # 0 delivered answers paid twice: every request got exactly one completion to the client
        delivered = Counter(e["fingerprint"] for e in server.requests if e["outcome"] in DELIVERED)
        assert len(delivered) == n and set(delivered.values()) == {1}
        # what may have been billed without reaching us is reported: every late answer and every body that was
        # not a completion (billed), and the hangs (not billed, but from outside a hang looks like a late answer)
        billed_unreceived = faults["timeout"] + faults["malformed"]
        assert billed_unreceived > 0 and llm.stats["maybe_billed"] == billed_unreceived + faults["hang"]

        # a re-run pays for nothing: failures are cached with their reason too
        sent = server.n_requests
        again = LLM(p).complete(questions(n))
        assert server.n_requests == sent and [r.failure for r in again] == [r.failure for r in out]
        # ... unless the user asks: only the failed ones are sent again
        LLM(p.model_copy(update={"retry_failed": True})).complete(questions(n))
        assert server.n_requests - sent >= outcomes["empty"] + outcomes["cutoff"] > 0
        resent = Counter(e["fingerprint"] for e in server.requests[sent:])
        failed_prints = {e["fingerprint"] for e in server.requests[:sent] if e["outcome"] in ("empty", "cutoff")}
        assert set(resent) == failed_prints


KILLED_RUN = """
import sys
from qa_forge.llm import LLM, LLMParams
from tests.test_llm import questions
LLM(LLMParams.model_validate_json(sys.argv[1])).complete(questions(int(sys.argv[2])))
"""


def test_kill_mid_run_repeats_only_the_calls_in_flight_and_reports_them(tmp_path):
    n = 48
    with LLMServer(latency_s=0.3) as server:
        p = api(server, tmp_path, concurrency=8)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, p.model_dump_json(), str(n)], cwd=ROOT, env=env)
        try:
            server.wait_requests(20)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        first = server.n_requests
        llm = LLM(p)
        out = llm.complete(questions(n))
        assert [r.text for r in out] == [f"echo: question {i}" for i in range(n)]
        sent = Counter(e["fingerprint"] for e in server.requests)
        repeated = sum(c - 1 for c in sent.values())
        # only what was in flight at the kill went out twice (at most one per thread), and it was reported
        assert 0 < repeated <= llm.stats["maybe_billed_earlier"] <= p.concurrency
        assert llm.stats["calls"] == n - (first - repeated)


def test_cost_cap_holds_against_a_server_billing_a_token_per_byte(tmp_path):
    """Dense text (3-4 UTF-8 bytes a character), answers without usage and late answers: the
    server's own bill never passes the cap."""
    prices = {"price_input_per_mtok": 100.0, "price_output_per_mtok": 100.0}  # about $0.01 a request
    dense = [Request.chat([{"role": "user", "content": f"{i} 東京の人口は何人ですか 🙂🙂"}], 0.0) for i in range(60)]
    faults = ("no_usage", "timeout", "malformed")
    with LLMServer(tokens="bytes", fault_rate=0.3, faults=faults, timeout_sleep_s=1.0, seed=5) as server:
        llm = LLM(api(server, tmp_path, concurrency=8, timeout_s=0.6, max_new_tokens=40, cost_cap_usd=0.5, **prices))
        with pytest.raises(CostCapReached):
            llm.complete(dense)
        billed = server.cost(prices["price_input_per_mtok"], prices["price_output_per_mtok"])
        assert 0.3 < billed <= 0.5 and billed <= llm.stats["cost_usd"] + 1e-9
        assert {e["fault"] for e in server.requests} >= set(faults)


# --- what the cache keys on ------------------------------------------------------------------------


def test_a_served_model_with_new_metadata_or_version_is_asked_again(tmp_path):
    with LLMServer() as server:
        p = api(server, tmp_path)
        LLM(p).complete(questions(3))
        assert LLM(p).complete(questions(3))[0].cached
        server.root = "weights-v2"  # the server now serves other weights under the same name
        fresh = LLM(p)
        assert not fresh.complete(questions(3))[0].cached and fresh.stats["calls"] == 3
        pinned = p.model_copy(update={"model_version": "sha-1"})  # a declared version is the identity
        LLM(pinned).complete(questions(3))
        server.root = "weights-v3"
        assert LLM(pinned).complete(questions(3))[0].cached


@pytest.mark.parametrize("edit", ["chat_template", "generation_config"])
def test_a_local_model_with_a_new_template_or_generation_config_is_asked_again(tmp_path, tiny_tok, edit):
    model, cache = save_tiny(tmp_path / "model", tiny_tok, seed=0), tmp_path / "cache"
    a = LLM(local(model, cache))
    a.complete(questions(2))
    if edit == "chat_template":
        cfg = json.loads((model / "tokenizer_config.json").read_text())
        (model / "chat_template.jinja").unlink(missing_ok=True)
        cfg["chat_template"] = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
        )
        (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    else:
        gen = json.loads((model / "generation_config.json").read_text())
        (model / "generation_config.json").write_text(json.dumps({**gen, "repetition_penalty": 1.3}))
    b = LLM(local(model, cache))
    assert b.identity != a.identity
    b.complete(questions(2))
    assert b.stats["calls"] == 2


def test_answers_under_the_old_identity_are_migrated_not_orphaned(tmp_path, tiny_tok):
    """A cache written before the identity covered template and config: its rows are re-keyed."""
    model, cache = save_tiny(tmp_path / "model", tiny_tok, seed=0), tmp_path / "cache"
    a = LLM(local(model, cache))
    first = a.complete(questions(3))
    old = legacy_identity(a.params)
    db = sqlite3.connect(cache / "llm.sqlite")
    db.execute("UPDATE responses SET identity = ?, key = 'old-' || key", (old,))
    db.commit()
    db.close()
    b = LLM(local(model, cache))
    again = b.complete(questions(3))
    assert b.stats["calls"] == 0 and [r.completion_tokens for r in again] == [r.completion_tokens for r in first]


def test_url_credentials_are_never_stored_or_printed(tmp_path):
    with LLMServer(fault_rate=1.0, faults=("400",)) as server:
        url = server.url.replace("http://", "http://alice:hunter2@")
        llm = LLM(api(server, tmp_path).model_copy(update={"base_url": url}))
        with pytest.raises(UserError) as e:
            llm.complete(questions(1))
        assert "hunter2" not in str(e.value) and "hunter2" not in llm.identity
        server.fault_rate = 0.0
        llm = LLM(api(server, tmp_path).model_copy(update={"base_url": url}))
        llm.complete(questions(2))
    files = [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]
    assert files and not any(b"hunter2" in f.read_bytes() for f in files)
