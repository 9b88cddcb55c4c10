"""What this machine can run: refuse a GPU-only setting on CPU with the param to change."""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.io import UserError
from qa_forge.training.launch import in_distributed_launch
from qa_forge.training.params import TrainParams


def _needs_gpu_package(cuda: bool, param: str, value: str, module: str, package: str, cpu_hint: str) -> None:
    """`param: value` needs a CUDA GPU and `package` (the gpu extra): refuse clearly otherwise."""
    import importlib.util

    if not cuda:
        raise UserError(f"param '{param}': {value} needs a CUDA GPU{cpu_hint}")
    if importlib.util.find_spec(module) is None:
        raise UserError(f"param '{param}': {value} needs {package} (pip install -e .[gpu])")


def check_environment(p: TrainParams) -> dict:
    """Refuse what this machine cannot do, with the param to change; returns notes."""
    import torch

    cuda = torch.cuda.is_available()
    notes = {}
    if p.mode == "qlora":
        _needs_gpu_package(cuda, "train.mode", "qlora", "bitsandbytes", "bitsandbytes", " (bitsandbytes 4-bit); use mode lora on CPU")
    if p.bf16 and not (cuda and torch.cuda.is_bf16_supported()):
        raise UserError("param 'train.bf16': bf16 needs a GPU that supports it; set train.bf16 false on this machine")
    if p.tf32 and not cuda:
        notes["tf32"] = "ignored: no CUDA GPU"
    if p.attn_implementation == "flash_attention_2":
        _needs_gpu_package(cuda, "train.attn_implementation", "flash_attention_2", "flash_attn", "flash-attn", "; use sdpa")
    # one process a GPU; without CUDA the processes share the CPU cores and talk over gloo. Inside a
    # launch (accelerate's, on each of several machines) the launcher has placed the processes.
    if cuda and not in_distributed_launch() and p.num_processes > torch.cuda.device_count():
        raise UserError(f"param 'train.num_processes': {p.num_processes} processes, one a GPU, but {torch.cuda.device_count()} GPUs found")
    if p.deepspeed:
        if not Path(p.deepspeed).is_file():
            raise UserError(f"param 'train.deepspeed': {p.deepspeed} not found")
        if not cuda:
            raise UserError("param 'train.deepspeed': DeepSpeed needs CUDA GPUs; set it to null on CPU")
    return notes
