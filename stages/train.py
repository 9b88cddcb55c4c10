"""train: fine-tune the base model on the packed rows (full / LoRA / QLoRA; resumable checkpoints
outside the DVC outputs) -> models/trained, metrics/train/ (dvclive). With `train.num_processes > 1`
the stage re-launches itself under `accelerate launch` (GPUs, + DeepSpeed; or CPU processes over gloo)."""

import subprocess
from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section
from qa_forge.training.environment import check_environment
from qa_forge.training.launch import in_distributed_launch, launch_command
from qa_forge.training.params import TrainParams
from qa_forge.training.recipe import finetune


def main(
    params: Path = PARAMS,
    packed: Path = typer.Option(Path("data/packed"), help="folder with train.jsonl and valid.jsonl from the pack stage"),
    base: Path = typer.Option(Path("models/base")),
    out: Path = typer.Option(Path("models/trained")),
    metrics_dir: Path = typer.Option(Path("metrics/train"), help="dvclive folder: metrics.json + plots/metrics/*.tsv"),
    timings: Path = typer.Option(Path("metrics/timings/train.json"), help="train seconds, tokens per second (not metrics)"),
):
    """Fine-tune the base model on packed rows (full, LoRA or QLoRA); resumable checkpoints."""
    p = load_section(params, "train", TrainParams)
    check_outputs(files=[timings], folders=[out, metrics_dir])
    if p.num_processes > 1 and not in_distributed_launch():
        check_environment(p)
        args = ["--params", str(params), "--packed", str(packed), "--base", str(base), "--out", str(out), "--metrics-dir", str(metrics_dir)]
        args += ["--timings", str(timings)]
        cmd = launch_command(p, args)
        print("train: " + " ".join(cmd))
        raise typer.Exit(subprocess.run(cmd, check=False).returncode)
    print(f"train: {finetune(p, packed, base, out, metrics_dir, timings=timings)}")


if __name__ == "__main__":
    run(main)
