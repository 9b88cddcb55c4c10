"""Bench: requests/s of the `openai` backend at concurrency 1 vs 16 against a loopback server.

The server (tests/llm_server.py) answers after a fixed latency (default 200 ms), like a remote
API; each run starts from a fresh, empty cache so every request is a real HTTP call. The server
runs in its own process so its threads do not share our GIL.

    .venv/bin/python bench/generate_concurrency.py [--n 64] [--latency 0.2]

Writes bench/results/generate_concurrency.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa_forge.core.io import write_json
from qa_forge.llm import LLM, Request
from tests.params import params

TARGET_SPEEDUP = 12.0


def run_once(url: str, n: int, concurrency: int) -> float:
    """Seconds to complete n distinct requests with a fresh cache."""
    reqs = [Request.chat([{"role": "user", "content": f"bench question {i}"}], 0.0, max_tokens=32) for i in range(n)]
    with tempfile.TemporaryDirectory() as cache:
        llm = LLM(
            params("llm", backend="openai", model="test-model", base_url=url, api_key_env=None, concurrency=concurrency, cache_dir=cache)
        )
        start = time.perf_counter()
        out = llm.complete(reqs, desc=f"concurrency {concurrency}")
        seconds = time.perf_counter() - start
        llm.close()
    assert llm.stats["calls"] == n and len(out) == n, llm.stats
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "generate_concurrency.json")
    a = ap.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.llm_server", "--latency", str(a.latency)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        run_once(url, 4, 4)  # warm up: imports, connection setup
        seconds = {c: run_once(url, a.n, c) for c in (1, 16)}
    finally:
        server.terminate()
        server.wait()

    rps = {c: a.n / s for c, s in seconds.items()}
    result = {
        "n_requests": a.n,
        "latency_s": a.latency,
        "seconds": {f"concurrency_{c}": round(s, 3) for c, s in seconds.items()},
        "requests_per_s": {f"concurrency_{c}": round(r, 2) for c, r in rps.items()},
        "speedup": round(rps[16] / rps[1], 2),
        "target_speedup": TARGET_SPEEDUP,
        "ideal_speedup": 16.0,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()},
    }
    write_json(a.out, result)
    print(
        f"{a.n} requests, {a.latency * 1000:.0f} ms latency: concurrency 1 {rps[1]:.2f} req/s, 16 {rps[16]:.2f} req/s, "
        f"speed-up {result['speedup']:.1f}x (target >= {TARGET_SPEEDUP:.0f}x) -> {a.out.relative_to(ROOT)}"
    )
    if result["speedup"] < TARGET_SPEEDUP:
        sys.exit(f"speed-up {result['speedup']:.1f}x is below the {TARGET_SPEEDUP:.0f}x target")


if __name__ == "__main__":
    main()
