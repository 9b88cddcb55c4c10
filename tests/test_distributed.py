"""Several processes for real: the train stage on two CPU processes joined over gloo (the launcher
`train.num_processes: 2` builds) against one process with doubled gradient accumulation, the same
global batch. Every packed row is trained on once per epoch across the ranks, one checkpoint
series and one dvclive log are written, the per-step loss agrees, and after one rank is killed -9
the rerun resumes from the last complete checkpoint and ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from qa_forge.core.io import UserError
from qa_forge.training.checkpoints import MARKER, complete_checkpoints, run_key
from qa_forge.training.data import PackedDataset
from qa_forge.training.environment import check_environment
from qa_forge.training.launch import accelerate_launch
from qa_forge.training.params import TrainParams
from qa_forge.training.recipe import finetune
from tests.conftest import ROOT
from tests.params import params as section
from tests.tiny_lm import make_base, write_packed

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS, BATCH, EPOCHS = 32, 4, 2
STEPS = EPOCHS * ROWS // (2 * BATCH)  # 2 processes x 4 rows a step: 4 steps an epoch

# Each process of the launch runs the real stage script; this records, per rank, the rows of every
# batch it collates (train and the final eval) and its process group, and slows each batch down
# when asked, so that the test can kill a rank mid-run.
DRIVER = """
import json, os, runpy, sys, time
import torch
torch.set_num_threads(1)
from qa_forge.training import data

rank, out, slow = os.environ["RANK"], os.environ["ROWS_DIR"], float(os.environ["SLOW_BATCH_S"])
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, f"pid.{rank}"), "w") as f:
    f.write(str(os.getpid()))
collate = data.CountingCollator.__call__

def recording(self, rows):
    group = [torch.distributed.get_backend(), torch.distributed.get_world_size()]
    with open(os.path.join(out, f"rows.{rank}.jsonl"), "a") as f:
        f.write(json.dumps({"group": group, "rows": [r["input_ids"] for r in rows]}) + "\\n")
    time.sleep(slow)
    return collate(self, rows)

data.CountingCollator.__call__ = recording
sys.argv = ["qa-forge train", *sys.argv[1:]]
runpy.run_path(os.environ["STAGE"], run_name="__main__")
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("distributed")
    (d / "driver.py").write_text(DRIVER)
    packed = write_packed(d / "packed", n_train=ROWS)
    ids = {tuple(PackedDataset(packed / "train.jsonl")[i]["input_ids"]): i for i in range(ROWS)}
    assert len(ids) == ROWS, "the test tells rows apart by their tokens"
    return {"dir": d, "base": make_base(d / "base"), "packed": packed, "ids": ids}


def two_processes(world) -> TrainParams:
    p = section(
        "train",
        mode="lora",
        lora={"r": 8, "alpha": 16, "dropout": 0.0},  # no dropout: the ranks' RNG streams differ from one process's
        learning_rate=1e-2,
        warmup_ratio=0.0,
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        num_train_epochs=EPOCHS,
        max_steps=-1,
        logging_steps=1,
        eval_steps=None,
        save_steps=2,
        save_total_limit=2,
        max_tokens=None,
        resume="auto",
    )
    return p.model_copy(update={"num_processes": 2, "shuffle": False})


def launch(world, p: TrainParams, run: Path, slow_batch_s: float = 0.0) -> subprocess.Popen:
    """The stage under `accelerate launch` as `train.num_processes` launches it, in `run`."""
    import yaml

    run.mkdir(exist_ok=True)
    p = p.model_copy(update={"checkpoint_dir": str(run / "ckpt")})
    (run / "params.yaml").write_text(yaml.safe_dump({"train": p.model_dump()}))
    args = ["--params", "params.yaml", "--packed", str(world["packed"]), "--base", str(world["base"])]
    args += ["--out", "trained", "--metrics-dir", "metrics"]
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        STAGE=str(ROOT / "stages" / "train.py"),
        ROWS_DIR=str(run / "rows"),
        SLOW_BATCH_S=str(slow_batch_s),
    )
    cmd = accelerate_launch(p) + [str(world["dir"] / "driver.py"), *args]
    with open(run / "log.txt", "a") as log:  # the launch writes to its own copy of the file handle
        return subprocess.Popen(cmd, cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, run: Path, timeout: float = 180) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"the launch ran past {timeout} s:\n{tail(run)}") from None


def tail(run: Path) -> str:
    return "\n".join((run / "log.txt").read_text().splitlines()[-30:])


def batches(world, run: Path, rank: int) -> list[list[int]]:
    """The train batches rank `rank` collated, in order, as row numbers of train.jsonl (eval rows left out)."""
    out = []
    for line in (run / "rows" / f"rows.{rank}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["group"] == ["gloo", 2]
        rows = [world["ids"].get(tuple(r)) for r in rec["rows"]]
        if None not in rows:
            out.append(rows)
    return out


def losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()[1:]
    steps = [(int(s), float(v)) for s, v in (line.split("\t") for line in lines)]
    assert len(steps) == len(dict(steps)), "a step logged twice: dvclive written by more than one rank"
    return dict(steps)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def max_rel(a: dict[int, float], b: dict[int, float]) -> float:
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in b)


@pytest.fixture(scope="module")
def two(world):
    """An uninterrupted two-process run."""
    run = world["dir"] / "two"
    proc = launch(world, two_processes(world), run)
    assert finish(proc, run) == 0, tail(run)
    return run


def test_two_processes_share_each_epoch_and_write_once(world, two):
    # every row once per epoch across the ranks; in file order (shuffle off), a step's 8 rows split 4 + 4
    ranks = [batches(world, two, r) for r in (0, 1)]
    assert [len(b) for b in ranks] == [STEPS, STEPS]
    for step in range(STEPS):
        first = (step % (STEPS // EPOCHS)) * 2 * BATCH
        assert ranks[0][step] == list(range(first, first + BATCH)) and ranks[1][step] == list(range(first + BATCH, first + 2 * BATCH))
    per_epoch = STEPS // EPOCHS
    for e in range(EPOCHS):
        seen = sorted(i for rank in ranks for batch in rank[e * per_epoch : (e + 1) * per_epoch] for i in batch)
        assert seen == list(range(ROWS))

    # one checkpoint series, each checkpoint marked complete after both ranks wrote their part
    ckpt = two / "ckpt"
    key = run_key(two_processes(world), world["packed"], world["base"])
    assert sorted(f.name for f in ckpt.iterdir()) == sorted([key, "digests.sqlite"])
    series = sorted((ckpt / key).glob("checkpoint-*"))
    assert series == complete_checkpoints(ckpt / key) and [c.name for c in series] == [f"checkpoint-{STEPS - 2}", f"checkpoint-{STEPS}"]
    for c in series:
        assert (c / MARKER).is_file() and (c / "rng_state_0.pth").is_file() and (c / "rng_state_1.pth").is_file()

    # one dvclive log, one model: nothing else in the working folder (no per-rank dvclive/, no trained.tmp)
    assert sorted(f.name for f in two.iterdir()) == ["ckpt", "log.txt", "metrics", "params.yaml", "rows", "trained"]
    assert sorted(losses(two)) == list(range(1, STEPS + 1))
    m = json.loads((two / "metrics" / "metrics.json").read_text())
    tokens = PackedDataset(world["packed"] / "train.jsonl").tokens()
    assert m["step"] == STEPS and m["summary"]["tokens_seen"] == EPOCHS * tokens  # gathered from both ranks

    # the versions that trained it travel with the model
    info = json.loads((two / "trained" / "train_info.json").read_text())
    assert info["global_step"] == STEPS and info["tokens_seen"] == EPOCHS * tokens
    assert {k: info["packages"][k] for k in ("torch", "transformers", "peft", "accelerate")} == {
        k: version(k) for k in ("torch", "transformers", "peft", "accelerate")
    }


def test_two_processes_match_one_with_doubled_accumulation(world, two):
    run = world["dir"] / "one"
    p = two_processes(world).model_copy(update={"num_processes": 1, "gradient_accumulation_steps": 2, "checkpoint_dir": str(run / "ckpt")})
    info = finetune(p, world["packed"], world["base"], run / "trained", run / "metrics")
    assert info["global_step"] == STEPS
    one, both = losses(run), losses(two)
    assert sorted(one) == sorted(both)
    print("per-step loss, 2 processes vs 1 with doubled accumulation: max relative difference", max_rel(both, one))
    assert max_rel(both, one) < 1e-3
    w1, w2 = weights(run / "trained"), weights(two / "trained")
    assert w1.keys() == w2.keys()
    drift = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    print("final adapter weights: max absolute difference", drift)
    assert drift < 1e-4


def test_resume_after_one_rank_is_killed(world, two):
    import torch

    run = world["dir"] / "killed"
    p = two_processes(world)
    run_dir = run / "ckpt" / run_key(p, world["packed"], world["base"])
    proc = launch(world, p, run, slow_batch_s=0.4)
    try:
        deadline = time.time() + 120
        while not complete_checkpoints(run_dir):
            assert proc.poll() is None, f"the launch ended before its first checkpoint:\n{tail(run)}"
            assert time.time() < deadline, "no checkpoint after 120 s"
            time.sleep(0.1)
        os.kill(int((run / "rows" / "pid.1").read_text()), signal.SIGKILL)
        assert finish(proc, run, timeout=120) != 0  # the launcher ends the other rank and fails
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run / "trained").exists()
    resumed_at = int(complete_checkpoints(run_dir)[-1].name.split("-")[1])
    assert 2 <= resumed_at < STEPS
    before = [len(batches(world, run, r)) for r in (0, 1)]

    assert finish(launch(world, p, run), run) == 0, tail(run)
    assert f"resuming from {run_dir / f'checkpoint-{resumed_at}'}" in (run / "log.txt").read_text()
    # each rank went on with the batches of the steps after the checkpoint, as the uninterrupted run had them
    for r in (0, 1):
        assert batches(world, run, r)[before[r] :] == batches(world, two, r)[resumed_at:]
    # and ended where it ended: the same weights, the whole loss curve (the killed part replayed)
    w, ref = weights(run / "trained"), weights(two / "trained")
    assert all(torch.equal(w[k], ref[k]) for k in ref), "resumed weights differ from the uninterrupted run's"
    assert losses(run) == losses(two)
    assert (run / "trained" / "train_info.json").read_bytes() == (two / "trained" / "train_info.json").read_bytes()


def test_cpu_runs_several_processes_but_refuses_deepspeed(world, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU side of the environment check")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    p = two_processes(world)
    check_environment(p.model_copy(update={"num_processes": 8}))  # no GPU needed: the processes share the cores
    with pytest.raises(UserError, match="train.deepspeed.*CUDA"):
        check_environment(p.model_copy(update={"deepspeed": str(ROOT / "configs" / "deepspeed" / "zero2.json")}))
