"""Bench: training throughput on CPU, packed rows vs padding to the batch's longest.

Real (non-pad) tokens per second and peak memory of training steps (forward + backward + AdamW
step) on the same conversations — the same real-token budget — with:

  padded          batches of --batch conversations, right-padded to the batch's longest, a 2D
                  attention mask, sdpa (what a trainer does without packing)
  packed L / sdpa     rows of ≤ L tokens from the pack stage (best-fit decreasing), no mask: transformers
                  builds a dense block-diagonal mask from the position ids (N² scores per row)
  packed L / eager    the same mask, explicit softmax
  packed L / sdpa_varlen  qa_forge.training.attention: per-segment causal sdpa, off-diagonal blocks never computed
  packed L / flex_attention  BlockMask (block-sparse); tried with one step, recorded if it cannot train

Model: the SmolLM2-135M shape (hidden 576, 9 / 3 heads, MLP 1536, vocab 49152, tied), random init,
--layers of its 30 layers (default 6 to fit the ~6 minute budget on 2 cores), LoRA r=8 on all
linear layers (the train stage's default) or --mode full. Steps of the configs are interleaved
(padded, packed, ... , padded, packed, ...) so that other load on the machine hits them alike.
Memory: peak RSS sampled every 2 ms during each step (psutil), freed memory returned to the OS
(malloc_trim) before each step; reported absolute and above the pre-step level.

    .venv/bin/python bench/train_throughput.py [--layers 6] [--conversations 12] [--mode lora]

Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# OpenMP threads that spin while waiting burn the CPU other processes need, and lose it when they
# are descheduled: on this shared 2-core machine a step took 8.5-15.7 s with the default policy and
# 5.1-5.5 s with PASSIVE. Set before torch loads; override from the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import psutil
import torch

from qa_forge.core.io import read_records, write_json
from qa_forge.data.pack import encode, fit, load_tokenizer, pack
from qa_forge.training.attention import register as register_varlen
from qa_forge.training.collate import collate

SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 2 ms."""

    def __init__(self):
        self.proc = psutil.Process()
        self.libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None

    def __enter__(self):
        if self.libc is not None:
            self.libc.malloc_trim(0)
        self.start = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def conversations(n: int, seed: int, tokenizer_dir: Path, data: str, max_tokens: int) -> tuple[list[dict], str]:
    """n conversations of ≤ max_tokens (seeded sample), tokenised as the pack stage does."""
    if data == "sources" and (ROOT.parent / "shared" / "data").is_dir():
        sys.path.insert(0, str(ROOT / "bench"))
        from packing import load_records  # the packing bench's records: the six train sources + data/filtered

        records, where = load_records()[0], "../shared/data train sources + data/filtered (as bench/packing.py)"
    elif (ROOT / "data" / "filtered" / "kept.jsonl").is_file():
        records, where = read_records(ROOT / "data" / "filtered" / "kept.jsonl"), "data/filtered/kept.jsonl"
    else:  # a fresh checkout: the records fetch makes from data/samples
        from tests.smollm2 import sample_records

        records, where = sample_records(), "data/samples (via fetch)"
    tok, _ = load_tokenizer(tokenizer_dir)
    out = []  # only conversations that every config keeps whole: all train on the same tokens
    for r in random.Random(seed).sample(records, len(records)):
        ex = encode([r], tok)[0]
        if len(ex["input_ids"]) <= max_tokens:
            out.append(ex)
        if len(out) == n:
            break
    return out, where


def padded_batches(examples: list[dict], batch: int, pad_id: int) -> list[dict]:
    out = []
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        n = max(len(e["input_ids"]) for e in chunk)
        out.append(
            {
                "input_ids": torch.tensor([e["input_ids"] + [pad_id] * (n - len(e["input_ids"])) for e in chunk]),
                "labels": torch.tensor([e["labels"] + [-100] * (n - len(e["labels"])) for e in chunk]),
                "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (n - len(e["input_ids"])) for e in chunk]),
            }
        )
    return out


def packed_batches(examples: list[dict], max_len: int, rows_per_step: int, pad_id: int) -> list[dict]:
    rows = pack(fit(examples, max_len, "truncate")[0], max_len)
    return [collate(rows[i : i + rows_per_step], pad_id) for i in range(0, len(rows), rows_per_step)]


def build_model(layers: int, mode: str, seed: int):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = dict(SMOLLM2_135M, num_hidden_layers=layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg), attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=LORA_TARGETS))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(params, lr=1e-4), sum(p.numel() for p in params), cfg


def set_attention(model, impl: str) -> None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.set_attn_implementation(impl)


def step(model, opt, batch: dict) -> None:
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def warm_batch(batch: dict, n: int = 192) -> dict:
    """The first n tokens of a batch: warms the code path (mask building, kernels) cheaply."""
    return {k: (v[:, :n] if torch.is_tensor(v) and v.dim() == 2 else v) for k, v in batch.items()}


def hardware() -> dict:
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.is_available(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def try_flex(model, opt, batch: dict) -> dict:
    """One flex_attention training step; on CPU torch raises for the backward."""
    set_attention(model, "flex_attention")
    t = time.perf_counter()
    try:
        step(model, opt, warm_batch(batch))
        return {"trains_on_cpu": True, "first_step_s": round(time.perf_counter() - t, 1)}
    except Exception as e:  # noqa: BLE001
        return {
            "trains_on_cpu": False,
            "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
            "seconds_spent": round(time.perf_counter() - t, 1),
            "note": "forward runs on CPU (tests/test_pack.py::test_flex_attention_cpu); backward is GPU-only in this torch",
        }
    finally:
        set_attention(model, "sdpa")


def markdown(out: dict) -> str:
    m, d, h = out["model"], out["data"], out["hardware"]
    lines = [
        f"# Training throughput on CPU: packed vs padded ({m['shape']}, {m['layers']} layers, {m['mode']})",
        "",
        (
            f"{d['conversations']} conversations, {d['real_tokens']} real tokens ({d['source']}; {d['selection']}); padded batches of {d['padded_batch']}. "
            f"{h['cpu']}, {h['cores']} cores, torch {h['torch']} ({h['torch_threads']} threads, OMP_WAIT_POLICY={h['OMP_WAIT_POLICY']}); "
            f"load average {out['load_average']['before'][0]} → {out['load_average']['after'][0]} (shared machine; steps interleaved)."
        ),
        "",
        "| config | attention | steps | slot efficiency | real tokens/s | × padded | peak RSS MB | above step start MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in out["results"]:
        lines.append(
            f"| {r['config']} | {r['attn_implementation']} | {r['steps']} | {r['slot_efficiency']:.1%} | {r['real_tokens_per_s']} | "
            f"{r['speedup_vs_padded']:.2f} | {r['peak_rss_mb']} | {r['peak_rss_above_step_start_mb']} |"
        )
    if out.get("flex_attention"):
        lines += ["", f"flex_attention: {out['flex_attention']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6, help="decoder layers of SmolLM2-135M's 30 (same width)")
    ap.add_argument("--mode", choices=["lora", "full"], default="lora")
    ap.add_argument("--conversations", type=int, default=16)
    ap.add_argument("--data", choices=["sources", "filtered"], default="sources", help="sources: a sample of bench/packing.py's records")
    ap.add_argument("--batch", type=int, default=4, help="conversations per padded batch")
    ap.add_argument("--rounds", type=int, default=1, help="timed passes over each config's batches")
    ap.add_argument(
        "--configs",
        default="padded,1024/sdpa,2048/sdpa,2048/eager,1024/sdpa_varlen,2048/sdpa_varlen,4096/sdpa_varlen",
        help="comma-separated: padded, or MAX_LEN/ATTENTION",
    )
    ap.add_argument("--flex", action=argparse.BooleanOptionalAction, default=True, help="try one flex_attention training step")
    ap.add_argument("--tokenizer", type=Path, default=ROOT / "models" / "base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput.json")
    a = ap.parse_args()
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    register_varlen()

    specs = a.configs.split(",")
    shortest = min([int(x.split("/")[0]) for x in specs if x != "padded"], default=10**9)
    examples, source = conversations(a.conversations, a.seed, a.tokenizer, a.data, shortest)
    pad_id = SMOLLM2_135M["pad_token_id"]
    configs: dict[str, dict] = {}
    for spec in specs:
        if spec == "padded":
            batches, impl, max_len = padded_batches(examples, a.batch, pad_id), "sdpa", None
        else:
            length, impl = spec.split("/")
            max_len = int(length)
            # about the same slots per step as a padded batch (batch × ~512): 1024 → 2 rows, ≥ 2048 → 1
            batches = packed_batches(examples, max_len, max(1, a.batch * 512 // max_len), pad_id)
        configs[spec] = {
            "attn": impl,
            "max_seq_length": max_len,
            "batches": batches,
            "wall": 0.0,
            "cpu": 0.0,
            "peak_rss": 0,
            "peak_above_start": 0,
        }

    # real tokens: the conversations (all fit every max_seq_length: see conversations())
    real_total = sum(len(e["input_ids"]) for e in examples)
    for name, c in configs.items():
        if c["max_seq_length"] is not None:
            kept = fit(examples, c["max_seq_length"], "truncate")[0]
            c["real_tokens"] = sum(len(e["input_ids"]) for e in kept)
        else:
            c["real_tokens"] = real_total
        c["slots"] = sum(int(b["input_ids"].numel()) for b in c["batches"])

    model, opt, trainable, cfg = build_model(a.layers, a.mode, a.seed)
    flex = try_flex(model, opt, configs[next(k for k in configs if k != "padded")]["batches"][0]) if a.flex else None
    for c in configs.values():  # warm-up: each path once, untimed
        set_attention(model, c["attn"])
        step(model, opt, warm_batch(c["batches"][0]))
    longest = max(len(c["batches"]) for c in configs.values())
    for _ in range(a.rounds):
        for i in range(longest):
            for c in configs.values():
                if i >= len(c["batches"]):
                    continue
                set_attention(model, c["attn"])
                with PeakRSS() as mem:
                    w, p = time.perf_counter(), time.process_time()
                    step(model, opt, c["batches"][i])
                    c["wall"] += time.perf_counter() - w
                    c["cpu"] += time.process_time() - p
                c["peak_rss"] = max(c["peak_rss"], mem.peak)
                c["peak_above_start"] = max(c["peak_above_start"], mem.peak - mem.start)

    base = configs.get("padded")
    rows = []
    for name, c in configs.items():
        tps = a.rounds * c["real_tokens"] / c["wall"]
        rows.append(
            {
                "config": name,
                "attn_implementation": c["attn"],
                "max_seq_length": c["max_seq_length"],
                "steps": len(c["batches"]),
                "real_tokens": c["real_tokens"],
                "slots": c["slots"],
                "slot_efficiency": round(c["real_tokens"] / c["slots"], 4),
                "seconds": round(c["wall"], 1),
                "real_tokens_per_s": round(tps, 1),
                "cpu_seconds_per_1k_tokens": round(1000 * c["cpu"] / (a.rounds * c["real_tokens"]), 2),
                "speedup_vs_padded": round(tps / (a.rounds * base["real_tokens"] / base["wall"]), 3) if base else None,
                "peak_rss_mb": round(c["peak_rss"] / 2**20),
                "peak_rss_above_step_start_mb": round(c["peak_above_start"] / 2**20),
            }
        )
    packed = [r for r in rows if r["config"] != "padded"]
    best = max(packed, key=lambda r: r["real_tokens_per_s"]) if packed else None
    out = {
        "what": "training steps (forward + backward + AdamW) on CPU: real tokens/s, packed vs padded to the batch's longest, same conversations",
        "model": {
            "shape": "SmolLM2-135M (random init)",
            "layers": f"{a.layers} of 30",
            "mode": a.mode,
            "trainable_params": trainable,
            "config": cfg,
        },
        "data": {
            "source": source,
            "conversations": len(examples),
            "real_tokens": real_total,
            "padded_batch": a.batch,
            "rounds": a.rounds,
            "selection": f"seeded sample of conversations of ≤ {shortest} tokens (the smallest max_seq_length benched), so every config trains on the same tokens",
        },
        "results": rows,
        "best_packed": best and {k: best[k] for k in ("config", "real_tokens_per_s", "speedup_vs_padded")},
        "packing_wins": bool(best and best["speedup_vs_padded"] >= 1.0),
        "flex_attention": flex,
        "hardware": hardware(),
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
            "note": "other processes share the 2 cores: configs are interleaved step by step so they see the same load",
        },
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    write_json(a.out, out)
    a.out.with_suffix(".md").write_text(markdown(out))
    print(f"{'config':22} {'attn':14} {'steps':>5} {'slot eff':>8} {'tok/s':>7} {'× padded':>8} {'peak RSS MB':>11} {'+step MB':>8}")
    for r in rows:
        print(
            f"{r['config']:22} {r['attn_implementation']:14} {r['steps']:5} {r['slot_efficiency']:8.1%} {r['real_tokens_per_s']:7.1f} {r['speedup_vs_padded']:8.3f} {r['peak_rss_mb']:11} {r['peak_rss_above_step_start_mb']:8}"
        )
    print(f"flex_attention: {flex}\nbest packed: {out['best_packed']}  ({out['seconds_total']} s, load {out['load_average']})")


if __name__ == "__main__":
    main()
