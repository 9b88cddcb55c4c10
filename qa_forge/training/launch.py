"""Several GPUs: the train stage re-launches itself under `accelerate launch` (+ DeepSpeed)."""

from __future__ import annotations

import os
import sys

from qa_forge.training.params import TrainParams


def in_distributed_launch() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_command(p: TrainParams, stage_args: list[str]) -> list[str]:
    """`accelerate launch` command that re-runs this stage on `num_gpus` processes (+ DeepSpeed)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_gpus), "--num_machines", "1"]
    if p.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", p.deepspeed]
    else:
        cmd += ["--multi_gpu"]
    return cmd + ["-m", "qa_forge", "train", *stage_args]
