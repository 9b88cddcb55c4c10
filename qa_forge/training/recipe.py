"""Fine-tune the base model on packed conversations (full, LoRA or QLoRA) with the HF Trainer: a
recipe that reads top-down, `setup` -> `train` -> `save`.

Input: `data/packed/{train,valid}.jsonl`, rows {"input_ids", "labels", "position_ids"} batched by
`qa_forge.training.collate.Collator`: padded for sdpa / eager / flex_attention, one flattened row
with explicit boundaries for flash-attention and sdpa_varlen, so no conversation attends to another. Output: the adapter (lora/qlora) or
the full model (full), plus the tokenizer carrying the chat template pack rendered with, swapped into `out` whole. dvclive logs loss, learning
rate and eval loss per step to `metrics_dir`. Checkpoints live outside the DVC outputs (see
`checkpoints`), so `resume: auto` continues a killed run. `max_tokens` bounds a run by the real
(unpadded) tokens it trains on. Under several processes (`train.num_processes`, see `launch`) every
process runs this recipe on its share of each step's rows; the main one alone writes checkpoint
markers, dvclive and `out`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa_forge.core.hashing import DigestStore
from qa_forge.core.io import UserError, atomic_dir, check_model_folder, model_errors, read_text, write_json
from qa_forge.core.paths import cache_path
from qa_forge.core.store import SqliteStore
from qa_forge.training.checkpoints import complete_checkpoints, prepare_run_dir, run_key
from qa_forge.training.collate import flattens
from qa_forge.training.data import CountingCollator, PackedDataset
from qa_forge.training.environment import check_environment
from qa_forge.training.model import load_model
from qa_forge.training.params import TrainParams

TRAINING_PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "flash-attn")
SUMMARY_METRICS = ("first_loss", "final_loss", "tokens_seen", "global_step")
# how long it took and whether it resumed: written beside the metrics, never into them, so a slower
# machine or a resumed run never shows as a change in `dvc metrics diff`
TIMINGS = ("train_seconds", "tokens_per_second", "seconds", "resumed_from_step")


@dataclass
class Run:
    """Everything `setup` prepares for `train` and `save`."""

    p: TrainParams
    base: Path
    key: str
    resume_from: str | None
    train_ds: PackedDataset
    valid_ds: PackedDataset | None
    max_steps: int
    budget_steps: int | None
    notes: dict
    is_main: bool
    tokenizer: Any
    trainer: Any
    live: Any  # dvclive.Live on the main process, else None


def finetune(
    p: TrainParams, packed: Path, base: Path, out: Path, metrics_dir: Path, callbacks: list | None = None, timings: Path | None = None
) -> dict:
    """Train and write `out`; returns the summary also written to `metrics_dir/metrics.json`, less
    its timings, which go to `timings` (when given)."""
    start = time.time()
    run = setup(p, packed, base, Path(metrics_dir), callbacks or [])
    result = train(run)
    summary = save(run, Path(out), result, start)
    if timings is not None and run.is_main:
        write_json(timings, {k: summary[k] for k in TIMINGS})
    return summary


# ---------------------------------------------------------------- setup


def setup(p: TrainParams, packed: Path, base: Path, metrics_dir: Path, callbacks: list) -> Run:
    train_ds, valid_ds = load_data(packed, base)  # first: a bad input fails before torch is imported
    notes = check_environment(p)
    import torch
    from dvclive import Live
    from transformers import AutoTokenizer, set_seed

    from qa_forge.training.trainer import BudgetCallback, BudgetTrainer, LiveCallback

    key, run_dir = checkpoint_run(p, packed, base)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    max_steps, budget_steps = plan_steps(p, len(train_ds), train_ds.tokens(), world)
    cuda = torch.cuda.is_available()
    if p.num_threads and not cuda:
        torch.set_num_threads(p.num_threads)
    # TrainingArguments before the model: a ZeRO-3 config must exist when the weights load
    args = training_arguments(p, run_dir, max_steps, has_valid=valid_ds is not None, world=world, cuda=cuda)
    is_main = args.process_index == 0
    resume_from = resume_point(p, run_dir, args)
    set_seed(p.seed)
    with model_errors(base, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(base)
    # the template pack rendered the rows with (a params override, the base's own, or the ChatML
    # fallback) travels with the model: whatever serves it renders conversations as they were trained
    tok.chat_template = read_text(packed / "chat_template.jinja")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad_id is None:
        raise UserError(f"{base}: the tokenizer has neither a pad nor an eos token to pad with")
    with model_errors(base):
        model = load_model(p, base)
    live = Live(dir=str(metrics_dir), save_dvc_exp=False, dvcyaml=False, report=None) if is_main else None
    cbs = [BudgetCallback(p.max_tokens)] + ([LiveCallback(live)] if live else []) + callbacks
    trainer = BudgetTrainer(
        model=model,
        args=args,
        data_collator=CountingCollator(pad_id, flatten=flattens(p.attn_implementation)),
        train_dataset=train_ds,
        eval_dataset=valid_ds,
        callbacks=cbs,
    )
    print(
        f"train: mode {p.mode}, run {key}, {len(train_ds)} rows / {train_ds.tokens()} tokens, {max_steps} steps"
        + (f", resuming from {resume_from}" if resume_from else "")
    )
    return Run(p, base, key, resume_from, train_ds, valid_ds, max_steps, budget_steps, notes, is_main, tok, trainer, live)


def load_data(packed: Path, base: Path) -> tuple[PackedDataset, PackedDataset | None]:
    """The packed rows, checked against the base (its folder, weights and vocabulary) before torch loads it."""
    config = check_model_folder(base)
    vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    train_ds = PackedDataset(packed / "train.jsonl", vocab)
    valid_ds = PackedDataset(packed / "valid.jsonl", vocab) if (packed / "valid.jsonl").exists() else None
    if len(train_ds) == 0:
        raise UserError(f"{packed / 'train.jsonl'}: no rows to train on")
    if train_ds.supervised() == 0:
        raise UserError(f"{packed / 'train.jsonl'}: every label is ignored: nothing to learn")
    return train_ds, (valid_ds if valid_ds is not None and len(valid_ds) else None)


def checkpoint_run(p: TrainParams, packed: Path, base: Path) -> tuple[str, Path]:
    """(run key, its checkpoint folder): the same in every process."""
    root = cache_path(p.checkpoint_dir)
    store = SqliteStore(root / "digests.sqlite")
    try:
        key = run_key(p, packed, base, DigestStore(store))
    finally:
        store.close()
    return key, root / key


def resume_point(p: TrainParams, run_dir: Path, args) -> str | None:
    """The checkpoint to resume from, or None. The main process prepares the folder (drops what a
    kill left half-written) while the others wait, then they all read it: every rank resumes from
    the same checkpoint."""
    with args.main_process_first(local=False, desc="checkpoint folder"):
        if args.process_index == 0:
            prepare_run_dir(run_dir, p)
    done = complete_checkpoints(run_dir)
    return str(done[-1]) if (p.resume == "auto" and done) else None


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


def training_arguments(p: TrainParams, run_dir: Path, max_steps: int, has_valid: bool, world: int, cuda: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
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
        # sequential: each process takes every num_processes-th micro-batch of the file's order
        train_sampling_strategy="sequential" if p.shuffle is False else "random",
        logging_steps=p.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if (p.eval_steps and has_valid) else "no",
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


# ---------------------------------------------------------------- train


def train(run: Run) -> dict:
    """Run (or resume) the Trainer; returns what `save` reports of this session."""
    tokens_before = 0
    if run.resume_from:
        tokens_before = json.loads((Path(run.resume_from) / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    t0 = time.time()
    run.trainer.train(resume_from_checkpoint=run.resume_from)
    train_s = time.time() - t0
    eval_loss = run.trainer.evaluate().get("eval_loss") if run.valid_ds is not None else None
    return {"train_s": train_s, "eval_loss": eval_loss, "tokens_before": tokens_before}


# ---------------------------------------------------------------- save


def save(run: Run, out: Path, result: dict, start: float) -> dict:
    """Every rank calls save_model (ZeRO-3 gathers the weights); the main process writes `out`."""
    summary = summarize(run, result, start)
    # the others save into the main process's temporary folder (ZeRO-3 without gathering writes
    # shards there): they wait until it has made it
    if not run.is_main:
        run.trainer.accelerator.wait_for_everyone()
        run.trainer.save_model(str(out.with_name(out.name + ".tmp")))
        return summary
    with atomic_dir(out) as tmp:
        run.trainer.accelerator.wait_for_everyone()
        run.trainer.save_model(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle of this run's args: not part of the model
        sort_target_modules(tmp / "adapter_config.json")
        run.tokenizer.save_pretrained(tmp)
        info = {k: summary[k] for k in ("mode", "run_key", "global_step", "tokens_seen")}
        write_json(tmp / "train_info.json", {**info, "base": str(run.base), "packages": package_versions()})
    for k in SUMMARY_METRICS:
        if summary[k] is not None:
            run.live.log_metric(f"summary/{k}", summary[k], plot=False)
    run.live.summary["run_key"] = run.key
    run.live.end()
    return summary


def package_versions() -> dict[str, str]:
    """The installed versions of what computed the weights (GPU packages only where installed): a
    model can be retrained, or its numbers compared, with the same stack."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TRAINING_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def sort_target_modules(path: Path) -> None:
    """peft writes `target_modules` from a set, in an order that changes from run to run (string
    hashing is salted per process): sorted, the same weights always give the same output hash."""
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        path.write_text(json.dumps(config, indent=2) + "\n")


def summarize(run: Run, result: dict, start: float) -> dict:
    state = run.trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    session_tokens = state.num_input_tokens_seen - result["tokens_before"]
    train_s = result["train_s"]
    return {
        "mode": run.p.mode,
        "run_key": run.key,
        "resumed_from_step": int(Path(run.resume_from).name.split("-")[1]) if run.resume_from else 0,
        "global_step": state.global_step,
        "max_steps": run.max_steps,
        "budget_steps": run.budget_steps,
        "tokens_seen": state.num_input_tokens_seen,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "eval_loss": result["eval_loss"],
        "train_seconds": round(train_s, 1),
        "tokens_per_second": round(session_tokens / train_s, 1) if train_s > 0 and session_tokens else None,
        "seconds": round(time.time() - start, 1),
        **({"notes": run.notes} if run.notes else {}),
    }
