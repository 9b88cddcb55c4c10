"""train: fine-tune the base model on packed conversations (full, LoRA or QLoRA) with the HF Trainer.

Input: `data/packed/{train,valid}.jsonl`, rows {"input_ids", "labels", "position_ids"} batched by
`stages.collate.Collator` (no attention mask: with `use_cache=False` transformers derives the
block-diagonal mask from restarting position ids). Output: `models/trained` (the adapter for
lora/qlora, the full model for full, plus the tokenizer), written to a temporary folder and
renamed. dvclive logs loss, learning rate and eval loss per step to `metrics/train/`.

Checkpoints live outside the DVC outputs, in `<checkpoint_dir>/<run_key>/checkpoint-N`, where
run_key hashes the train params, the packed files and the base model's weights: `resume: auto`
picks up the latest complete checkpoint of the same run after a crash or kill, and a changed
param starts a fresh run. `max_tokens` bounds a run by the real (unpadded) tokens it trains on.
With `num_gpus > 1` the stage re-launches itself under `accelerate launch` (+ DeepSpeed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stages.collate import Collator
from stages.io import StageError, load_yaml, validate, write_json

MARKER = ".complete"  # written into a checkpoint folder once the Trainer has saved all of it


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["full", "lora", "qlora"] = "lora"
    lora: LoraParams = Field(default_factory=LoraParams)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr", "inverse_sqrt"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: run num_train_epochs
    per_device_train_batch_size: int = Field(1, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    gradient_checkpointing: bool = False
    bf16: bool = False
    tf32: bool = False  # GPU only: ignored (with a note) on CPU
    seed: int = 0
    attn_implementation: Literal["sdpa", "sdpa_varlen", "eager", "flash_attention_2", "flex_attention"] = "sdpa_varlen"  # sdpa_varlen: per-segment sdpa (stages/attention.py), fastest on CPU
    logging_steps: int = Field(1, gt=0)
    eval_steps: int | None = Field(None, gt=0)  # null: evaluate once, at the end
    save_steps: int = Field(50, gt=0)
    save_total_limit: int = Field(2, gt=0)
    max_tokens: int | None = Field(None, gt=0)  # budget of real (unpadded) tokens; null: none
    resume: Literal["auto", "never"] = "auto"
    checkpoint_dir: str = ".cache/checkpoints"
    num_gpus: int = Field(1, gt=0)
    num_threads: int | None = Field(None, gt=0)  # CPU: torch threads (null: torch's default); 1 is faster on a busy machine
    deepspeed: str | None = None  # e.g. configs/deepspeed/zero2.json

    @model_validator(mode="after")
    def _check(self):
        if self.max_steps == 0:
            raise ValueError("max_steps must be -1 (use num_train_epochs) or positive")
        return self


# ---------------------------------------------------------------- data


class PackedDataset:
    """Rows of a packed JSONL file, kept as compact int arrays; items are dicts of lists."""

    KEYS = ("input_ids", "labels", "position_ids")

    def __init__(self, path: Path):
        import numpy as np

        if not path.is_file():
            raise StageError(f"{path}: file not found (the pack stage writes it)")
        self.path = path
        self.rows: list[tuple] = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise StageError(f"{path}:{i}: not valid JSON: {e}") from None
                self.rows.append(tuple(np.asarray(self._check(row, path, i)[k], dtype=np.int64) for k in self.KEYS))

    @classmethod
    def _check(cls, row, path, i) -> dict:
        if not isinstance(row, dict) or any(k not in row for k in cls.KEYS):
            raise StageError(f"{path}:{i}: a row needs the keys {list(cls.KEYS)}")
        n = len(row["input_ids"])
        if n == 0 or any(len(row[k]) != n for k in cls.KEYS):
            raise StageError(f"{path}:{i}: input_ids, labels and position_ids must be non-empty and of equal length")
        if row["position_ids"][0] != 0:
            raise StageError(f"{path}:{i}: position_ids must start at 0")
        return row

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return dict(zip(self.KEYS, (a.tolist() for a in self.rows[i])))

    def tokens(self) -> int:
        return sum(len(r[0]) for r in self.rows)

    def supervised(self) -> int:
        return sum(int((r[1] != -100).sum()) for r in self.rows)


class CountingCollator(Collator):
    """`stages.collate.Collator`, plus the batch's real token count (popped before the forward)."""

    def __call__(self, rows: list[dict]):
        import torch

        batch = super().__call__(rows)
        batch["num_real_tokens"] = torch.tensor(sum(len(r["input_ids"]) for r in rows), dtype=torch.long)
        return batch


# ---------------------------------------------------------------- run key and checkpoints


def file_hash(path: Path, memo: dict | None = None) -> str:
    """sha256 of a file; `memo` (keyed by path, size, mtime, inode) spares re-hashing big weights."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    if memo is not None and key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    if memo is not None:
        memo[key] = h.hexdigest()
    return h.hexdigest()


def weight_files(base: Path) -> list[Path]:
    files = sorted(f for f in base.iterdir() if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt", ".pth") or f.name == "config.json"))
    if not any(f.name != "config.json" for f in files):
        raise StageError(f"{base}: no model weights (*.safetensors, *.bin): run the base_model stage first")
    return files


def run_key(p: TrainParams, packed: Path, base: Path, memo: dict | None = None) -> str:
    """sha256 of (the train params that define the run, the packed data, the base weights)."""
    h = hashlib.sha256()
    h.update(json.dumps(p.model_dump(exclude={"resume", "checkpoint_dir", "num_threads"}), sort_keys=True).encode())
    for f in [packed / "train.jsonl", packed / "valid.jsonl"]:
        if f.is_file():
            h.update(f"data:{f.name}:{file_hash(f, memo)}".encode())
    for f in weight_files(base):
        h.update(f"base:{f.name}:{file_hash(f, memo)}".encode())
    return h.hexdigest()[:20]


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run that were saved to the end, oldest first."""
    if not run_dir.is_dir():
        return []
    found = []
    for d in run_dir.glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if d.is_dir() and step.isdigit() and (d / MARKER).is_file():
            found.append((int(step), d))
    return [d for _, d in sorted(found)]


def prune_incomplete(run_dir: Path) -> None:
    """Drop checkpoint folders a crash or kill left half-written."""
    for d in run_dir.glob("checkpoint-*"):
        if d.is_dir() and not (d / MARKER).is_file():
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- multi-GPU launch


def in_distributed_launch() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_command(p: TrainParams, stage_args: list[str]) -> list[str]:
    """`accelerate launch` command that re-runs this stage on `num_gpus` processes (+ DeepSpeed)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_gpus), "--num_machines", "1"]
    if p.deepspeed:
        cmd += ["--use_deepspeed", "--deepspeed_config_file", p.deepspeed]
    else:
        cmd += ["--multi_gpu"]
    return cmd + ["-m", "stages", "train", *stage_args]


# ---------------------------------------------------------------- environment checks


def _needs_gpu_package(cuda: bool, param: str, value: str, module: str, package: str, cpu_hint: str) -> None:
    """`param: value` needs a CUDA GPU and `package` (the gpu extra): refuse clearly otherwise."""
    import importlib.util

    if not cuda:
        raise StageError(f"param '{param}': {value} needs a CUDA GPU{cpu_hint}")
    if importlib.util.find_spec(module) is None:
        raise StageError(f"param '{param}': {value} needs {package} (pip install -e .[gpu])")


def check_environment(p: TrainParams) -> dict:
    """Refuse what this machine cannot do, with the param to change; returns notes."""
    import torch

    cuda = torch.cuda.is_available()
    notes = {}
    if p.mode == "qlora":
        _needs_gpu_package(cuda, "train.mode", "qlora", "bitsandbytes", "bitsandbytes", " (bitsandbytes 4-bit); use mode lora on CPU")
    if p.bf16 and not (cuda and torch.cuda.is_bf16_supported()):
        raise StageError("param 'train.bf16': bf16 needs a GPU that supports it; set train.bf16 false on this machine")
    if p.tf32 and not cuda:
        notes["tf32"] = "ignored: no CUDA GPU"
    if p.attn_implementation == "flash_attention_2":
        _needs_gpu_package(cuda, "train.attn_implementation", "flash_attention_2", "flash_attn", "flash-attn", "; use sdpa")
    if p.num_gpus > 1 and torch.cuda.device_count() < p.num_gpus:
        raise StageError(f"param 'train.num_gpus': {p.num_gpus} GPUs asked, {torch.cuda.device_count()} found")
    if p.deepspeed:
        if not Path(p.deepspeed).is_file():
            raise StageError(f"param 'train.deepspeed': {p.deepspeed} not found")
        if not cuda:
            raise StageError("param 'train.deepspeed': DeepSpeed needs CUDA GPUs; set it to null on CPU")
    return notes


# ---------------------------------------------------------------- model


def load_model(p: TrainParams, base: Path):
    import torch
    from transformers import AutoModelForCausalLM

    if p.attn_implementation == "sdpa_varlen":
        from stages import attention

        attention.register()
    kwargs = {"attn_implementation": p.attn_implementation}
    if p.mode == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
        kwargs["dtype"] = torch.bfloat16
    else:
        # full: fp32 master weights (bf16 runs under autocast); lora: a frozen base may sit in bf16
        kwargs["dtype"] = torch.bfloat16 if (p.bf16 and p.mode == "lora") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.config.use_cache = False  # packed rows: the cache path builds the wrong mask
    if p.mode == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if p.mode == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=p.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    cfg = LoraConfig(
        r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout, target_modules=p.lora.target_modules, bias="none", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, cfg)


# ---------------------------------------------------------------- trainer pieces


def make_trainer_classes():
    from transformers import Trainer, TrainerCallback

    class BudgetTrainer(Trainer):
        """Counts real tokens (from the collator) into state.num_input_tokens_seen, saved with checkpoints."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            n = inputs.pop("num_real_tokens", None)
            if n is not None:
                n = self.accelerator.gather(n.to(self.args.device).reshape(1)).sum().item()
                self.state.num_input_tokens_seen += int(n)
            return super().training_step(model, inputs, num_items_in_batch)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            inputs.pop("num_real_tokens", None)
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

        def log(self, logs, start_time=None):
            logs = dict(logs)
            logs.setdefault("tokens_seen", self.state.num_input_tokens_seen)
            super().log(logs, start_time)

    class BudgetCallback(TrainerCallback):
        """Stops at the token budget, saves a checkpoint at the end, marks saved checkpoints complete."""

        def __init__(self, max_tokens: int | None):
            self.max_tokens = max_tokens

        def on_step_end(self, args, state, control, **kwargs):
            if self.max_tokens and state.num_input_tokens_seen >= self.max_tokens:
                control.should_training_stop = True
            if control.should_training_stop or state.global_step >= state.max_steps:
                control.should_save = True  # a re-run of a finished run resumes at its end
            return control

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    (ckpt / MARKER).write_text(json.dumps({"global_step": state.global_step}) + "\n")
            return control

    class LiveCallback(TrainerCallback):
        """dvclive: one row per logged step (step = global step); replays the history on resume."""

        PLOT: ClassVar[dict[str, str]] = {"loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm", "tokens_seen": "train/tokens",
                "eval_loss": "eval/loss"}
        SUMMARY: ClassVar[dict[str, str]] = {"train_loss": "train/mean_loss", "train_runtime": "train/runtime_s", "epoch": "train/epoch"}

        def __init__(self, live):
            self.live = live

        def write(self, step: int, logs: dict) -> None:
            self.live.step = step
            for k, v in logs.items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                if k in self.PLOT:
                    self.live.log_metric(self.PLOT[k], v)
                elif k in self.SUMMARY:
                    self.live.log_metric(self.SUMMARY[k], v, plot=False)
            self.live.make_summary()

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and state.global_step > 0:
                for logs in state.log_history:
                    self.write(logs.get("step", 0), logs)
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                self.write(state.global_step, logs)
            return control

    return BudgetTrainer, BudgetCallback, LiveCallback


def plan_steps(p: TrainParams, rows: int, tokens: int, world: int) -> tuple[int, int | None]:
    """Optimizer steps to run: epochs or max_steps, capped by the token budget (at the mean row length),
    so the LR schedule ends where the budget does. Returns (max_steps, steps_from_budget)."""
    per_step_rows = p.per_device_train_batch_size * p.gradient_accumulation_steps * world
    epoch_steps = max(1, math.ceil(math.ceil(rows / (p.per_device_train_batch_size * world)) / p.gradient_accumulation_steps))
    steps = p.max_steps if p.max_steps > 0 else math.ceil(p.num_train_epochs * epoch_steps)
    if p.max_tokens is None:
        return steps, None
    budget = max(1, math.ceil(p.max_tokens / (tokens / rows * per_step_rows)))
    return min(steps, budget), budget


# ---------------------------------------------------------------- the stage


def train(p: TrainParams, packed: Path, base: Path, out: Path, metrics_dir: Path, callbacks: list | None = None) -> dict:
    """Train and write `out`; returns the summary also written to `metrics_dir/metrics.json`."""
    start = time.time()
    notes = check_environment(p)
    if not (base / "config.json").is_file():
        raise StageError(f"{base}: not a model folder (no config.json): run the base_model stage first")
    train_ds = PackedDataset(packed / "train.jsonl")
    valid_ds = PackedDataset(packed / "valid.jsonl") if (packed / "valid.jsonl").is_file() else None
    if len(train_ds) == 0:
        raise StageError(f"{packed / 'train.jsonl'}: no rows to train on")
    if train_ds.supervised() == 0:
        raise StageError(f"{packed / 'train.jsonl'}: every label is -100: nothing to learn")
    if valid_ds is not None and len(valid_ds) == 0:
        valid_ds = None

    import torch
    from dvclive import Live
    from transformers import AutoTokenizer, TrainingArguments, set_seed

    ckpt_root = Path(p.checkpoint_dir)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    memo_path = ckpt_root / ".hash_memo.json"
    memo = json.loads(memo_path.read_text()) if memo_path.is_file() else {}
    key = run_key(p, packed, base, memo)
    run_dir = ckpt_root / key
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        write_json(memo_path, {k: v for k, v in memo.items() if Path(k.split("|")[0]).exists()})
        if p.resume == "never":
            shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        prune_incomplete(run_dir)
        (run_dir / "params.json").write_text(json.dumps(p.model_dump(), indent=2) + "\n")
    done = complete_checkpoints(run_dir)
    resume_from = str(done[-1]) if (p.resume == "auto" and done) else None

    world = int(os.environ.get("WORLD_SIZE", "1"))
    max_steps, budget_steps = plan_steps(p, len(train_ds), train_ds.tokens(), world)
    cuda = torch.cuda.is_available()
    if p.num_threads and not cuda:
        torch.set_num_threads(p.num_threads)
    # TrainingArguments before the model: a ZeRO-3 config must exist when the weights load
    args = TrainingArguments(
        output_dir=str(run_dir),
        learning_rate=p.learning_rate,
        lr_scheduler_type=p.lr_scheduler_type,
        warmup_steps=p.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=p.weight_decay,
        max_steps=max_steps,
        per_device_train_batch_size=p.per_device_train_batch_size,
        per_device_eval_batch_size=p.per_device_train_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        activation_checkpointing=p.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if p.gradient_checkpointing else None,
        bf16=p.bf16,
        tf32=(p.tf32 if cuda else None),
        seed=p.seed,
        data_seed=p.seed,
        logging_steps=p.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if (p.eval_steps and valid_ds is not None) else "no",
        eval_steps=p.eval_steps,
        save_strategy="steps",
        save_steps=p.save_steps,
        save_total_limit=p.save_total_limit,
        prediction_loss_only=True,
        label_names=["labels"],
        report_to="none",
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        deepspeed=p.deepspeed,
        ddp_find_unused_parameters=False if world > 1 else None,
        disable_tqdm=False,
    )
    set_seed(p.seed)
    tok = AutoTokenizer.from_pretrained(base)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad_id is None:
        raise StageError(f"{base}: the tokenizer has neither a pad nor an eos token to pad with")
    model = load_model(p, base)

    metrics_dir = Path(metrics_dir)
    live = Live(dir=str(metrics_dir), save_dvc_exp=False, dvcyaml=False, report=None) if is_main else None
    BudgetTrainer, BudgetCallback, LiveCallback = make_trainer_classes()
    cbs = [BudgetCallback(p.max_tokens)] + ([LiveCallback(live)] if live else []) + list(callbacks or [])
    trainer = BudgetTrainer(
        model=model, args=args, data_collator=CountingCollator(pad_id), train_dataset=train_ds, eval_dataset=valid_ds, callbacks=cbs
    )
    print(f"train: mode {p.mode}, run {key}, {len(train_ds)} rows / {train_ds.tokens()} tokens, {max_steps} steps"
          + (f", resuming from {resume_from}" if resume_from else ""))
    tokens_before = 0
    if resume_from:
        tokens_before = json.loads((Path(resume_from) / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    train_s = time.time() - t0
    eval_loss = None
    if valid_ds is not None:
        eval_loss = trainer.evaluate().get("eval_loss")

    # write the output: every rank calls save_model (ZeRO-3 gathers), rank 0 renames
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    session_tokens = state.num_input_tokens_seen - tokens_before
    summary = {
        "mode": p.mode,
        "run_key": key,
        "resumed_from_step": int(Path(resume_from).name.split("-")[1]) if resume_from else 0,
        "global_step": state.global_step,
        "max_steps": max_steps,
        "budget_steps": budget_steps,
        "tokens_seen": state.num_input_tokens_seen,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval_loss": eval_loss,
        "train_seconds": round(train_s, 1),
        "tokens_per_second": round(session_tokens / train_s, 1) if train_s > 0 and session_tokens else None,
        "seconds": round(time.time() - start, 1),
        **({"notes": notes} if notes else {}),
    }
    if is_main:
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle of this run's args: not part of the model
        tok.save_pretrained(tmp)
        write_json(tmp / "train_info.json", {**{k: summary[k] for k in ("mode", "run_key", "global_step", "tokens_seen")}, "base": str(base)})
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        for k in ("first_loss", "final_loss", "tokens_seen", "tokens_per_second", "global_step", "resumed_from_step", "train_seconds"):
            if summary[k] is not None:
                live.log_metric(f"summary/{k}", summary[k], plot=False)
        live.summary["run_key"] = key
        live.end()
    return summary


def main(
    params: Path = typer.Option(Path("params.yaml")),
    packed: Path = typer.Option(Path("data/packed"), help="folder with train.jsonl and valid.jsonl from the pack stage"),
    base: Path = typer.Option(Path("models/base")),
    out: Path = typer.Option(Path("models/trained")),
    metrics_dir: Path = typer.Option(Path("metrics/train"), help="dvclive folder: metrics.json + plots/metrics/*.tsv"),
):
    """Fine-tune the base model on packed rows (full, LoRA or QLoRA); resumable checkpoints."""
    p = validate(TrainParams, load_yaml(params).get("train", {}), "train")
    if p.num_gpus > 1 and not in_distributed_launch():
        check_environment(p)
        stage_args = ["--params", str(params), "--packed", str(packed), "--base", str(base), "--out", str(out), "--metrics-dir", str(metrics_dir)]
        cmd = launch_command(p, stage_args)
        print("train: " + " ".join(cmd))
        raise typer.Exit(subprocess.run(cmd, check=False).returncode)
    info = train(p, packed, base, out, metrics_dir)
    print(f"train: {info}")
