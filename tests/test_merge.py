"""merge: the merged model computes what base + adapter computed; full fine-tuning passes through."""

from __future__ import annotations

import json
import shutil

import pytest

from qa_forge.core.io import UserError, load_yaml, validate
from qa_forge.models.merge import MergeParams, merge
from qa_forge.training.recipe import finetune as train
from tests.conftest import ROOT
from tests.params import params as section
from tests.tiny_lm import MARK, make_base, packed_rows, write_packed

FAST = {
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "per_device_train_batch_size": 4,
    "logging_steps": 5,
    "save_steps": 50,
    "num_train_epochs": 1,
    "eval_steps": None,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge")
    return {"dir": d, "base": make_base(d / "base"), "packed": write_packed(d / "packed", n_train=16)}


def trained(world, mode: str, steps: int):
    d = world["dir"] / mode
    p = section("train", **FAST, mode=mode, max_steps=steps, checkpoint_dir=str(world["dir"] / "ckpt"))
    train(p, world["packed"], world["base"], d / "trained", d / "metrics")
    return d / "trained"


def batch():
    from qa_forge.training.collate import collate

    return collate(packed_rows(2, seed=99), pad_id=2)


def logits(model, b):
    import torch

    with torch.no_grad():
        return model(**b, use_cache=False).logits


def greedy(model):
    import torch

    prompt = torch.tensor([[30, 41, 25, MARK]])
    with torch.no_grad():
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)[0].tolist()


def test_lora_merge_matches_the_adapter(world):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = trained(world, "lora", 40)
    modules = json.loads((adapter / "adapter_config.json").read_text())["target_modules"]
    assert modules == sorted(modules) and len(modules) > 1  # peft's set order would change the output hash run to run
    out = world["dir"] / "merged"
    info = merge(section("merge", dtype="float32"), world["base"], adapter, out)
    assert info["mode"] == "lora" and not out.with_name("merged.tmp").exists()
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file() and not (out / "adapter_config.json").exists()

    b = batch()
    base = AutoModelForCausalLM.from_pretrained(world["base"]).eval()
    base_logits = logits(base, b)
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    a, m = logits(with_adapter, b), logits(merged, b)
    diff = (a - m).abs().max().item()
    print(f"merged vs adapter: max |logit diff| {diff:.2e}; adapter vs base {(a - base_logits).abs().max().item():.2f}")
    assert diff < 1e-3
    assert (a - base_logits).abs().max().item() > 0.5  # the adapter changed the model: the comparison means something
    g = greedy(merged)
    assert g == greedy(with_adapter)
    assert g[4:12] == list(range(10, 18))  # and it learnt the answer
    assert merged.config.use_cache


def test_merge_in_bfloat16(world):
    import torch
    from transformers import AutoModelForCausalLM

    adapter = trained(world, "lora", 40)  # same run: resumes at its end, trains nothing
    out = world["dir"] / "merged_bf16"
    merge(section("merge", dtype="bfloat16"), world["base"], adapter, out)
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_qlora_adapter_merges_onto_the_unquantised_base(world):
    from transformers import AutoModelForCausalLM

    adapter = trained(world, "lora", 40)
    q = world["dir"] / "qlora_trained"
    shutil.copytree(adapter, q, dirs_exist_ok=True)
    (q / "train_info.json").write_text(json.dumps({"mode": "qlora"}))
    out = world["dir"] / "merged_q"
    assert merge(section("merge"), world["base"], q, out)["mode"] == "qlora"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(model.config, "quantization_config", None) is None


def test_full_fine_tuning_passes_through(world):
    from transformers import AutoModelForCausalLM

    full = trained(world, "full", 3)
    assert (full / "config.json").is_file() and not (full / "adapter_config.json").exists()
    out = world["dir"] / "merged_full"
    assert merge(section("merge"), world["base"], full, out)["mode"] == "full"
    b = batch()
    t, m = AutoModelForCausalLM.from_pretrained(full).eval(), AutoModelForCausalLM.from_pretrained(out).eval()
    assert (logits(t, b) - logits(m, b)).abs().max().item() == 0.0


def test_bad_inputs_fail_clearly(world, tmp_path):
    with pytest.raises(UserError, match="run the train stage first"):
        merge(section("merge"), world["base"], tmp_path, tmp_path / "out")
    with pytest.raises(UserError, match="param 'merge.dtype'"):
        validate(MergeParams, {"dtype": "int8"}, "merge")
    assert validate(MergeParams, load_yaml(ROOT / "params.yaml")["merge"], "merge").dtype == "float32"
    assert section("merge", **load_yaml(ROOT / "params" / "gpu.yaml")["merge"]).dtype == "bfloat16"
