"""Questions/s of the evaluate loop: batched with KV reuse vs the seeds' way (one question at a
time, re-encoding the whole conversation at every step), same engine and model.

Scripted mode keeps the work identical in both: every question makes `--forced` retrieve calls,
then one more reply, each reply exactly `--tokens` long. Questions: HotpotQA dev from
../shared/data (else the repo's samples), top-1 paragraph per call.

    python bench/eval_throughput.py [--n 32] [--batch 8] [--tokens 32] [--forced 2] [--random]
--random: a randomly initialised SmolLM2-shaped model (GPU benches: no weights travel).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from qa_forge.core.io import read_records
from qa_forge.data.sources import hotpotqa
from qa_forge.eval import agent, engines


def questions(n: int):
    shared = ROOT.parent / "shared/data/hotpotqa/dev_277.json"
    if shared.is_file():
        return [hotpotqa.to_record(i) for i in json.loads(shared.read_text())[:n]], str(shared.relative_to(ROOT.parent))
    return read_records(ROOT / "data/fetched/eval_hotpotqa.jsonl")[:n], "data/fetched/eval_hotpotqa.jsonl"


def conversations(records):
    def searcher(r):
        ctx = [(c["title"], c["text"]) for c in r.meta["context"]]
        return lambda q: ctx[:1]

    return [agent.Conversation(r.id, r.question, searcher(r)) for r in records]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/base"))
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--forced", type=int, default=2)
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench/results/eval_throughput.json"))
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(a.model)
    tok.padding_side = "left"
    if a.random:
        from transformers import AutoConfig

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(a.model), dtype=torch.bfloat16 if device == "cuda" else torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model = model.to(device).eval()
    records, source = questions(a.n)
    modes = {
        "batched_reuse": {"batch_size": a.batch, "reuse_cache": True},
        "one_at_a_time_reencode": {"batch_size": 1, "reuse_cache": False},
    }
    result = {
        "questions": len(records),
        "source": source,
        "reply_tokens": a.tokens,
        "forced_retrieve_calls": a.forced,
        "batch": a.batch,
        "model": "random SmolLM2-shaped" if a.random else os.path.relpath(a.model, ROOT),  # no local absolute path in results
        "device": device,
        "modes": {},
    }
    replies = {}
    for name, kw in modes.items():
        convs = conversations(records)
        engine = engines.TransformersEngine(model, tok, max_new_tokens=a.tokens, fixed_length=True, **kw)
        start = time.perf_counter()
        agent.run(engine, convs, max_calls=a.forced + 1, forced_calls=a.forced)
        seconds = time.perf_counter() - start
        replies[name] = [c.steps[a.forced]["reply"] if len(c.steps) > a.forced else None for c in convs]
        result["modes"][name] = {"seconds": round(seconds, 2), "questions_per_s": round(len(convs) / seconds, 4)}
        print(name, result["modes"][name], flush=True)
    m = result["modes"]
    result["speedup"] = round(m["batched_reuse"]["questions_per_s"] / m["one_at_a_time_reencode"]["questions_per_s"], 3)
    result["same_final_reply"] = sum(x == y for x, y in zip(*replies.values()))
    result["target_speedup_cpu"] = 1.5
    result["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
