"""The GPU profile's whole DAG, run on CPU with small stand-ins (tests/profiles/gpu-standin.yaml laid
over params/gpu.yaml): the openai generator and judge against the loopback server, LoRA with
gradient checkpointing on flattened two-row micro-batches, pinned hub values replaced only where
there is no internet. Its wiring is proven here; what only a GPU host can run is in the README."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.dag import dvc, make_repo, ran_stages, set_param, stage_names
from tests.llm_server import LLMServer, echo
from tests.test_judge import scripted_judge


def judge_or_echo(messages: list[dict], body: dict) -> str:
    """The judge's prompts get a verdict by containment of the reference; generation gets an echo."""
    return scripted_judge(messages, body) if "Reference answer:" in messages[-1]["content"] else echo(messages, body)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with LLMServer(script=judge_or_echo) as server:
        repo = make_repo(tmp_path_factory.mktemp("gpu") / "repo", profile="gpu-standin", over="gpu")
        for key in ("llm.base_url", "judge.llm.base_url"):
            set_param(repo, key, server.url)
        proc = dvc(repo, "repro")
        yield repo, proc, server


def test_the_gpu_profile_runs_every_stage(run):
    repo, proc, server = run
    assert sorted(ran_stages(proc)) == sorted(stage_names(repo / "dvc.yaml")), proc.stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # what the stand-ins kept from the GPU profile
    assert params["llm"]["backend"] == params["judge"]["llm"]["backend"] == "openai" and params["judge"]["enabled"]
    assert params["train"]["gradient_checkpointing"] and params["train"]["per_device_train_batch_size"] == 2
    assert params["retrieve"]["query_prefix"] == "query: " and params["pack"]["max_seq_length"] == 512
    prompts = [e["body"]["messages"][-1]["content"] for e in server.requests]
    assert any("Reference answer:" in p for p in prompts) and any("Reference answer:" not in p for p in prompts)


def test_the_gpu_profile_outputs(run):
    repo, _, _ = run
    train = json.loads((repo / "metrics/train/metrics.json").read_text())
    assert train["summary"]["global_step"] == 3
    packed_template = (repo / "data/packed/chat_template.jinja").read_text()
    for model in ("models/trained", "models/merged"):
        assert (repo / model / "chat_template.jinja").read_text() == packed_template, model
    compare = json.loads((repo / "metrics/compare.json").read_text())
    assert compare["enabled"] is True, compare
    for name in ("hotpotqa", "squad_v2"):
        assert (repo / f"data/eval/finetuned/{name}.jsonl").is_file()
