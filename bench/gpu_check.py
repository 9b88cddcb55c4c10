"""One script for a lent GPU host (one H100/H200, torch + transformers + peft + accelerate only, no
network): the checks this project cannot make on CPU, in about 6 minutes. Every model is randomly
initialised from a config; nothing is downloaded.

Parts (each guarded: a part that fails records its error and the next one runs):

  packing  a micro-batch of packed rows (several conversations per row, position ids restarting
           at 0, labels -100 on prompts and on each conversation's first token) gives the same
           logits and loss as each conversation alone, batched by the repo's own collator, for
           sdpa, sdpa_varlen, flex_attention (fp32: logits within 1e-4) and flash_attention_2
           where flash_attn imports (bf16: loss within 1e-2).
  train    LoRA training throughput of a random Mistral-7B-shaped model on packed 4096-token rows,
           flash_attention_2 (where it imports, else sdpa) and sdpa_varlen (the train stage's
           default): real tokens/s, MFU and peak memory, with and without gradient checkpointing
           (target >= 10,000 tokens/s on one H100-class GPU without checkpointing).
  eval     the evaluate loop, batched with each conversation's KV cache kept between turns vs one
           conversation at a time re-encoding, on a random SmolLM2-135M-shaped model: questions/s
           both ways (target >= 5x) and whether greedy decoding gives identical tokens.

    python bench/gpu_check.py                      # all parts -> bench/results/gpu_check.json
    python bench/gpu_check.py --parts eval         # one part, merged into the same file
    python bench/gpu_check.py --cpu-smoke --out /tmp/x.json   # every part at tiny sizes on CPU

The results file is rewritten (temp file + rename) as soon as each part ends, so a run cut short
keeps what finished. --cpu-smoke proves the script runs and its parity checks hold at tiny sizes;
it measures no GPU speed and never writes the GPU results file.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched: every model is built from a config
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# peft still calls transformers' v6-deprecated gradient-checkpointing aliases: noise in the log
warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*", category=FutureWarning)

import torch

# torch-only modules of the repo (no pydantic): the GPU host has only torch and transformers
from qa_forge.core.segments import IGNORE_INDEX, segments
from qa_forge.training.attention import register as register_sdpa_varlen
from qa_forge.training.collate import Collator, flattens

GPU_RESULTS = ROOT / "bench/results/gpu_check.json"
SMOKE_RESULTS = Path(tempfile.gettempdir()) / "gpu_check_cpu_smoke.json"
PARTS = ("packing", "train", "eval")
PAD = 0  # scripted token ids are drawn from 3 up, so pads and specials never collide with them
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# bf16 dense tensor-core peak, TFLOP/s, by a substring of the device name (first match wins)
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]
MODULES_ABSENT_ON_GPU_HOST = ("pydantic", "dvc")

MISTRAL_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "sliding_window": None,  # Mistral v0.2+; v0.1's 4096 window would not bind on 4096-token rows anyway
}
SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
}
TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@dataclass(frozen=True)
class Sizes:
    # packing parity: model shape, conversations, the row length they are packed into
    parity_model: dict
    parity_conversations: int
    parity_longest: int
    parity_row: int
    # training throughput
    train_model: dict
    train_row: int
    train_conversation: tuple[int, int]  # conversation lengths drawn from this range
    train_warmup: int
    train_steps: int
    train_budget_s: float  # per configuration: timed steps stop past it
    # evaluate loop
    eval_model: dict
    eval_questions: int
    eval_batch: int
    eval_tokens: int
    eval_forced: int
    eval_prompt: tuple[int, int]
    eval_tool: tuple[int, int]
    eval_budget_s: float  # per mode: no new group starts past it
    flex: bool = True  # flex_attention compiles ~40 s on CPU: the smoke run skips it unless asked


GPU = Sizes(
    parity_model={
        "vocab_size": 1024,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
    parity_conversations=24,
    parity_longest=400,
    parity_row=1024,
    train_model=MISTRAL_7B,
    train_row=4096,
    train_conversation=(300, 1800),
    train_warmup=2,
    train_steps=8,
    train_budget_s=20.0,
    eval_model=SMOLLM2_135M,
    eval_questions=32,
    eval_batch=8,  # evaluate.batch_size in params.yaml
    eval_tokens=32,
    eval_forced=2,
    # SmolLM2's tokenizer on the repo's HotpotQA questions: prompt 169-190 tokens, top-1 paragraph 26-449
    # (mean 152); a tool turn is its paragraph plus ~10 template tokens (mean here 158)
    eval_prompt=(169, 190),
    eval_tool=(36, 280),
    eval_budget_s=75.0,
)
SMOKE = Sizes(
    parity_model=TINY,
    parity_conversations=9,
    parity_longest=70,
    parity_row=128,
    train_model=TINY,
    train_row=256,
    train_conversation=(30, 120),
    train_warmup=1,
    train_steps=2,
    train_budget_s=10.0,
    eval_model={**TINY, "tie_word_embeddings": True},
    eval_questions=4,
    eval_batch=2,
    eval_tokens=4,
    eval_forced=2,
    eval_prompt=(20, 30),
    eval_tool=(5, 20),
    eval_budget_s=20.0,
    flex=False,
)


# --- shared ----------------------------------------------------------------------------------------


def random_model(config, device: str, dtype: torch.dtype, attn: str):
    """A causal LM from `config`, built on `device` with each weight drawn once. transformers'
    default path runs torch's kaiming init on every layer, then its own normal_ init over it again:
    two passes over 7B weights (minutes on CPU, time wasted on a GPU loan). `no_init_weights` skips
    both, leaving the weights uninitialised until draw_weights fills them."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    torch.manual_seed(0)
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    model.tie_weights()  # no_init_weights also skips the tying that init_weights does
    draw_weights(model, config.initializer_range)
    return model


@torch.no_grad()
def draw_weights(model, std: float) -> None:
    """What transformers' _init_weights gives Llama/Mistral: norms 1, every matrix N(0, std)."""
    for name, p in model.named_parameters():  # tied weights are listed once
        if "norm" in name:
            p.fill_(1.0)
        else:
            p.normal_(0.0, std)


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def pack_rows(convs: list[dict], row_len: int) -> list[dict]:
    """First-fit packing as the pack stage lays rows out (its best-fit packer needs pydantic): each
    conversation's position ids restart at 0 and its first token's label is -100, so nothing is
    predicted across a boundary."""
    rows: list[dict] = []
    for c in convs:
        n = len(c["input_ids"])
        row = next((r for r in rows if len(r["input_ids"]) + n <= row_len), None)
        if row is None:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(row)
        row["input_ids"] += c["input_ids"]
        row["labels"] += [IGNORE_INDEX, *c["labels"][1:]]
        row["position_ids"] += list(range(n))
    return rows


def random_conversations(n: int, lengths: tuple[int, int], vocab: int, rng: random.Random, prompt_share: float = 0.5) -> list[dict]:
    """Conversations of random tokens: a prompt (unlabelled), then an answer (labelled)."""
    out = []
    for _ in range(n):
        length = rng.randint(*lengths)
        prompt = max(1, min(length - 1, int(length * prompt_share * rng.uniform(0.5, 1.5))))
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# --- part 1: packing parity ----------------------------------------------------------------------


def alone(model, rows: list[dict], device: str) -> list[tuple[torch.Tensor, float, int]]:
    """Each conversation of each row run on its own: (logits, loss x labelled count, labelled count)."""
    out = []
    with torch.no_grad():
        for row in rows:
            for a, b in segments(row["position_ids"]):
                ids = torch.tensor([row["input_ids"][a:b]], device=device)
                labels = torch.tensor([row["labels"][a:b]], device=device)
                res = model(input_ids=ids, labels=labels, use_cache=False)
                n = int((labels[0, 1:] != IGNORE_INDEX).sum())
                out.append((res.logits[0].float(), res.loss.item() * n, n))
    return out


def where_segments(rows: list[dict], flat: bool) -> list[tuple[int, int, int]]:
    """(row, start, end) of each conversation in the collated batch: in its own row when padded,
    at its offset in the one row when flattened."""
    out, offset = [], 0
    for r, row in enumerate(rows):
        for a, b in segments(row["position_ids"]):
            out.append((0, offset + a, offset + b) if flat else (r, a, b))
        offset += len(row["input_ids"])
    return out


def packed_vs_alone(model, rows: list[dict], impl: str, device: str, reference=None, **kwargs) -> dict:
    """Max |logit diff| over real tokens and |loss diff|: the packed batch against each conversation
    alone (through `reference`, same weights, when given)."""
    flat = flattens(impl)
    batch = Collator(PAD, flatten=flat)(rows)
    with torch.no_grad():
        res = model(**to_device(batch, device), use_cache=False, **kwargs)
    singles = alone(reference or model, rows, device)
    worst = max(
        (res.logits[r, a:b].float() - s[0]).abs().max().item() for (r, a, b), s in zip(where_segments(rows, flat), singles, strict=True)
    )
    loss_alone = sum(s[1] for s in singles) / sum(s[2] for s in singles)
    out = {"layout": f"flattened {tuple(batch['input_ids'].shape)}" if flat else f"padded {tuple(batch['input_ids'].shape)}"}
    if flat:  # the boundaries the varlen kernels get are exactly the conversations'
        bounds = [a for _, a, _ in where_segments(rows, True)] + [sum(len(r["input_ids"]) for r in rows)]
        out["cu_seq_lens_match_conversations"] = batch["cu_seq_lens_q"].tolist() == bounds
    return out | {
        "max_logit_diff": worst,
        "loss_packed": res.loss.item(),
        "loss_alone": loss_alone,
        "loss_diff": abs(res.loss.item() - loss_alone),
    }


def parity_impls(device: str, sizes: Sizes) -> list[tuple[str, torch.dtype, str | None]]:
    """(implementation, dtype, why it is skipped or None)."""
    no_flash = "flash_attn not importable" if importlib.util.find_spec("flash_attn") is None else None
    if device != "cuda":
        no_flash = "flash-attention needs CUDA"
    no_flex = None if sizes.flex else "cpu-smoke: flex_attention compiles ~40 s on CPU (--smoke-flex to try it)"
    return [
        ("sdpa", torch.float32, None),
        ("sdpa_varlen", torch.float32, None),
        ("flex_attention", torch.float32, no_flex),
        ("flash_attention_2", torch.bfloat16, no_flash),  # flash takes bf16/fp16 only
    ]


def check_impl(config, rows: list[dict], impl: str, dtype: torch.dtype, device: str) -> dict:
    model = random_model(config, device, dtype, impl).eval()
    reference = None
    if impl == "flex_attention":  # each conversation alone through sdpa, same weights: every new length would recompile flex
        reference = random_model(config, device, dtype, "sdpa").eval()
        reference.load_state_dict(model.state_dict())
    res = packed_vs_alone(model, rows, impl, device, reference)
    if dtype == torch.float32:
        res["criterion"], res["pass"] = "fp32: max logit diff < 1e-4", res["max_logit_diff"] < 1e-4
    else:
        res["criterion"], res["pass"] = "bf16: loss diff < 1e-2", res["loss_diff"] < 1e-2
    res["pass"] = res["pass"] and res.get("cu_seq_lens_match_conversations", True)
    if impl == "sdpa":  # the check can fail: an all-ones mask makes transformers ignore the segments
        mask = torch.ones(len(rows), max(len(r["input_ids"]) for r in rows), dtype=torch.long, device=device)
        res["control_all_ones_mask_logit_diff"] = packed_vs_alone(model, rows, impl, device, attention_mask=mask)["max_logit_diff"]
    return res | {"dtype": str(dtype).removeprefix("torch.")}


def part_packing(sizes: Sizes, device: str) -> dict:
    from transformers import LlamaConfig

    register_sdpa_varlen()
    config = LlamaConfig(**sizes.parity_model, max_position_embeddings=4096, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    rng = random.Random(0)
    rows = pack_rows(random_conversations(sizes.parity_conversations, (8, sizes.parity_longest), config.vocab_size, rng), sizes.parity_row)
    impls = {}
    for impl, dtype, skip in parity_impls(device, sizes):
        if skip:
            impls[impl] = {"skipped": skip}
            continue
        try:
            impls[impl] = check_impl(config, rows, impl, dtype, device)
        except Exception as e:  # noqa: BLE001 - one kernel failing must not hide the others
            impls[impl] = {"error": f"{type(e).__name__}: {str(e)[:400]}", "pass": False}
            if impl == "flex_attention" and device != "cuda":  # as tests/test_pack.py: no compiler for inductor on this CPU
                impls[impl] = {"skipped": f"flex_attention does not run on this CPU setup: {impls[impl]['error']}"}
        free_memory()
    ran = [v for v in impls.values() if "skipped" not in v]
    return {
        "rows": len(rows),
        "conversations": sizes.parity_conversations,
        "row_lengths": [len(r["input_ids"]) for r in rows],
        "impls": impls,
        "all_pass": bool(ran) and all(v.get("pass") for v in ran),
    }


# --- part 2: training throughput ---------------------------------------------------------------------


def bf16_peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def train_rows(sizes: Sizes, vocab: int, count: int) -> list[dict]:
    """The `count` fullest rows of random conversations packed first-fit decreasing."""
    lo, hi = sizes.train_conversation
    n = math.ceil(1.3 * count * sizes.train_row / ((lo + hi) / 2))  # enough tokens to fill `count` rows
    convs = random_conversations(n, (lo, hi), vocab, random.Random(1), prompt_share=0.6)
    rows = pack_rows(sorted(convs, key=lambda c: -len(c["input_ids"])), sizes.train_row)
    return sorted(rows, key=lambda r: -len(r["input_ids"]))[:count]


def training_flops(config, n_frozen: int, n_lora: int, segment_lengths: list[int]) -> tuple[float, float]:
    """Model FLOPs of LoRA training steps over these segments (useful work only: checkpointing's
    recomputation is not counted, as MFU is defined). Per token:
      frozen weights  2N forward + 2N backward: gradients w.r.t. activations only, a frozen weight gets
                      no weight gradient (4N, not full fine-tuning's 6N); N = every matmul weight, i.e.
                      every parameter but the input embedding (a lookup);
      LoRA weights    6 N_lora (forward, activation and weight gradients);
    plus attention: Q K^T and P V, 2 FLOPs per multiply-add, over each segment's causal (query, key)
    pairs (len^2 / 2), forward 2 d_attn len^2 per layer, backward twice that: 6 L d_attn sum(len^2).
    Returns (LoRA model FLOPs, the 6N-per-token full-fine-tuning convention + the same attention)."""
    tokens = sum(segment_lengths)
    d_attn = config.num_attention_heads * (getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    attention = 6 * config.num_hidden_layers * d_attn * sum(n * n for n in segment_lengths)
    return 4 * n_frozen * tokens + 6 * n_lora * tokens + attention, 6 * (n_frozen + n_lora) * tokens + attention


def lora_model(config, device: str, dtype: torch.dtype, attn: str):
    from peft import LoraConfig, get_peft_model

    base = random_model(config, device, dtype, attn)
    # r 16 / alpha 32 on every linear layer of the blocks; dropout as the train stage's default
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    return get_peft_model(base, lora)


def param_counts(model) -> tuple[int, int]:
    """(frozen matmul weights, trainable LoRA weights)."""
    embed = model.get_input_embeddings().weight
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad and p is not embed)
    return frozen, sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_step(model, optimizer, batch: dict) -> float:
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()  # a sync: the step has finished when this returns


def time_config(model, optimizer, batches: list[dict], sizes: Sizes, device: str) -> dict:
    """Warm-up steps, then timed steps until `train_steps` or the time budget."""
    for i in range(sizes.train_warmup):
        train_step(model, optimizer, batches[i % len(batches)])
    sync(device)
    tokens, steps, losses = 0, 0, []
    start = time.perf_counter()
    while steps < sizes.train_steps and (steps == 0 or time.perf_counter() - start < sizes.train_budget_s):
        batch = batches[(sizes.train_warmup + steps) % len(batches)]
        losses.append(train_step(model, optimizer, batch))
        tokens += int(batch["input_ids"].numel())  # one row per micro-batch, no padding: every token is real
        steps += 1
    sync(device)
    return {"steps": steps, "tokens": tokens, "seconds": time.perf_counter() - start, "loss_last": losses[-1]}


def run_config(model, optimizer, rows, impl: str, checkpointing: bool, sizes: Sizes, device: str, peak: float | None) -> dict:
    hf = model.get_base_model()
    hf.set_attn_implementation(impl)
    if checkpointing:
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf.activation_checkpointing_disable()
    collate = Collator(PAD, flatten=flattens(impl))
    batches = [to_device(collate([r]), device) for r in rows]
    free_memory()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated() / 2**30  # weights, and optimizer state once the first config has made it
    t = time_config(model, optimizer, batches, sizes, device)
    frozen, lora = param_counts(model)
    steps_rows = [rows[(sizes.train_warmup + i) % len(rows)] for i in range(t["steps"])]
    seg_lens = [b - a for r in steps_rows for a, b in segments(r["position_ids"])]
    flops, flops_6n = training_flops(hf.config, frozen, lora, seg_lens)
    achieved = flops / t["seconds"] / 1e12
    out = {
        "impl": impl,
        "layout": "flattened" if flattens(impl) else "padded, batch of 1",
        "gradient_checkpointing": checkpointing,
        **t,
        "tokens_per_s": t["tokens"] / t["seconds"],
        "model_tflops_per_s": achieved,
        "mfu": achieved / peak if peak else "unknown",
        "mfu_6n_convention": flops_6n / t["seconds"] / 1e12 / peak if peak else "unknown",
    }
    if device == "cuda":
        out |= {"memory_held_before_steps_gib": held, "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    return out


def train_impls(device: str) -> list[str]:
    """flash-attention 2 where it imports, else sdpa (padded, a batch of 1); and sdpa_varlen, the
    train stage's default (per-segment causal sdpa, which picks torch's own flash kernel on CUDA)."""
    first = "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") is not None else "sdpa"
    return [first, "sdpa_varlen"]


def part_train(sizes: Sizes, device: str) -> dict:
    from transformers import MistralConfig

    register_sdpa_varlen()
    config = MistralConfig(**sizes.train_model)
    impls = train_impls(device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    start = time.perf_counter()
    model = lora_model(config, device, dtype, impls[0])
    model.train()
    build_s = time.perf_counter() - start
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=device == "cuda")
    rows = train_rows(sizes, config.vocab_size, sizes.train_warmup + sizes.train_steps)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = bf16_peak_tflops(gpu) if device == "cuda" else None
    frozen, lora = param_counts(model)
    configs = {}
    for impl in impls:
        for checkpointing in (False, True):
            name = f"{impl}{' + checkpointing' if checkpointing else ''}"
            try:
                configs[name] = run_config(model, optimizer, rows, impl, checkpointing, sizes, device, peak)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory without checkpointing: the next config still runs
                configs[name] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
            optimizer.zero_grad(set_to_none=True)
            free_memory()
            print(f"  train {name}: {configs[name]}", flush=True)
    no_ckpt = [c["tokens_per_s"] for c in configs.values() if "tokens_per_s" in c and not c["gradient_checkpointing"]]
    return {
        "model": "random Mistral-7B shape" if sizes.train_model is MISTRAL_7B else "random tiny Mistral shape",
        "dtype": str(dtype).removeprefix("torch."),
        "params_frozen_matmul": frozen,
        "params_lora": lora,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": LORA_TARGETS},
        "row_tokens": [len(r["input_ids"]) for r in rows],
        "conversations_per_row": [len(segments(r["position_ids"])) for r in rows],
        "build_seconds": build_s,
        "bf16_peak_tflops": peak if peak else "unknown",
        "mfu_formula": "(4 N_frozen + 6 N_lora) tokens + 6 L d_attn sum(segment_len^2), over the bf16 dense peak",
        "configs": configs,
        "target_tokens_per_s_without_checkpointing": 10000,
        "best_tokens_per_s_without_checkpointing": max(no_ckpt, default=None),
        "meets_target": bool(no_ckpt) and max(no_ckpt) >= 10000,
    }


# --- part 3: evaluate loop ------------------------------------------------------------------------


@dataclass
class Question:
    """A scripted conversation: its prompt, then the tool turn that answers each forced retrieve call."""

    prompt: list[int]
    tools: list[list[int]] = field(default_factory=list)


def scripted_questions(sizes: Sizes, vocab: int) -> list[Question]:
    rng = random.Random(2)

    def ids(lo: int, hi: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))]

    return [
        Question(ids(*sizes.eval_prompt), [ids(*sizes.eval_tool) for _ in range(sizes.eval_forced)]) for _ in range(sizes.eval_questions)
    ]


def greedy(model, ids: torch.Tensor, mask: torch.Tensor, cache, tokens: int):
    """Exactly `tokens` new tokens per row, greedy: the engine's scripted (fixed_length) mode."""
    with torch.no_grad():
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            past_key_values=cache,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=PAD,
            return_dict_in_generate=True,
            use_cache=True,
        )


def pad_left(rows: list[list[int]], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def batched_reuse(model, questions: list[Question], batch: int, tokens: int, device: str, deadline: float) -> list[list[int]]:
    """qa_forge.eval.engines.TransformersEngine(reuse_cache=True, fixed_length=True) on token ids (the
    engine imports the chat renderer, which needs pydantic): a group of conversations decodes together;
    between turns each keeps its KV cache, and only its new tool turn, left-padded, is appended
    after the cached columns. Positions follow the attention mask, so each conversation sits at
    0..n-1 as it would alone. Returns each conversation's own tokens at the end."""
    finals = []
    for start in range(0, len(questions), batch):
        if time.perf_counter() > deadline:
            break
        group = questions[start : start + batch]
        ids, mask = pad_left([q.prompt for q in group], device)
        cache = None
        for turn in range(len(group[0].tools) + 1):
            out = greedy(model, ids, mask, cache, tokens)
            mask = torch.cat([mask, torch.ones_like(out.sequences[:, ids.shape[1] :])], 1)
            ids, cache = out.sequences, out.past_key_values
            if turn < len(group[0].tools):
                new_ids, new_mask = pad_left([q.tools[turn] for q in group], device)
                ids, mask = torch.cat([ids, new_ids], 1), torch.cat([mask, new_mask], 1)
        finals += [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    return finals


def one_at_a_time(model, questions: list[Question], tokens: int, device: str, deadline: float) -> list[list[int]]:
    """The seeds' loop: one conversation at a time, the whole conversation re-encoded every turn."""
    finals = []
    for q in questions:
        if time.perf_counter() > deadline:
            break
        seq = list(q.prompt)
        for turn in range(len(q.tools) + 1):
            ids = torch.tensor([seq], device=device)
            seq = greedy(model, ids, torch.ones_like(ids), None, tokens).sequences[0].tolist()
            if turn < len(q.tools):
                seq += q.tools[turn]
        finals.append(seq)
    return finals


def timed(loop, *args, budget: float) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    finals = loop(*args, deadline=start + budget)
    return finals, time.perf_counter() - start


def part_eval(sizes: Sizes, device: str) -> dict:
    from transformers import LlamaConfig

    config = LlamaConfig(**sizes.eval_model, pad_token_id=PAD, bos_token_id=1, eos_token_id=2)
    # fp32 as evaluate.dtype in params.yaml: in bf16 a random model's near-tied logits flip with the
    # batch shape, and a 135M model's decoding is bound by kernel launches either way
    model = random_model(config, device, torch.float32, "sdpa").eval()
    questions = scripted_questions(sizes, config.vocab_size)
    tokens = sizes.eval_tokens
    one_at_a_time(model, questions[:1], tokens, device, float("inf"))  # warm-up: CUDA context, kernels, allocator
    batched_reuse(model, questions[:2], 2, tokens, device, float("inf"))
    batched, batched_s = timed(batched_reuse, model, questions, sizes.eval_batch, tokens, device, budget=sizes.eval_budget_s)
    single, single_s = timed(one_at_a_time, model, questions, tokens, device, budget=sizes.eval_budget_s)
    qps = {"batched_reuse": len(batched) / batched_s, "one_at_a_time_reencode": len(single) / single_s}
    speedup = qps["batched_reuse"] / qps["one_at_a_time_reencode"]
    compared = min(len(batched), len(single))  # one mode may have stopped at its time budget
    return {
        "model": "random SmolLM2-135M shape" if sizes.eval_model is SMOLLM2_135M else "random tiny Llama shape",
        "dtype": "float32",
        "questions": len(questions),
        "batch": sizes.eval_batch,
        "reply_tokens": tokens,
        "forced_retrieve_calls": sizes.eval_forced,
        "modes": {
            "batched_reuse": {"questions_done": len(batched), "seconds": batched_s, "questions_per_s": qps["batched_reuse"]},
            "one_at_a_time_reencode": {
                "questions_done": len(single),
                "seconds": single_s,
                "questions_per_s": qps["one_at_a_time_reencode"],
            },
        },
        "speedup": speedup,
        "target_speedup": 5.0,
        "meets_target": speedup >= 5.0,
        "questions_compared": compared,
        "identical_final_tokens": sum(a == b for a, b in zip(batched[:compared], single[:compared])),
    }


# --- results ----------------------------------------------------------------------------------------


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("transformers", "peft", "accelerate", "flash_attn"):
        try:
            out[dist] = importlib.metadata.version(dist.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def nvidia_driver() -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], check=False, capture_output=True, text=True, timeout=20
        )
        return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def hardware(device: str) -> dict:
    out = {"device": device, "platform": platform.platform(), "cpu_count": os.cpu_count(), **versions(), "cuda": torch.version.cuda}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out |= {
            "gpu": props.name,
            "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
            "driver": nvidia_driver(),
        }
    return out


def imports() -> dict:
    """What this process loaded that the GPU host lacks, and which repo modules it pulled in."""
    return {
        "absent_on_gpu_host_but_loaded": [m for m in MODULES_ABSENT_ON_GPU_HOST if m in sys.modules],
        "qa_forge_modules": sorted(m for m in sys.modules if m.split(".")[0] == "qa_forge"),
    }


def write_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def record(path: Path, name: str, result: dict, header: dict) -> None:
    """Merge one part's result into the results file (parts from earlier runs stay)."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    data |= header | {"imports": imports()}
    data.setdefault("parts", {})[name] = result
    write_atomically(path, data)


def run_part(name: str, sizes: Sizes, device: str) -> dict:
    parts = {"packing": part_packing, "train": part_train, "eval": part_eval}
    start = time.perf_counter()
    try:
        result = {"ok": True, **parts[name](sizes, device)}
    except Exception as e:  # noqa: BLE001 - record the failure, go on with the next part
        result = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:1000]}", "traceback": traceback.format_exc()[-3000:]}
    free_memory()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    return result | {
        "seconds": time.perf_counter() - start,
        "ran_on": gpu,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def fit_to_time(sizes: Sizes, name: str, left_s: float) -> Sizes:
    """Shrink a part's time budgets to what is left of the run's (a slower GPU, a long compile)."""
    if name == "train":  # four configurations, after about a minute of building and warm-up steps
        return replace(sizes, train_budget_s=min(sizes.train_budget_s, max(2.0, (left_s - 60) / 4)))
    if name == "eval":  # two modes
        return replace(sizes, eval_budget_s=min(sizes.eval_budget_s, max(2.0, (left_s - 20) / 2)))
    return sizes


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--cpu-smoke", action="store_true", help="every part at tiny sizes on CPU (checks the script, measures no GPU)")
    ap.add_argument("--smoke-flex", action="store_true", help="with --cpu-smoke: also try flex_attention (compiles ~40 s on CPU)")
    ap.add_argument("--time-budget-s", type=float, default=330.0, help="the whole run (the GPU loan allows 6 minutes)")
    ap.add_argument("--out", type=Path, help=f"results file (default {GPU_RESULTS.relative_to(ROOT)}; with --cpu-smoke {SMOKE_RESULTS})")
    a = ap.parse_args()
    a.out = a.out or (SMOKE_RESULTS if a.cpu_smoke else GPU_RESULTS)
    if a.cpu_smoke and a.out.resolve() == GPU_RESULTS.resolve():
        ap.error(f"--cpu-smoke never writes {GPU_RESULTS.relative_to(ROOT)}: its numbers are no GPU's")
    if not a.cpu_smoke and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU host, or pass --cpu-smoke to check the script here")
    return a


def main() -> int:
    a = parse_args()
    device = "cpu" if a.cpu_smoke else "cuda"
    sizes = replace(SMOKE, flex=a.smoke_flex) if a.cpu_smoke else GPU
    # the parity criteria are fp32 to 1e-4: no TF32 in matmuls (bf16 parts are unaffected)
    torch.set_float32_matmul_precision("highest")
    header = {"script": "bench/gpu_check.py", "mode": "cpu-smoke" if a.cpu_smoke else "gpu", "hardware": hardware(device)}
    print(json.dumps(header["hardware"]), flush=True)
    failed, deadline = [], time.perf_counter() + a.time_budget_s
    for name in a.parts:
        left = deadline - time.perf_counter()
        print(f"{name} ... ({left:.0f} s left)", flush=True)
        if left < 30:
            result = {"ok": False, "error": f"not started: {a.time_budget_s:.0f} s time budget spent"}
        else:
            result = run_part(name, fit_to_time(sizes, name, left), device)
        record(a.out, name, result, header)
        print(f"{name}: {json.dumps(result, default=str)[:2000]}", flush=True)
        failed += [name] if not result["ok"] else []
    loaded = imports()["absent_on_gpu_host_but_loaded"]
    if loaded:  # the GPU host would have failed to import these
        print(f"loaded modules the GPU host lacks: {loaded}", file=sys.stderr)
    print(f"results: {a.out}" + (f"; failed parts: {failed}" if failed else ""), flush=True)
    return 1 if failed or loaded else 0


if __name__ == "__main__":
    sys.exit(main())
