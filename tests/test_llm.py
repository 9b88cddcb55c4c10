"""The LLM layer against a real OpenAI-compatible HTTP server on loopback, and tiny local models."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import qa_forge.llm.backends as llm_mod
from qa_forge.core.io import UserError
from qa_forge.llm import LLM, CostCapReached, LLMParams, Request
from tests.llm_server import LLMServer
from tests.params import params

ROOT = Path(__file__).resolve().parents[1]


def questions(n: int, **kw) -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"question {i}"}], 0.0, **kw) for i in range(n)]


def api(server: LLMServer, tmp_path: Path, **kw) -> LLMParams:
    return params(
        "llm",
        **{
            "backend": "openai",
            "model": "test-model",
            "base_url": server.url,
            "cache_dir": str(tmp_path / "cache"),
            "timeout_s": 5.0,
            "api_key_env": None,  # the loopback server needs no key
            **kw,
        },
    )


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(llm_mod, "BACKOFF_BASE", 0.01)


@pytest.fixture
def server():
    with LLMServer() as s:
        yield s


def test_second_run_calls_nothing(server, tmp_path):
    reqs = questions(20) + [Request.chat([{"role": "user", "content": "question 3"}], 0.7, sample=k) for k in range(3)]
    first = LLM(api(server, tmp_path)).complete(reqs)
    assert [r.text for r in first[:20]] == [f"echo: question {i}" for i in range(20)]
    assert server.n_requests == 23  # three samples of one prompt are three entries
    llm = LLM(api(server, tmp_path))
    second = llm.complete(reqs)
    assert server.n_requests == 23
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached for r in second) and not any(r.cached for r in first)
    assert llm.stats["calls"] == 0 and llm.stats["cached"] == 23


def test_duplicates_in_one_call_are_paid_once(server, tmp_path):
    reqs = questions(3) + questions(3)
    out = LLM(api(server, tmp_path)).complete(reqs)
    assert [r.text for r in out] == [r.text for r in out[:3]] * 2
    assert server.n_requests == 3


KILLED_RUN = """
import json, sys
from qa_forge.llm import LLM
from tests.params import params
from tests.test_llm import questions
LLM(params("llm", **json.loads(sys.argv[1]))).complete(questions(int(sys.argv[2])))
"""


def test_killed_run_resumes_paying_only_for_the_missing(tmp_path):
    n, k = 12, 4
    with LLMServer(latency_s=0.25) as server:
        p = api(server, tmp_path, concurrency=1)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, p.model_dump_json(), str(n)], cwd=ROOT, env=env)
        try:
            server.wait_requests(k + 1)  # concurrency 1: answers 1..k are cached before request k+1 is sent
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        time.sleep(0.4)  # request k+1 finds its client gone: answered to nobody, not a success
        assert server.n_successes == k
        assert server.outcomes["abandoned"] == 1

        llm = LLM(p.model_copy(update={"concurrency": 4}))
        assert llm.estimate(questions(n))["cached"] == k
        out = llm.complete(questions(n))
        assert [r.text for r in out] == [f"echo: question {i}" for i in range(n)]
        assert llm.stats["calls"] == n - k and llm.stats["cached"] == k
        assert len(server.successes) == n and set(server.successes.values()) == {1}  # nothing paid twice
        assert server.n_requests == n + 1


def test_faults_are_retried_and_nothing_is_paid_twice(tmp_path):
    n = 40
    with LLMServer(fault_rate=0.3, timeout_sleep_s=1.5, seed=1) as server:
        llm = LLM(api(server, tmp_path, timeout_s=1.0, concurrency=8, max_retries=12))
        start = time.time()
        out = llm.complete(questions(n))
        assert time.time() - start < 20
        assert [r.text for r in out] == [f"echo: question {i}" for i in range(n)]
        assert len(server.successes) == n and set(server.successes.values()) == {1}
        faults = [e["fault"] for e in server.requests if e["fault"]]
        assert set(faults) == {"429", "500", "timeout"}  # the seeded draw sequence is fixed, so is this
        assert llm.stats["retries"] == len(faults) == server.n_requests - n > 0


def test_retry_after_is_honoured(monkeypatch, tmp_path):
    monkeypatch.setattr(llm_mod, "BACKOFF_BASE", 30.0)  # backoff would take seconds; Retry-After: 0 says now
    with LLMServer(fault_rate=0.5, faults=("429",)) as server:
        llm = LLM(api(server, tmp_path))
        start = time.time()
        llm.complete(questions(6))
        assert llm.stats["retries"] > 0 and time.time() - start < 3


def test_client_error_stops_with_model_and_status(tmp_path):
    with LLMServer(fault_rate=1.0, faults=("400",)) as server:
        with pytest.raises(UserError, match=r"model 'test-model'.*HTTP 400"):
            LLM(api(server, tmp_path)).complete(questions(3))
        assert server.n_requests <= 3  # not retried


def test_cost_cap_stops_the_run(tmp_path):
    prices = {"price_input_per_mtok": 1000.0, "price_output_per_mtok": 1000.0}  # $0.001 a token
    # worst case a request: ("user" 4 + "question i" 10 bytes + 4 + 3 prompt + 20 output) tokens = $0.041; the cap admits three
    with LLMServer(latency_s=0.1) as server:
        p = api(server, tmp_path, concurrency=4, max_new_tokens=20, cost_cap_usd=0.13, **prices)
        llm = LLM(p)
        with pytest.raises(CostCapReached, match=r"\$0\.1300") as e:
            llm.complete(questions(10))
        assert llm.stats["calls"] == 3 == server.n_successes
        assert 0 < llm.stats["cost_usd"] <= 0.13
        assert f"${llm.stats['cost_usd']:.4f}" in str(e.value)
        assert LLM(p).estimate(questions(10))["cached"] == 3  # what was answered is kept

        llm = LLM(p.model_copy(update={"cost_cap_usd": None}))
        assert len(llm.complete(questions(10))) == 10
        assert llm.stats["calls"] == 7
        assert set(server.successes.values()) == {1}


def test_estimate_counts_cached_and_bounds_cost(server, tmp_path):
    prices = {"price_input_per_mtok": 2.0, "price_output_per_mtok": 10.0}
    llm = LLM(api(server, tmp_path, max_new_tokens=50, **prices))

    def req(i, max_tokens=None):
        return Request.chat([{"role": "system", "content": "s" * 8}, {"role": "user", "content": f"{i:040d}"}], 0.0, max_tokens)

    reqs = [req(0), req(1), req(2, 100), req(3, 100), req(0)]  # the last one repeats the first
    llm.complete(reqs[:2])
    est = llm.estimate(reqs)
    prompt = (6 + 8 + 4) + (4 + 40 + 4) + 3  # role and content bytes + 4 a message, + 3
    assert est == {
        "requests": 5,
        "cached": 3,
        "to_call": 2,
        "prompt_tokens": 2 * prompt,
        "max_output_tokens": 200,
        "cost_usd": pytest.approx(2 * prompt * 2.0 / 1e6 + 200 * 10.0 / 1e6),
    }
    before = llm.stats["cost_usd"]
    llm.complete(reqs)
    assert 0 < llm.stats["cost_usd"] - before <= est["cost_usd"]
    assert llm.estimate(reqs) == {"requests": 5, "cached": 5, "to_call": 0, "prompt_tokens": 0, "max_output_tokens": 0, "cost_usd": 0.0}


def test_api_key_comes_from_env_and_is_never_stored(server, tmp_path, monkeypatch):
    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("QAF_TEST_KEY", secret)
    llm = LLM(api(server, tmp_path, api_key_env="QAF_TEST_KEY"))
    llm.complete(questions(3))
    assert {e["authorization"] for e in server.requests} == {f"Bearer {secret}"}
    files = [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]
    assert files and not any(secret.encode() in f.read_bytes() for f in files)
    assert secret not in json.dumps(llm.stats) + llm.identity + llm.params.model_dump_json()

    monkeypatch.delenv("QAF_TEST_KEY")  # an unset variable is an error naming it, before anything is sent
    with pytest.raises(UserError, match="environment variable QAF_TEST_KEY is not set"):
        LLM(api(server, tmp_path / "b", api_key_env="QAF_TEST_KEY")).complete(questions(1))
    LLM(api(server, tmp_path / "c", api_key_env=None)).complete(questions(1))  # null: a server that needs none
    assert [e["authorization"] for e in server.requests[3:]] == ["Bearer EMPTY"]


def test_identity_names(tmp_path):
    def openai(**kw):
        return LLM(params("llm", backend="openai", cache_dir=str(tmp_path), api_key_env=None, **kw)).identity

    assert openai(model="gpt-x", model_version="2024-08-06") == "openai:api.openai.com:gpt-x:2024-08-06"
    # credentials in the URL never reach the identity (stored in every cache row)
    assert openai(model="m", base_url="http://user:pw@127.0.0.1:8000/v1", model_version="v1") == "openai:http://127.0.0.1:8000/v1:m:v1"
    assert LLM(params("llm", backend="vllm", model="org/some-model", cache_dir=str(tmp_path))).identity == "hub:org/some-model"
    with pytest.raises(UserError, match="no weight files"):
        _ = LLM(params("llm", model=str(tmp_path), cache_dir=str(tmp_path / "c"))).identity


# --- tiny local models (transformers backend) --------------------------------------------------


def save_tiny(path: Path, tok, seed: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def local(path: Path, cache: Path, **kw) -> LLMParams:
    return params("llm", **{"backend": "transformers", "model": str(path), "cache_dir": str(cache), "max_new_tokens": 8, **kw})


def stored_texts(llm: LLM, reqs: list[Request]) -> list[str]:
    """What the model wrote, as cached: a random tiny model never stops, so every completion is a
    cut-off failure whose Response text is empty."""
    rows = llm._cache.get_many(llm._item(r).key for r in reqs)
    return [rows[llm._item(r).key][0] for r in reqs]


def test_changed_local_model_misses_the_cache(tmp_path, tiny_tok):
    model, cache = tmp_path / "model", tmp_path / "cache"
    reqs = questions(3)
    a = LLM(local(save_tiny(model, tiny_tok, seed=0), cache))
    a.complete(reqs)
    assert a.identity.startswith("local:") and a.stats["calls"] == 3

    b = LLM(local(save_tiny(model, tiny_tok, seed=1), cache))  # new weights, same path
    assert b.identity != a.identity
    assert b.estimate(reqs)["cached"] == 0
    b.complete(reqs)
    assert b.stats["calls"] == 3

    c = LLM(local(save_tiny(model, tiny_tok, seed=1), cache))  # the same weights saved again
    assert c.identity == b.identity
    assert all(r.cached for r in c.complete(reqs)) and c.stats["calls"] == 0


def test_batched_greedy_matches_one_at_a_time(tmp_path, tiny_tok):
    model = save_tiny(tmp_path / "model", tiny_tok, seed=0)
    reqs = [Request.chat([{"role": "user", "content": "fox " * n}], 0.0) for n in (1, 9, 3, 20, 2, 14, 5)]
    a, b = LLM(local(model, tmp_path / "a", batch_size=4)), LLM(local(model, tmp_path / "b", batch_size=1))
    batched, single = a.complete(reqs), b.complete(reqs)
    assert stored_texts(a, reqs) == stored_texts(b, reqs)
    assert [(r.prompt_tokens, r.completion_tokens) for r in batched] == [(r.prompt_tokens, r.completion_tokens) for r in single]
    assert len({r.prompt_tokens for r in batched}) == len(reqs)  # really mixed lengths
    assert all(0 < r.completion_tokens <= 8 for r in batched)


def test_sampling_is_reproducible_per_sample(tmp_path, tiny_tok):
    model = save_tiny(tmp_path / "model", tiny_tok, seed=0)
    reqs = [Request.chat([{"role": "user", "content": "fox"}], 1.0, sample=k) for k in range(3)]
    a, b = LLM(local(model, tmp_path / "a")), LLM(local(model, tmp_path / "b"))  # b: a fresh cache, sampled again
    a.complete(reqs), b.complete(reqs)
    assert stored_texts(a, reqs) == stored_texts(b, reqs)
    assert len(set(stored_texts(a, reqs))) > 1


@pytest.mark.slow
def test_base_model_answers(tmp_path, smollm2):
    llm = LLM(params("llm", backend="transformers", model=str(smollm2), cache_dir=str(tmp_path), max_new_tokens=24))
    [out] = llm.complete([Request.chat([{"role": "user", "content": "What is the capital of France?"}], 0.0)])
    assert "Paris" in out.text and math.isclose(llm.stats["cost_usd"], 0.0)
