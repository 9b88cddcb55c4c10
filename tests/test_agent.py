"""The retrieve loop: control flow against a scripted OpenAI-compatible server, and the batched
KV-reusing engine against one-question-at-a-time re-encoding on the real SmolLM2."""

import json

import pytest

from qa_forge.data.sources import hotpotqa
from qa_forge.eval import agent, engines
from tests.llm_server import LLMServer

CALL = '<tool_call>{"name": "retrieve", "arguments": {"query": "%s"}}</tool_call>'


class Model:
    """Scripted replies keyed by the question in the prompt."""

    def __call__(self, messages, body):
        prompt = messages[-1]["content"]
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

    with LLMServer(script=Model()) as srv:
        engine = engines.OpenAIEngine(srv.url, "m", tok, max_new_tokens=64, api_key_env=None, batch_size=4, timeout_s=30.0, max_retries=0)
        convs = [
            agent.Conversation(str(i), q, search)
            for i, q in enumerate(["Where was the author of Who wrote Dune born?", "loop forever", "say nothing useful", "ramble"])
        ]
        agent.run(engine, convs, max_calls=3)
        prompts = [r["body"]["prompt"] for r in srv.requests]
    dune, loop, junk, ramble = convs
    assert dune.status == "answered" and dune.calls == 2 and dune.final.short_answer == "Tacoma"
    assert dune.final.summary.startswith("Dune is by Frank Herbert")
    assert [s.get("query") for s in dune.steps] == ["Who wrote Dune?", "Where was Frank Herbert born?", None]
    assert loop.status == "hop_cap" and loop.calls == 3
    assert junk.status == "unparsable" and junk.final is None
    assert ramble.status == "length"
    # the retrieved paragraph is in the next prompt, rendered by the one renderer
    assert any("Frank Herbert was born in Tacoma." in p for p in prompts)
    assert all(p.endswith("<|im_start|>assistant\n") for p in prompts)


def dev_questions(shared, n):
    items = json.loads((shared / "hotpotqa/dev_277.json").read_text())[:n]
    return [hotpotqa.to_record(i) for i in items]


def conversations(records):
    def searcher(r):
        ctx = [(c["title"], c["text"]) for c in r.meta["context"]]
        return lambda q: ctx[:1]

    return [agent.Conversation(r.id, r.question, searcher(r)) for r in records]


@pytest.mark.slow
def test_batched_reuse_matches_one_at_a_time(shared, smollm2):
    """16 dev questions in the scripted mode (two forced retrieve steps, replies of fixed length):
    the batched loop that reuses each conversation's KV cache gives the same replies as
    re-encoding the whole conversation one question at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm2)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    records = dev_questions(shared, 16)
    results = {}
    for name, kw in {"batched": {"batch_size": 8, "reuse_cache": True}, "single": {"batch_size": 1, "reuse_cache": False}}.items():
        convs = conversations(records)
        agent.run(engines.TransformersEngine(model, tok, max_new_tokens=16, fixed_length=True, **kw), convs, max_calls=4, forced_calls=2)
        results[name] = convs
    assert all(len(c.steps) >= 3 for c in results["batched"])  # two forced calls, then the model's reply
    finals = [(a.steps[2]["reply"], b.steps[2]["reply"]) for a, b in zip(results["batched"], results["single"])]
    same = sum(x == y for x, y in finals)
    steps_same = sum(sa["reply"] == sb["reply"] for a, b in zip(results["batched"], results["single"]) for sa, sb in zip(a.steps, b.steps))
    print(f"final replies equal: {same}/16; all steps equal: {steps_same}/{sum(len(c.steps) for c in results['single'])}")
    assert same >= 15
