"""Bench: which training configuration makes SmolLM2-135M-Instruct learn most per CPU minute on the
rule traces (issue 13's `cpu-real` profile), measured on a VALIDATION split of the training data.

Data: rule traces (qa_forge.traces.compose_all) of the public train samples in ../shared/data
(HotpotQA train_100, MuSiQue train_full_first100, 2WikiMultihopQA train_500, and a seeded sample of
SQuAD v2 train_11articles: --squad-answerable answerable + --squad-unanswerable unanswerable). The
records are split with the pack library's seeded id hash (qa_forge.data.pack.split, pack.valid_fraction);
of the held-out records a seeded, per-source stratified subset (--valid-per-source) is the validation
set, packed once at --valid-length tokens (no conversation cut), so every configuration and the
untrained base are scored on the same rows whatever their training length. Evaluation data (dev
files) is never read.

Training: qa_forge.training.recipe.finetune with params.yaml's `train` section, updated per
configuration (mode, lr, LoRA r, pack.max_seq_length) and with `max_tokens` sized from a throughput
(real tokens/s; the first configuration uses --tokens-per-s, later ones the figure measured on the
same mode) to --minutes of training. Eval only at the end (eval_steps null), no intermediate
checkpoints, checkpoints in a temp folder, resume never. A time guard stops a run at 1.5x the
budget. Baseline: the untrained base on the same valid rows (a LoRA wrapper with B = 0 is the base).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_real_sweep.py [--minutes 7] [--configs a,b,c,d] [--stop-after 16:05]
    HF_HUB_OFFLINE=1 .venv/bin/python bench/cpu_real_sweep.py --configs e --append   # more configurations, same data and baseline

Configurations: a LoRA r=16 lr 2e-4, b full lr 5e-5, c LoRA r=64 lr 3e-4 (all at length 1024), d the
better of a / b at length 2048, e = c at length 2048 (added after the first sweep).

Writes bench/results/cpu_real_sweep.json after every configuration (a partial sweep is a result).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from qa_forge.core.io import load_section, write_json
from qa_forge.data.pack import PackParams, load_tokenizer, pack_records, split, write_outputs
from qa_forge.data.sources import hotpotqa as hotpotqa_src
from qa_forge.data.sources import musique as musique_src
from qa_forge.data.sources import twowiki as twowiki_src
from qa_forge.traces import compose_all
from qa_forge.traces import squad_v2 as squad_traces
from qa_forge.training.params import TrainParams

SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "cpu_real_sweep.json"
BASE = ROOT / "models" / "base"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# (name, what, train updates, pack max_seq_length); "d" is filled in from the better of a / b
CONFIGS = {
    "a": ("LoRA r=16 all linear, lr 2e-4, length 1024", {"mode": "lora", "learning_rate": 2e-4, "lora_r": 16}, 1024),
    "b": ("full fine-tuning, lr 5e-5, length 1024", {"mode": "full", "learning_rate": 5e-5}, 1024),
    "c": ("LoRA r=64 all linear, lr 3e-4, length 1024", {"mode": "lora", "learning_rate": 3e-4, "lora_r": 64}, 1024),
    # added after the first sweep (c beat the shorter b): c at d's length, so full vs LoRA r=64 is compared at one length and budget
    "e": ("LoRA r=64 all linear, lr 3e-4, length 2048", {"mode": "lora", "learning_rate": 3e-4, "lora_r": 64}, 2048),
}


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return os.path.relpath(Path(path).resolve(), ROOT)


def load_records(args) -> tuple[list, dict]:
    """Rule-trace records of every source, and per-source counts / drop reasons."""
    raw = {
        "hotpotqa": (hotpotqa_src.read_local(SHARED / "hotpotqa" / "train_100.json"), "hotpotqa/train_100.json"),
        "musique": (musique_src.read_local(SHARED / "musique" / "train_full_first100.jsonl"), "musique/train_full_first100.jsonl"),
        "2wikimultihopqa": (twowiki_src.read_local(SHARED / "2wikimultihopqa" / "train_500.json"), "2wikimultihopqa/train_500.json"),
    }
    squad = squad_traces.read_local(SHARED / "squad_v2" / "train_11articles.json")
    rng = random.Random(args.seed)
    answerable = [it for it in squad if it.get("answers")]
    unanswerable = [it for it in squad if not it.get("answers")]
    pick = rng.sample(answerable, min(args.squad_answerable, len(answerable))) + rng.sample(
        unanswerable, min(args.squad_unanswerable, len(unanswerable))
    )
    raw["squad_v2"] = (pick, f"squad_v2/train_11articles.json ({len(answerable)} answerable, {len(unanswerable)} unanswerable in the file)")
    records, info = [], {}
    for src, (items, where) in raw.items():
        recs, drops = compose_all(src, items)
        records += recs
        info[src] = {"file": "../shared/data/" + where, "items": len(items), "records": len(recs), "dropped": dict(drops)}
    return records, info


def prepare_data(args, tok, template_from, pack_p: PackParams, tmp: Path, lengths: list[int]) -> tuple[dict, dict]:
    """Train records / valid rows; returns ({length: packed dir}, data info)."""
    records, info = load_records(args)
    train_recs, held = split(records, pack_p.valid_fraction, pack_p.seed, key=lambda r: r.id)
    rng = random.Random(args.seed)
    by_src: dict[str, list] = {}
    for r in held:
        by_src.setdefault(r.src, []).append(r)
    valid_recs = [r for src in sorted(by_src) for r in rng.sample(by_src[src], min(args.valid_per_source, len(by_src[src])))]
    no_split = {"valid_fraction": 0.0}
    vp = pack_p.model_copy(update={**no_split, "max_seq_length": args.valid_length})
    valid_rows, valid_info, _ = pack_records(valid_recs, tok, vp, template_from)
    data = {
        "sources": info,
        "records": len(records),
        "held_out_records": len(held),
        "held_out_by_source": {k: len(v) for k, v in sorted(by_src.items())},
        "train_records": len(train_recs),
        "valid": {
            "records": len(valid_recs),
            "by_source": dict(Counter(r.src for r in valid_recs)),
            "max_seq_length": args.valid_length,
            "rows": len(valid_rows["train"]),
            "tokens": valid_info["tokens"],
            "labelled_tokens": valid_info["labelled_tokens"],
            "overlong": valid_info["overlong"],
        },
        "packed": {},
    }
    dirs = {}
    for length in lengths:
        tp = pack_p.model_copy(update={**no_split, "max_seq_length": length})
        rows, pinfo, conv_lengths = pack_records(train_recs, tok, tp, template_from)
        d = tmp / f"packed_{length}"
        write_outputs(d, {"train": rows["train"], "valid": valid_rows["train"]}, tok.chat_template)
        dirs[length] = d
        data["packed"][str(length)] = {
            k: pinfo[k]
            for k in (
                "conversations",
                "tokens",
                "tokens_before",
                "length",
                "overlong",
                "rows_train",
                "packing_efficiency",
                "labelled_fraction",
            )
        }
        # conversation length per source (tokens), to spot rule traces that render long
        per_src: dict[str, list[int]] = {}
        for r, n in zip(train_recs, conv_lengths, strict=True):
            per_src.setdefault(r.src, []).append(n)
        data["packed"][str(length)]["mean_conversation_tokens_by_source"] = {
            k: round(sum(v) / len(v), 1) for k, v in sorted(per_src.items())
        }
        data["packed"][str(length)]["over_length_by_source"] = {k: sum(n > length for n in v) for k, v in sorted(per_src.items())}
    return dirs, data


def train_params(base: TrainParams, update: dict, max_tokens: int | None, ckpt: Path) -> TrainParams:
    u = dict(update)
    r = u.pop("lora_r", None)
    lora = base.lora.model_copy(update={"r": r, "alpha": 2 * r, "target_modules": ALL_LINEAR}) if r else base.lora
    return base.model_copy(
        update={
            **u,
            "lora": lora,
            "max_tokens": max_tokens,
            "eval_steps": None,
            "save_steps": 10**6,
            "save_total_limit": 1,
            "resume": "never",
            "checkpoint_dir": str(ckpt),
            "num_train_epochs": 3,
        }
    )


def time_guard(seconds: float):
    from transformers import TrainerCallback

    class Guard(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.fired = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if self.t0 and time.time() - self.t0 > seconds:
                control.should_training_stop = True
                self.fired = True
            return control

    return Guard()


def loss_curve(metrics_dir: Path) -> list[list[float]]:
    """[step, tokens, train loss] rows from dvclive's plots."""
    loss_f = metrics_dir / "plots" / "metrics" / "train" / "loss.tsv"
    tok_f = metrics_dir / "plots" / "metrics" / "train" / "tokens.tsv"
    if not loss_f.is_file():
        return []
    losses = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(loss_f.open(), delimiter="\t")}
    toks = {int(r["step"]): int(float(r["tokens"])) for r in csv.DictReader(tok_f.open(), delimiter="\t")} if tok_f.is_file() else {}
    return [[s, toks.get(s), round(v, 4)] for s, v in sorted(losses.items())]


def baseline_eval(p: TrainParams, packed: Path, tmp: Path) -> dict:
    """The untrained base on the valid rows: the recipe's setup (LoRA, B = 0: the base's outputs), evaluate only."""
    from qa_forge.training.recipe import setup

    t0 = time.time()
    run = setup(p, packed, BASE, tmp / "metrics_base", [])
    loss = run.trainer.evaluate().get("eval_loss")
    if run.live is not None:
        run.live.end()
    return {"eval_loss": round(loss, 4), "seconds": round(time.time() - t0, 1)}


def run_config(name: str, what: str, p: TrainParams, packed: Path, tmp: Path, length: int, budget_s: float, tps_used: float) -> dict:
    from qa_forge.training.recipe import finetune

    out, mdir = tmp / f"out_{name}", tmp / f"metrics_{name}"
    guard = time_guard(budget_s * 1.5)
    t0 = time.time()
    s = finetune(p, packed, BASE, out, mdir, callbacks=[guard])
    wall = time.time() - t0
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(Path(p.checkpoint_dir), ignore_errors=True)
    return {
        "config": name,
        "what": what,
        "mode": p.mode,
        "learning_rate": p.learning_rate,
        "lora_r": p.lora.r if p.mode != "full" else None,
        "lora_alpha": p.lora.alpha if p.mode != "full" else None,
        "max_seq_length": length,
        "batch": f"{p.per_device_train_batch_size} x {p.gradient_accumulation_steps} accumulation",
        "lr_scheduler_type": p.lr_scheduler_type,
        "max_tokens": p.max_tokens,
        "sized_from_tokens_per_s": tps_used,
        "global_step": s["global_step"],
        "max_steps": s["max_steps"],
        "tokens_seen": s["tokens_seen"],
        "train_seconds": s["train_seconds"],
        "tokens_per_second": s["tokens_per_second"],
        "wall_seconds_incl_load_eval_save": round(wall, 1),
        "first_loss": s["first_loss"],
        "final_loss": s["final_loss"],
        "eval_loss": round(s["eval_loss"], 4) if s["eval_loss"] is not None else None,
        "stopped_by_time_guard": guard.fired,
        "loss_curve": loss_curve(mdir),
    }


def score(results: list[dict], base_loss: float | None) -> dict:
    """Per configuration: eval-loss drop from the base per train minute; the best of them."""
    rows = [r for r in results if r.get("eval_loss") is not None]
    if not rows or base_loss is None:
        return {}
    for r in rows:
        r["eval_loss_drop"] = round(base_loss - r["eval_loss"], 4)
        r["eval_loss_drop_per_train_minute"] = round(r["eval_loss_drop"] / (r["train_seconds"] / 60), 4)
    best_drop = max(rows, key=lambda r: r["eval_loss_drop_per_train_minute"])
    lowest = min(rows, key=lambda r: r["eval_loss"])
    return {
        "lowest_eval_loss": {"config": lowest["config"], "eval_loss": lowest["eval_loss"], "train_seconds": lowest["train_seconds"]},
        "largest_eval_loss_drop_per_train_minute": {
            "config": best_drop["config"],
            "per_minute": best_drop["eval_loss_drop_per_train_minute"],
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=7.0, help="training minutes per configuration (sizes max_tokens)")
    ap.add_argument(
        "--tokens-per-s",
        type=float,
        default=110.0,
        help="throughput prior for the first run of a mode (measured here: LoRA r=16 at 1024, ~110)",
    )
    ap.add_argument("--configs", default="a,b,c,d")
    ap.add_argument("--stop-after", default="16:05", help="UTC HH:MM: no configuration starts after it")
    ap.add_argument("--squad-answerable", type=int, default=300)
    ap.add_argument("--squad-unanswerable", type=int, default=150)
    ap.add_argument("--valid-per-source", type=int, default=3)
    ap.add_argument("--valid-length", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--append", action="store_true", help="add the configurations to the results file's (same data, baseline kept)")
    args = ap.parse_args()

    import torch
    import transformers

    now = datetime.now(UTC)
    hh, mm = (int(x) for x in args.stop_after.split(":"))
    stop_at = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    pack_p = load_section(ROOT / "params.yaml", "pack", PackParams)
    base_train = load_section(ROOT / "params.yaml", "train", TrainParams)
    tok, template_from = load_tokenizer(BASE, pack_p.chat_template)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="cpu_real_sweep_"))
    result: dict = {
        "what": "rule-trace training on CPU: held-out (valid split of the TRAIN data) loss per training minute, per configuration",
        "started_utc": now.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        },
        "base_model": rel(BASE),
        "args": {k: v for k, v in vars(args).items()},
        "train_common": {
            k: getattr(base_train, k)
            for k in (
                "lr_scheduler_type",
                "warmup_ratio",
                "weight_decay",
                "per_device_train_batch_size",
                "gradient_accumulation_steps",
                "attn_implementation",
            )
        },
        "results": [],
    }
    try:
        lengths = sorted({1024, 2048, 512} if "d" in names else {1024, 2048})
        dirs, data = prepare_data(args, tok, template_from, pack_p, tmp, lengths)
        if args.append and OUT.is_file():  # a later run adds configurations to the committed ones
            earlier = json.loads(OUT.read_text())
            result = {**earlier, "results": earlier["results"], "appended_args": vars(args)}
            if earlier["data"]["valid"] != data["valid"]:
                raise SystemExit("--append: the valid rows differ from the earlier run's: not comparable")
        result["data"] = {**result.get("data", {}), **data, "packed": {**result.get("data", {}).get("packed", {}), **data["packed"]}}
        print(json.dumps(data, indent=1)[:3000], flush=True)
        write_json(OUT, result)
        base_p = train_params(base_train, {"mode": "lora"}, None, tmp / "ckpt_base")
        if "baseline" not in result:
            result["baseline"] = baseline_eval(base_p, dirs[1024], tmp)
        print(f"baseline eval loss {result['baseline']}", flush=True)
        write_json(OUT, result)
        # tokens/s per mode, measured by the runs so far (an --append run starts from the earlier ones)
        measured: dict[str, float] = {r["mode"]: r["tokens_per_second"] for r in result["results"] if r.get("tokens_per_second")}
        budget_s = args.minutes * 60
        for name in names:
            if datetime.now(UTC) >= stop_at:
                result.setdefault("skipped", []).append(f"{name}: past --stop-after {args.stop_after} UTC")
                break
            if name == "d":
                ab = [r for r in result["results"] if r["config"] in ("a", "b") and r.get("eval_loss") is not None]
                if not ab:
                    break
                better = min(ab, key=lambda r: r["eval_loss"])
                src = CONFIGS[better["config"]]
                # 2048: no conversation cut and fewer, fuller rows; chosen over 512 (which cuts most multi-hop traces)
                what, update, length = f"{better['config']} at length 2048", src[1], 2048
            else:
                what, update, length = CONFIGS[name]
            mode = update["mode"]
            tps = measured.get(mode, measured.get("lora", args.tokens_per_s) * (0.7 if mode == "full" else 1.0))
            p = train_params(base_train, update, int(tps * budget_s), tmp / f"ckpt_{name}")
            print(f"== {name}: {what}, max_tokens {p.max_tokens} (from {tps:.1f} tokens/s)", flush=True)
            r = run_config(name, what, p, dirs[length], tmp, length, budget_s, round(tps, 1))
            measured[mode] = r["tokens_per_second"] or tps
            result["results"].append(r)
            result["best"] = score(result["results"], result["baseline"]["eval_loss"])
            result["finished_utc"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
            result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            write_json(OUT, result)
            print(json.dumps({k: v for k, v in r.items() if k != "loss_curve"}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result.get("best"), indent=1))


if __name__ == "__main__":
    main()
