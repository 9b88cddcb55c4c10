"""The retrieve loop: control flow against a scripted OpenAI-compatible server, and the batched
KV-reusing engine against one-question-at-a-time re-encoding, in the real loop on the real SmolLM2."""

import json

import pytest

from qa_forge.chat import render
from qa_forge.eval import agent, engines
from tests.llm_server import LLMServer

CALL = '<tool_call>{"name": "retrieve", "arguments": {"query": "%s"}}</tool_call>'


class Model:
    """Scripted replies keyed by the question in the prompt (token ids, read back as text)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, messages, body):
        prompt = self.tok.decode(body["prompt"])
        calls = prompt.count("<|im_start|>tool")
        if "Who wrote Dune" in prompt:  # two hops, then a final answer with a summary
            if calls == 0:
                return CALL % "Who wrote Dune?"
            if calls == 1:
                return (
                    "Thought: The paragraph names him.\nAnswer: Frank Herbert wrote Dune.\nShort answer: Frank Herbert\n"
                    + CALL % "Where was Frank Herbert born?"
                )
            return "Thought: ...\nAnswer: He was born in Tacoma.\nShort answer: Tacoma\n\nSummary: Dune is by Frank Herbert, born in Tacoma.\nThought: So Tacoma.\nAnswer: Tacoma, Washington.\nShort answer: Tacoma"
        if "loop forever" in prompt:
            return CALL % "again"
        if "say nothing useful" in prompt:
            return "I like turtles."
        return "x" * 4000  # runs past max_tokens: finish_reason length


def test_loop_control_through_a_real_server(smollm2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    paragraphs = {
        "Who wrote Dune?": ("Dune", "Dune is a novel by Frank Herbert."),
        "Where was Frank Herbert born?": ("Frank Herbert", "Frank Herbert was born in Tacoma."),
    }
    seen = []

    def search(q):
        seen.append(q)
        return [paragraphs.get(q, ("Other", "Nothing here."))]

    with LLMServer(script=Model(tok), model="m") as srv:
        engine = engines.OpenAIEngine(
            srv.url, "m", tok, max_new_tokens=64, max_length=4096, api_key_env=None, batch_size=4, timeout_s=30.0, max_retries=0
        )
        convs = [
            agent.Conversation(str(i), q, search)
            for i, q in enumerate(["Where was the author of Who wrote Dune born?", "loop forever", "say nothing useful", "ramble"])
        ]
        agent.run(engine, convs, max_calls=3)
        prompts = [tok.decode(r["body"]["prompt"]) for r in srv.requests]
    dune, loop, junk, ramble = convs
    assert dune.status == "answered" and dune.calls == 2 and dune.final.short_answer == "Tacoma"
    assert dune.final.summary.startswith("Dune is by Frank Herbert")
    assert [s.get("query") for s in dune.steps] == ["Who wrote Dune?", "Where was Frank Herbert born?", None]
    assert loop.status == "hop_cap" and loop.calls == 3
    assert junk.status == "unparsable" and junk.final is None
    assert ramble.status == "length"
    # the retrieved paragraph is in the next prompt: the token ids of the one renderer
    sent = [r["body"]["prompt"] for r in srv.requests]
    assert all(render.render_ids(tok, c.messages[:2], add_generation_prompt=True) in sent for c in convs)
    assert any("Frank Herbert was born in Tacoma." in p for p in prompts)
    assert all(p.endswith("<|im_start|>assistant\n") for p in prompts)


@pytest.mark.slow
def test_batched_loop_matches_one_at_a_time(shared, smollm2, one_thread):
    """The real loop (the model decides when to call retrieve; each reply ends at its own end-of-turn or
    length limit) with the real SmolLM2 on 8 HotpotQA dev questions: batched with KV reuse gives the same
    final answers as one question at a time re-encoding the whole conversation, or parts from it only at a
    token where the top-2 logits nearly tie (< 1e-3). `make check-slow` runs it on 32 (bench/eval_parity.py)."""
    from bench.eval_parity import SETTINGS, dev_records, load, parity

    model, tok = load(smollm2)
    # batches of 4 over 8 questions, 24 tokens per step: conversations that end free their slot for the next
    # question while the others go on from their cache (agent.run refills), so parity covers joining a running
    # batch, replies continued across steps, split prefills and compaction too
    r = parity(model, tok, dev_records(8, shared / "hotpotqa/dev_277.json"), **{**SETTINGS, "batch": 4})
    print(json.dumps(r, indent=2))
    assert r["passed"], r["differences"]
    # the check covers what it claims: turns that reuse the cache, and conversations that reach their own
    # length limit (max_length against their own tokens) while the rest of their batch goes on
    assert r["retrieve_calls"] >= 4 and r["replies"] > 8 and r["joined_running_batch"] >= 1
    # and the batched engine's shortcuts: replies decoded over several chunks, a conversation joining between
    # chunks with its prompt encoded for its row alone, and masked cache columns dropped
    assert r["continued_replies"] >= 1 and r["prefilled_apart"] >= 1 and r["compactions"] >= 1
    assert r["length_by_context"] >= 1 and r["statuses"].get("length", 0) < 8
