"""The Trainer and its callbacks: a real-token budget, complete-checkpoint markers, dvclive logging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from accelerate import PartialState
from transformers import Trainer, TrainerCallback

from qa_forge.training.checkpoints import MARKER


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
        # every process writes its part of a checkpoint (its RNG state; under ZeRO its optimizer
        # shard): it is complete once all of them have
        PartialState().wait_for_everyone()
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / MARKER).write_text(json.dumps({"global_step": state.global_step}) + "\n")
        return control


class LiveCallback(TrainerCallback):
    """dvclive: one row per logged step (step = global step); replays the history on resume."""

    PLOT: ClassVar[dict[str, str]] = {
        "loss": "train/loss",
        "learning_rate": "train/learning_rate",
        "grad_norm": "train/grad_norm",
        "tokens_seen": "train/tokens",
        "eval_loss": "eval/loss",
    }
    # the Trainer's train_runtime is left out: a timing in the metrics shows a slower machine as a change
    SUMMARY: ClassVar[dict[str, str]] = {"train_loss": "train/mean_loss", "epoch": "train/epoch"}

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
