"""train: LoRA learns from packed rows (masked labels ignored), dvclive files, the token budget,
resume after a kill from the same run's checkpoint only, param checks, the multi-GPU command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qa_forge.core.io import UserError, load_yaml, validate
from qa_forge.training.checkpoints import complete_checkpoints, run_key
from qa_forge.training.data import CountingCollator, PackedDataset
from qa_forge.training.launch import in_distributed_launch, launch_command
from qa_forge.training.params import TrainParams
from qa_forge.training.recipe import finetune as train
from tests.conftest import ROOT
from tests.params import params as section
from tests.tiny_lm import END, MARK, VOCAB, make_base, write_packed

FAST = {
    "mode": "lora",
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "per_device_train_batch_size": 4,
    "logging_steps": 1,
    "save_steps": 5,
    "num_train_epochs": 1,
    "eval_steps": None,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    return {"dir": d, "base": make_base(d / "base"), "packed": write_packed(d / "packed")}


def params(world, **over) -> TrainParams:
    return section("train", **{**FAST, "checkpoint_dir": str(world["dir"] / "ckpt"), **over})


class Steps:
    """Records the global step at each optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Steps(TrainerCallback):
            def __init__(self):
                self.seen = []

            def on_step_end(self, args, state, control, **kwargs):
                self.seen.append(state.global_step)

        return _Steps()


def noise_floor(packed: Path) -> float:
    """The loss a model would at least keep if the -100 (random prompt) positions counted:
    share of unpredictable targets x ln(number of noise tokens)."""
    ds = PackedDataset(packed / "train.jsonl")
    noise = labelled = 0
    for i in range(len(ds)):
        r = ds[i]
        for t in range(1, len(r["input_ids"])):
            if r["position_ids"][t] == 0:
                continue
            if r["labels"][t] == -100 and r["input_ids"][t] != MARK:
                noise += 1
            else:
                labelled += 1
    return noise / (noise + labelled) * math.log(len(VOCAB) - 20)


def test_lora_learns_and_ignores_masked_labels(world):
    d = world["dir"] / "run_lora"
    info = train(params(world, max_steps=30), world["packed"], world["base"], d / "trained", d / "metrics")
    print(
        "loss",
        info["first_loss"],
        "->",
        info["final_loss"],
        "eval",
        info["eval_loss"],
        "floor if -100 counted",
        noise_floor(world["packed"]),
    )
    assert info["global_step"] == 30
    assert info["final_loss"] < 0.5 * info["first_loss"]
    # random prompt tokens are unlearnable: had they counted, the loss could not drop below this
    assert info["final_loss"] < noise_floor(world["packed"]) and info["eval_loss"] < noise_floor(world["packed"])
    out = d / "trained"
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer_config.json").is_file() and not (out / "config.json").exists()
    assert json.loads((out / "train_info.json").read_text())["mode"] == "lora"
    assert not out.with_name("trained.tmp").exists()

    # dvclive: summary with the losses, one tsv row per logged step
    m = json.loads((d / "metrics" / "metrics.json").read_text())
    assert m["train"]["loss"] == pytest.approx(info["final_loss"]) and m["eval"]["loss"] == pytest.approx(info["eval_loss"])
    assert m["step"] == 30 and m["summary"]["first_loss"] == pytest.approx(info["first_loss"])
    plots = d / "metrics" / "plots" / "metrics"
    loss = (plots / "train" / "loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss"] and [int(r.split("\t")[0]) for r in loss[1:]] == list(range(1, 31))
    assert (plots / "train" / "learning_rate.tsv").is_file() and (plots / "eval" / "loss.tsv").is_file()


def test_token_budget_stops_training(world):
    d = world["dir"] / "run_budget"
    # rows average 48 real tokens: 4 rows a step ~ 192 tokens, so 500 tokens take 3 steps (of 24 in 3 epochs)
    info = train(params(world, max_tokens=500, num_train_epochs=3), world["packed"], world["base"], d / "trained", d / "metrics")
    assert info["budget_steps"] == 3 and info["global_step"] == 3
    assert 500 <= info["tokens_seen"] < 500 + 4 * 60


DRIVER = """
import sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from transformers import TrainerCallback
from qa_forge.core.io import load_yaml, validate
from qa_forge.training.params import TrainParams
from qa_forge.training.recipe import finetune as train

class Slow(TrainerCallback):  # a long run, so the test can kill it midway
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.25)

p = validate(TrainParams, load_yaml(sys.argv[1])["train"], "train")
train(p, *map(Path, sys.argv[2:6]), callbacks=[Slow()])
"""


def test_resume_after_kill_continues_the_same_run(world):
    import yaml

    d = world["dir"] / "run_resume"
    d.mkdir()
    p = params(world, max_steps=40, checkpoint_dir=str(d / "ckpt"))
    (d / "params.yaml").write_text(yaml.safe_dump({"train": p.model_dump()}))
    (d / "driver.py").write_text(DRIVER)
    paths = [str(world["packed"]), str(world["base"]), str(d / "trained"), str(d / "metrics")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    run_dir = d / "ckpt" / run_key(p, world["packed"], world["base"])
    proc = subprocess.Popen(
        [sys.executable, str(d / "driver.py"), str(d / "params.yaml"), *paths],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not complete_checkpoints(run_dir):
            assert proc.poll() is None, "the training subprocess ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    assert not (d / "trained").exists()  # killed before its output
    killed_at = int(complete_checkpoints(run_dir)[-1].name.split("-")[1])
    assert 5 <= killed_at < 40

    steps = Steps()
    info = train(p, world["packed"], world["base"], d / "trained", d / "metrics", callbacks=[steps])
    last = int(complete_checkpoints(run_dir)[-1].name.split("-")[1])
    assert info["resumed_from_step"] >= killed_at and steps.seen[0] == info["resumed_from_step"] + 1
    assert info["global_step"] == 40 and last == 40
    assert (
        info["tokens_seen"] == PackedDataset(world["packed"] / "train.jsonl").tokens() * 5
    )  # 40 steps = 5 epochs: the count came back with the checkpoint
    assert len(complete_checkpoints(run_dir)) <= p.save_total_limit
    # the dvclive curve is whole: the killed part is replayed from the checkpoint's log history
    loss = (d / "metrics" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in loss] == list(range(1, 41))

    # a finished run re-run: resumes at its end, trains nothing
    steps = Steps()
    info = train(p, world["packed"], world["base"], d / "trained", d / "metrics", callbacks=[steps])
    assert info["resumed_from_step"] == 40 and steps.seen == [] and info["global_step"] == 40

    # another learning rate is another run: fresh from step 0
    p2 = p.model_copy(update={"learning_rate": 5e-3, "max_steps": 6})
    assert run_key(p2, world["packed"], world["base"]) != run_dir.name
    steps = Steps()
    info = train(p2, world["packed"], world["base"], d / "trained2", d / "metrics2", callbacks=[steps])
    assert info["resumed_from_step"] == 0 and steps.seen[0] == 1 and info["global_step"] == 6

    # resume: never starts over even with a checkpoint of the same run
    steps = Steps()
    info = train(
        p2.model_copy(update={"resume": "never"}), world["packed"], world["base"], d / "trained2", d / "metrics2", callbacks=[steps]
    )
    assert info["resumed_from_step"] == 0 and steps.seen[0] == 1


def test_run_key_follows_data_and_base_but_not_resume_settings(world, tmp_path):
    p = params(world)
    key = run_key(p, world["packed"], world["base"])
    assert (
        run_key(p.model_copy(update={"resume": "never", "checkpoint_dir": "elsewhere", "num_threads": 1}), world["packed"], world["base"])
        == key
    )
    other = write_packed(tmp_path / "packed", seed=5)
    assert run_key(p, other, world["base"]) != key
    assert run_key(p.model_copy(update={"lora": p.lora.model_copy(update={"r": 4})}), world["packed"], world["base"]) != key


def test_collator_counts_real_tokens_and_keeps_the_contract():
    rows = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 2]},
        {"input_ids": [8], "labels": [-100], "position_ids": [0]},
    ]
    b = CountingCollator(END)(rows)
    assert int(b["num_real_tokens"]) == 4 and "attention_mask" not in b
    assert b["input_ids"][1].tolist() == [8, END, END] and b["labels"][1].tolist() == [-100] * 3
    assert b["position_ids"][1].tolist() == [0, 0, 0]


def test_bad_rows_and_params_fail_clearly(world, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"input_ids": [1, 2], "labels": [-100], "position_ids": [0, 1]}) + "\n")
    with pytest.raises(UserError, match=r"train.jsonl:1: .*equal length"):
        train(params(world), bad, world["base"], tmp_path / "o", tmp_path / "m")
    with pytest.raises(UserError, match="file not found"):
        train(params(world), tmp_path / "none", world["base"], tmp_path / "o", tmp_path / "m")
    with pytest.raises(UserError, match="param 'train.optimizer'"):
        validate(TrainParams, {"optimizer": "sgd"}, "train")
    with pytest.raises(UserError, match="param 'train.mode'"):
        validate(TrainParams, {"mode": "prefix"}, "train")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="qlora needs a CUDA GPU"):
            train(params(world, mode="qlora"), world["packed"], world["base"], tmp_path / "o", tmp_path / "m")
        with pytest.raises(UserError, match="train.bf16"):
            train(params(world, bf16=True), world["packed"], world["base"], tmp_path / "o", tmp_path / "m")


def test_repo_params_validate():
    p = validate(TrainParams, load_yaml(ROOT / "params.yaml").get("train", {}), "train")
    assert p.mode == "lora" and p.num_train_epochs == 3 and p.max_tokens is None
    gpu = section("train", **load_yaml(ROOT / "params" / "gpu.yaml")["train"])
    assert gpu.bf16 and gpu.lora.r == 16


def test_multi_gpu_launch_command(monkeypatch):
    p = section("train", deepspeed="configs/deepspeed/zero2.json", bf16=True).model_copy(update={"num_processes": 2})
    cmd = launch_command(p, ["--params", "params.yaml", "--out", "models/trained"])
    assert cmd == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        "0",
        "--use_deepspeed",
        "--deepspeed_config_file",
        "configs/deepspeed/zero2.json",
        "-m",
        "qa_forge",
        "train",
        "--params",
        "params.yaml",
        "--out",
        "models/trained",
    ]
    assert "--multi_gpu" in launch_command(section("train").model_copy(update={"num_processes": 4}), [])
    for name in ("zero2", "zero3"):
        cfg = json.loads((ROOT / "configs" / "deepspeed" / f"{name}.json").read_text())
        assert cfg["zero_optimization"]["stage"] == int(name[-1]) and cfg["train_micro_batch_size_per_gpu"] == "auto"
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not in_distributed_launch()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert in_distributed_launch()
