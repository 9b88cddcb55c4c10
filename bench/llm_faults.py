"""The LLM layer against the loopback server with 30 % faults of every kind at concurrency 8, and the
cost cap against a server billing one token per UTF-8 byte: the figures behind tests/test_llm_faults.py
-> bench/results/llm_faults.json.

    python bench/llm_faults.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa_forge.llm import (
    LLM,
    CostCapReached,
    Request,
    backends,
)
from tests.llm_server import ALL_FAULTS, LLMServer
from tests.params import params

N = 120


def api(server: LLMServer, cache: Path, **kw):
    over = {"backend": "openai", "model": "test-model", "base_url": server.url, "api_key_env": None, "cache_dir": str(cache)}
    return params("llm", **{**over, **kw})


def questions(n: int) -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"question {i}"}], 0.0) for i in range(n)]


def faults(cache: Path) -> dict:
    with LLMServer(fault_rate=0.3, faults=ALL_FAULTS, timeout_sleep_s=1.2, seed=3) as server:
        p = api(server, cache, concurrency=8, timeout_s=0.8, max_retries=12, max_new_tokens=64)
        llm = LLM(p)
        start = time.time()
        out = llm.complete(questions(N))
        seconds = time.time() - start
        injected = Counter(e["fault"] for e in server.requests if e["fault"])
        delivered = Counter(e["fingerprint"] for e in server.requests if e["outcome"] in ("ok", "empty", "cutoff"))
        sent = server.n_requests
        again = LLM(p)
        again.complete(questions(N))
        return {
            "items": N,
            "requests_sent": sent,
            "faults_injected": dict(sorted(injected.items())),
            "answered": sum(r.failure is None for r in out),
            "failed_with_reason": dict(Counter(r.failure for r in out if r.failure)),
            "lost": N - sum(r.failure is None for r in out) - sum(r.failure is not None for r in out if r.failure in ("empty", "cut_off")),
            "delivered_twice": sum(c > 1 for c in delivered.values()),
            "billed_without_answer": injected["timeout"] + injected["malformed"],
            "reported_maybe_billed": llm.stats["maybe_billed"],
            "rerun_new_requests": server.n_requests - sent,
            "rerun_calls": again.stats["calls"],
            "seconds": round(seconds, 1),
        }


def cost_cap(cache: Path) -> dict:
    prices = {"price_input_per_mtok": 100.0, "price_output_per_mtok": 100.0}
    dense = [Request.chat([{"role": "user", "content": f"{i} 東京の人口は何人ですか 🙂🙂"}], 0.0) for i in range(60)]
    with LLMServer(tokens="bytes", fault_rate=0.3, faults=("no_usage", "timeout", "malformed"), timeout_sleep_s=1.0, seed=5) as server:
        llm = LLM(api(server, cache, concurrency=8, timeout_s=0.6, max_new_tokens=40, cost_cap_usd=0.5, **prices))
        stopped = False
        try:
            llm.complete(dense)
        except CostCapReached:
            stopped = True
        time.sleep(1.2)  # let the late answers be billed
        return {
            "cap_usd": 0.5,
            "server_billed_usd": round(server.cost(prices["price_input_per_mtok"], prices["price_output_per_mtok"]), 4),
            "client_charged_usd": round(llm.stats["cost_usd"], 4),
            "stopped_by_cap": stopped,
            "requests_sent": server.n_requests,
        }


def main() -> None:
    backends.BACKOFF_BASE = 0.01
    with tempfile.TemporaryDirectory() as d:
        result = {"fault_suite": faults(Path(d) / "a"), "cost_cap_bytes": cost_cap(Path(d) / "b")}
    out = ROOT / "bench" / "results" / "llm_faults.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
