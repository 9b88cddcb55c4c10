"""The `train` params section: every value lives in params.yaml (these models hold none)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(gt=0)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"]


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["full", "lora", "qlora"]
    lora: LoraParams
    learning_rate: float = Field(gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr", "inverse_sqrt"]
    warmup_ratio: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    num_train_epochs: float = Field(gt=0)
    max_steps: int = Field(ge=-1)  # -1: run num_train_epochs
    per_device_train_batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(gt=0)
    gradient_checkpointing: bool
    bf16: bool
    tf32: bool  # GPU only: ignored (with a note) on CPU
    seed: int
    # sdpa_varlen: per-segment sdpa (qa_forge/training/attention.py), fastest on CPU
    attn_implementation: Literal["sdpa", "sdpa_varlen", "eager", "flash_attention_2", "flex_attention"]
    logging_steps: int = Field(gt=0)
    eval_steps: int | None = Field(gt=0)  # null: evaluate once, at the end
    save_steps: int = Field(gt=0)
    save_total_limit: int = Field(gt=0)
    max_tokens: int | None = Field(gt=0)  # budget of real (unpadded) tokens; null: none
    resume: Literal["auto", "never"]
    checkpoint_dir: str  # relative to the cache root (qa_forge.core.paths), or absolute
    # processes on this machine: > 1 re-launches the stage under `accelerate launch`, one process a
    # GPU (NCCL, DeepSpeed with `deepspeed`) or, on CPU, over gloo
    num_processes: int = Field(gt=0)
    num_threads: int | None = Field(gt=0)  # CPU: torch threads (null: torch's default); 1 is faster on a busy machine
    deepspeed: str | None  # e.g. configs/deepspeed/zero2.json
    shuffle: bool  # false: rows in the packed file's order, split the same way over any number of processes

    @model_validator(mode="after")
    def _check(self):
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (use num_train_epochs) or positive")
        return self
