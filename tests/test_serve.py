"""Serving the trained model: evaluate through the `openai` backend against a real OpenAI-compatible
server on loopback (tests/llm_server.py) that stands in for `vllm serve FOLDER`: it decodes the token
ids it is sent with the same model. The served name is the folder's content hash; a server running
another build fails evaluate before any question, and the served path answers exactly as the local
transformers path does."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qa_forge.core.io import UserError
from qa_forge.eval import agent, engines
from qa_forge.eval.evaluate import evaluate
from qa_forge.llm.identity import served_name
from tests.conftest import ROOT
from tests.llm_server import LLMServer, ServedModel
from tests.params import merge, params, raw, retriever

EOT_BOOST = 2.0  # the end-of-turn row of the random head, scaled: some replies end, others run out


def make_model(folder: Path, tok, seed: int) -> Path:
    """A random 2-layer Llama over `tok` (the ChatML tiny tokenizer), saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    eot = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=eot,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.lm_head.weight.data[eot] *= EOT_BOOST
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def merged(tmp_path_factory, tiny_tok) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "merged", tiny_tok, seed=3)


@pytest.fixture(scope="module")
def other(tmp_path_factory, tiny_tok) -> Path:
    """Another build: same shapes, other weights (an older merge, or the base)."""
    return make_model(tmp_path_factory.mktemp("models") / "other", tiny_tok, seed=4)


def server_for(folder: Path) -> LLMServer:
    """A server running `folder`'s model under `folder`'s served name."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return LLMServer(script=ServedModel(model, AutoTokenizer.from_pretrained(folder)), model=served_name(folder))


QUESTIONS = [
    ("Who wrote Hamlet?", "Hamlet", "Hamlet is a play by William Shakespeare.", "William Shakespeare"),
    ("Where was the author of Dune born?", "Frank Herbert", "Frank Herbert was born in Tacoma.", "Tacoma"),
    ("What is the capital of France?", "France", "Paris is the capital of France.", "Paris"),
    ("Which river flows through Cairo?", "Cairo", "Cairo lies on the Nile.", "Nile"),
]


def eval_sets(folder: Path) -> dict:
    """Both eval sets as record files: the same four questions, each with its own paragraph."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "id": f"q{i}",
                "src": "test",
                "question": q,
                "sub_questions": [{"question": q, "title": title, "paragraph": paragraph, "answer": gold}],
                "final_answer": gold,
                "meta": {"answers": [gold], "type": "bridge"},
            }
        )
        for i, (q, title, paragraph, gold) in enumerate(QUESTIONS)
    ]
    sets = {}
    for name in ("hotpotqa", "squad_v2"):
        path = folder / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        sets[name] = {"path": str(path), "n": None, "scope": "question", "top_k": 1}
    return sets


MAX_NEW_TOKENS = 24


def settings(tmp_path: Path, **over) -> dict:
    return {"sets": eval_sets(tmp_path / "sets"), "max_new_tokens": MAX_NEW_TOKENS, "max_calls": 2, "bootstrap": 50, **over}


def tight_max_length(folder: Path) -> int:
    """A max_length that leaves the longest question 10 new tokens: its reply is cut by its own
    context limit, not by max_new_tokens, and the shorter ones get more."""
    from transformers import AutoTokenizer

    from qa_forge.chat import render

    tok = AutoTokenizer.from_pretrained(folder)
    return max(len(render.render_ids(tok, render.start(q), add_generation_prompt=True)) for q, *_ in QUESTIONS) + 10


def served(url: str, **over) -> dict:
    return {"backend": "openai", "base_url": url, "api_key_env": None, "max_retries": 0, "timeout_s": 30.0, **over}


def test_served_name_is_the_content_hash(merged, tmp_path):
    """Another copy of the folder has the same name; each file that changes an answer changes it."""
    name = served_name(merged)
    assert name.startswith("qa-forge-") and len(name) == len("qa-forge-") + 16
    copy = shutil.copytree(merged, tmp_path / "copy")
    (copy / "README.md").write_text("notes")  # not a file that changes an answer
    assert served_name(copy) == name
    changes = {
        "model.safetensors": lambda b: b[:-1] + bytes([b[-1] ^ 1]),
        "tokenizer.json": lambda b: b.replace(b'"<|pad|>"', b'"<|PAD|>"'),
        "tokenizer_config.json": lambda b: b.replace(b'"pad_token": "<|pad|>"', b'"pad_token": "<|im_end|>"'),
        "chat_template.jinja": lambda b: b.replace(b"<|im_start|>assistant", b"<|im_start|>model"),
        "config.json": lambda b: b.replace(b'"rms_norm_eps": 1e-06', b'"rms_norm_eps": 1e-05'),
        "generation_config.json": lambda b: b.replace(b'"use_cache": true', b'"use_cache": true, "repetition_penalty": 1.1'),
    }
    for file, change in changes.items():
        changed = shutil.copytree(merged, tmp_path / file)
        before = (changed / file).read_bytes()
        (changed / file).write_bytes(change(before))
        assert (changed / file).read_bytes() != before, file
        assert served_name(changed) != name, file


def test_served_name_command_prints_it(merged):
    out = subprocess.run(
        [sys.executable, "-m", "qa_forge", "served-name", str(merged)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == served_name(merged) + "\n"


def test_evaluate_through_the_server_equals_transformers(merged, tmp_path):
    """evaluate with `backend: openai` against the server running the same model: the same replies,
    statuses and scores as the local transformers engine, asked for by the folder's content hash."""
    s = settings(tmp_path, max_length=tight_max_length(merged))
    rp = retriever(cache_dir=str(tmp_path / "embeddings"))
    local_report, local_rows, _ = evaluate(params("evaluate", **s), rp, str(merged), "finetuned")
    with server_for(merged) as srv:
        report, rows, _ = evaluate(params("evaluate", **s, **served(srv.url)), rp, str(merged), "finetuned")
        asked = {r["body"]["model"] for r in srv.requests}
        budgets = [r["body"]["max_tokens"] for r in srv.requests]
    assert asked == {served_name(merged)}
    assert rows == local_rows
    assert report == local_report
    # the check covers what it claims: replies that ended at their end-of-turn token, replies that ran
    # out, and conversations whose own context limit cut their budget below max_new_tokens
    replies = [step["reply"] for set_rows in rows.values() for r in set_rows for step in r["steps"]]
    assert None in replies and any(replies), replies
    assert min(budgets) < MAX_NEW_TOKENS, budgets


def run_stage(tmp_path: Path, folder: Path, evaluate_params: dict) -> dict[str, Path]:
    """stages/evaluate.py as `dvc repro` runs it, outputs under tmp_path; its outputs (none may be written)."""
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"evaluate": merge(raw("evaluate"), evaluate_params), "retrieve": raw("retrieve")}))
    outputs = {
        "out": tmp_path / "data/eval/finetuned",
        "metrics_path": tmp_path / "metrics/eval.json",
        "plots": tmp_path / "metrics/eval",
        "timings": tmp_path / "metrics/timings/eval.json",
    }
    main = runpy.run_path(str(ROOT / "stages/evaluate.py"), run_name="stage")["main"]
    main(model=folder, name="finetuned", params=p, **outputs)
    return outputs


@pytest.mark.parametrize("case", ["server runs another build", "served_model names another build", "no server"])
def test_another_served_model_fails_before_any_metrics(case, merged, other, tmp_path):
    """A server that does not serve this folder's build fails the stage naming both models; no question
    is asked and no metrics or predictions are written."""
    with server_for(other) as srv:
        url = srv.url
        over = {"served_model": served_name(other)} if case == "served_model names another build" else {}
        if case == "no server":
            srv.stop()
        with pytest.raises(UserError) as e:
            run_stage(tmp_path, merged, settings(tmp_path, **served(url, **over)))
        assert srv.n_requests == 0  # not one completion asked for
    message = str(e.value)
    if case == "no server":
        assert "evaluate.base_url" in message and url in message
    else:
        assert served_name(merged) in message and served_name(other) in message
        assert str(merged) in message
    if case == "server runs another build":
        assert f"vllm serve {merged} --served-model-name {served_name(merged)}" in message
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_tensor_parallel_size_reaches_vllm(monkeypatch, tiny_tok):
    """Both offline vLLM paths (evaluate's engine, the LLM layer's backend) split the model over
    `tensor_parallel_size` GPUs: vLLM itself is not installed here, a stand-in records its arguments."""
    import types

    from qa_forge.llm import backends

    made = []
    vllm = types.ModuleType("vllm")
    vllm.LLM = lambda **kw: made.append(kw)
    vllm.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    engines.VLLMEngine("models/merged", tiny_tok, 8, tensor_parallel_size=4)
    backends._VLLMBackend(params("llm", backend="vllm", tensor_parallel_size=2)).load()
    assert [kw["tensor_parallel_size"] for kw in made] == [4, 2]


@pytest.mark.slow
def test_served_loop_matches_transformers_on_smollm2(shared, smollm2, one_thread):
    """The real SmolLM2 in the real loop (two worked examples first, so it calls retrieve) on 2 HotpotQA
    dev questions: through the server, every reply and status equals the local engine's."""
    from bench.eval_parity import SETTINGS, conversations, dev_records, load

    model, tok = load(smollm2)
    records = dev_records(2, shared / "hotpotqa/dev_277.json")
    size = {"max_new_tokens": SETTINGS["max_new_tokens"], "max_length": SETTINGS["max_length"]}
    local = engines.TransformersEngine(model, tok, batch_size=1, reuse_cache=False, **size)
    local_convs = conversations(records)
    agent.run(local, local_convs, SETTINGS["max_calls"])
    name = served_name(smollm2)
    with LLMServer(script=ServedModel(model, tok), model=name) as srv:
        engine = engines.OpenAIEngine(srv.url, name, tok, api_key_env=None, batch_size=2, timeout_s=120.0, max_retries=0, **size)
        convs = conversations(records)
        agent.run(engine, convs, SETTINGS["max_calls"])
    assert [(c.status, c.steps) for c in convs] == [(c.status, c.steps) for c in local_convs]
    assert sum(c.calls for c in local_convs) >= 2  # replies that called retrieve went through the server
