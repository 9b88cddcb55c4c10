"""Several processes: the train stage re-launches itself under `accelerate launch`, one process a
GPU (+ DeepSpeed) or, on CPU, processes that train over gloo. Several machines: run `accelerate
launch` yourself on each (README); the stage sees it is inside a launch and trains."""

from __future__ import annotations

import os
import sys

from qa_forge.training.params import TrainParams


def in_distributed_launch() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def accelerate_launch(p: TrainParams) -> list[str]:
    """`accelerate launch` of `num_processes` processes on this machine, without what they run."""
    # port 0: a free port, so two runs on one machine never meet on accelerate's default 29500
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_processes), "--num_machines", "1"]
    cmd += ["--main_process_port", "0"]
    if p.deepspeed:
        return cmd + ["--use_deepspeed", "--deepspeed_config_file", p.deepspeed]
    # --multi_gpu picks torchrun's launcher, the only one of accelerate that starts several processes
    # without MPI (`--cpu` starts one); on CPU the Trainer (use_cpu) joins them over gloo
    return cmd + ["--multi_gpu"]


def launch_command(p: TrainParams, stage_args: list[str]) -> list[str]:
    """The command that re-runs this stage on `num_processes` processes (+ DeepSpeed)."""
    return accelerate_launch(p) + ["-m", "qa_forge", "train", *stage_args]
