"""Parity of the evaluate loop: batched with KV reuse vs one question at a time re-encoding the whole
conversation (the seeds' way), in the real loop (the model decides when to call `retrieve`, replies end
at its own end-of-turn or its length limit) with the real SmolLM2-135M-Instruct on HotpotQA dev questions.

SmolLM2 has not been taught the retrieve format, so each conversation opens with two worked examples
(`demo`: a one-hop and a two-hop question answered through retrieve calls); the real question follows
and the model takes it from there. Each retrieve call returns the question's first context paragraph.

Pass: every question has the same final answer in both modes, or each difference starts at a token where
the top-2 logit gap is below 1e-3 (a near tie that float rounding of a different batch shape may flip);
the position (step, token) and gaps of each difference are recorded.

    python bench/eval_parity.py [--n 32] [--batch 8] [--threads 1]   (make check-slow)

tests/test_agent.py runs the same check on 8 questions.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from qa_forge.chat import render
from qa_forge.data.sources import hotpotqa
from qa_forge.eval import agent, engines

DEV = ROOT.parent / "shared/data/hotpotqa/dev_277.json"
MAX_GAP = 1e-3
# the loop's settings: replies of up to 96 tokens, two retrieve calls, and a context limit that the
# longer conversations reach (so per-conversation length limits are part of the check)
SETTINGS = {"batch": 8, "max_new_tokens": 96, "max_length": 1000, "max_calls": 2, "chunk": 24}


def demo() -> list[dict]:
    """System prompt, then two worked examples in the project's own format: one hop, then two hops."""
    msgs = render.start("Who painted the Mona Lisa?")
    msgs.append(render.call_message("Who painted the Mona Lisa?", False))
    msgs.append(render.tool_message([("Mona Lisa", "The Mona Lisa is a portrait painted by the Italian artist Leonardo da Vinci.")], False))
    msgs.append(
        {
            "role": "assistant",
            "content": render.answer_text("The paragraph names the painter.", "It was painted by Leonardo da Vinci.", "Leonardo da Vinci"),
        }
    )
    msgs.append({"role": "user", "content": "Where was the author of Dune born?"})
    msgs.append(render.call_message("Who wrote Dune?", False))
    msgs.append(render.tool_message([("Dune (novel)", "Dune is a 1965 science fiction novel by American author Frank Herbert.")], False))
    hop1 = render.answer_text("The paragraph names the author.", "Dune was written by Frank Herbert.", "Frank Herbert")
    msgs.append(render.call_message("Where was Frank Herbert born?", False, content=hop1))
    msgs.append(render.tool_message([("Frank Herbert", "Frank Herbert was an American author, born in Tacoma, Washington.")], False))
    hop2 = render.answer_text("The paragraph gives his birthplace.", "Frank Herbert was born in Tacoma, Washington.", "Tacoma")
    final = render.answer_text(
        "Dune's author was born in Tacoma.",
        "The author of Dune was born in Tacoma, Washington.",
        "Tacoma",
        summary="Dune is by Frank Herbert.",
    )
    msgs.append({"role": "assistant", "content": hop2 + "\n\n" + final})
    return msgs


def dev_records(n: int, path: Path = DEV):
    return [hotpotqa.to_record(i) for i in json.loads(path.read_text())[:n]]


def conversations(records) -> list[agent.Conversation]:
    def searcher(r):
        ctx = [(c["title"], c["text"]) for c in r.meta["context"]]
        return lambda q: ctx[:1]

    return [agent.Conversation(r.id, r.question, searcher(r), messages=demo() + [{"role": "user", "content": r.question}]) for r in records]


def final_answer(c: agent.Conversation) -> tuple[str, str]:
    """(status, final message): the final answer, or the last reply of a conversation that never gave one."""
    return c.status, c.final.text if c.final else ((c.steps[-1]["reply"] or "") if c.steps else "")


def first_difference(a: list[dict], b: list[dict]) -> dict | None:
    """Where two traces of generated tokens (one entry per reply) first part, with the top-2 gaps there."""
    for step, (x, y) in enumerate(zip(a, b)):
        at = engines.common_prefix(x["tokens"], y["tokens"])
        if at < min(len(x["tokens"]), len(y["tokens"])):
            return {"step": step, "token": at, "gap_single": x["gaps"][at], "gap_batched": y["gaps"][at]}
        if len(x["tokens"]) != len(y["tokens"]):  # one stopped at its limit (the other did not): no token differs
            return {"step": step, "token": at, "gap_single": None, "gap_batched": None}
    if len(a) != len(b):
        return {"step": min(len(a), len(b)), "token": None, "gap_single": None, "gap_batched": None}
    return None


def parity(model, tok, records, batch: int, max_new_tokens: int, max_length: int, max_calls: int, chunk: int | None = None) -> dict:
    """Both loops on the same questions: per question, the same final answer? the same tokens throughout?
    Where the tokens part, the first difference and the top-2 logit gaps there (in each loop)."""
    runs = {}
    for name, kw in {
        "one_at_a_time": {"batch_size": 1, "reuse_cache": False},
        "batched_reuse": {"batch_size": batch, "reuse_cache": True, "chunk_tokens": chunk},
    }.items():
        engine = engines.TransformersEngine(model, tok, max_new_tokens=max_new_tokens, max_length=max_length, trace=True, **kw)
        convs = conversations(records)
        start, cpu = time.perf_counter(), time.process_time()
        agent.run(engine, convs, max_calls=max_calls)
        runs[name] = (
            convs,
            engine.trace,
            {"seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu, 1)},
        )
        counts = {k: getattr(engine, k) for k in ("joined", "continued", "compacted", "prefilled_apart")}
    (single, trace_s, secs_s), (batched, trace_b, secs_b) = runs["one_at_a_time"], runs["batched_reuse"]
    differences, identical, transcripts = [], 0, 0
    for a, b in zip(single, batched):
        same_final = final_answer(a) == final_answer(b)
        where = first_difference(trace_s.get(a.qid, []), trace_b.get(b.qid, []))
        identical += same_final
        transcripts += where is None and a.status == b.status
        if where is not None or not same_final:
            where = where or {"step": None, "token": None, "gap_single": None, "gap_batched": None}
            differences.append({"qid": a.qid, "final_answer_differs": not same_final, "status": [a.status, b.status], **where})
    near_tie = [d["gap_single"] is not None and max(d["gap_single"], d["gap_batched"]) < MAX_GAP for d in differences]
    return {
        "n": len(records),
        "identical": identical,  # same status and final answer (or last reply)
        "identical_transcripts": transcripts,  # same generated tokens in every reply
        "differences": differences,  # gap_*: top-2 logit gap at the first differing token, in each loop
        "passed": all(near_tie),
        "statuses": {s: sum(c.status == s for c in single) for s in sorted({c.status for c in single})},
        # "length" stops at max_length (the conversation's own tokens) rather than at max_new_tokens
        "length_by_context": sum(
            c.status == "length" and len((trace_s.get(c.qid) or [{"tokens": []}])[-1]["tokens"]) < max_new_tokens for c in single
        ),
        "retrieve_calls": sum(c.calls for c in single),
        "replies": sum(len(c.steps) for c in single),
        "joined_running_batch": counts["joined"],  # batched: conversations that took a freed slot beside cached ones
        "continued_replies": counts["continued"],  # batched: replies not ended within a chunk, gone on at the next step
        "compactions": counts["compacted"],  # batched: steps that dropped cache columns no row held
        "prefilled_apart": counts["prefilled_apart"],  # batched: steps whose long suffixes were encoded for their rows only
        # wall clock, and this process's CPU time (steadier on a shared machine)
        "seconds": {"one_at_a_time": secs_s, "batched_reuse": secs_b},
    }


def model_dir() -> Path:
    """The same SmolLM2 as the tests' `smollm2` fixture: models/base when built, else the converted GGUF."""
    if (ROOT / "models/base/model.safetensors").is_file():
        return ROOT / "models/base"
    out = ROOT / ".cache/test-models/smollm2"
    if not (out / "model.safetensors").is_file():
        from qa_forge.models.base import build
        from tests.params import params

        build(params("base_model"), out)
    return out


def load(path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), tok


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch", type=int, default=SETTINGS["batch"])
    ap.add_argument("--chunk", type=int, default=SETTINGS["chunk"], help="chunk_tokens of the batched run (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads: 1 is several times faster than 2 on a busy 2-core machine")
    ap.add_argument("--out", default=str(ROOT / "bench/results/eval_parity.json"))
    a = ap.parse_args()
    if not DEV.is_file():
        sys.exit(f"HotpotQA dev questions not found at {DEV} (../shared/data beside the repo)")
    torch.set_num_threads(a.threads)
    path = Path(a.model) if a.model else model_dir()
    model, tok = load(path)
    start = time.perf_counter()
    settings = {**SETTINGS, "batch": a.batch, "chunk": a.chunk or None}
    result = parity(model, tok, dev_records(a.n), **settings)
    result["seconds"]["total"] = round(time.perf_counter() - start, 1)  # both loops, model loading excluded
    result.update(
        source=str(DEV.relative_to(ROOT.parent)),
        model=path.name if path.name != "base" else "models/base",
        settings=settings,
        max_gap=MAX_GAP,
        machine={"platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": a.threads, "torch": torch.__version__},
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
