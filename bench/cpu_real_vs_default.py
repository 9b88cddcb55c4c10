"""Issue 13's binding comparison: the cpu-real fine-tuned model against the embedded default's
fine-tuned model on the same HotpotQA dev_277 questions, paired question by question.

Run in a checkout where `make repro PROFILE=cpu-real` has finished (its data/eval/finetuned/hotpotqa.jsonl
is the cpu-real model's predictions). The embedded default's merged model (models/merged of a
`make repro` on the plain params.yaml, copied aside first) answers the same eval set through the
evaluate stage's own CLI, with the cpu-real params (retriever, top-k, lengths) restricted to HotpotQA:

    .venv/bin/python bench/cpu_real_vs_default.py --default-model /path/to/default/merged

-> bench/results/cpu_real_vs_default.json: per score (EM, F1, containing accuracy, ...) the default's
and cpu-real's value with N and Wilson / bootstrap intervals and the paired difference (cpu-real -
default: Newcombe's interval for 0/1 scores, a bootstrap of the per-question differences otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer
import yaml

from qa_forge.eval.summary import compare_set
from qa_forge.eval.tasks import read_predictions
from qa_forge.llm.identity import local_identity

ROOT = Path(__file__).resolve().parent.parent


def main(
    default_model: Path = typer.Option(..., help="the embedded default's models/merged, copied aside"),
    eval_set: str = typer.Option("hotpotqa"),
    params: Path = typer.Option(ROOT / "params.yaml", help="the cpu-real composed params"),
    finetuned: Path = typer.Option(ROOT / "data/eval/finetuned", help="the cpu-real model's predictions"),
    out: Path = typer.Option(ROOT / "bench/results/cpu_real_vs_default.json"),
    default_out: Path = typer.Option(ROOT / "data/eval/default", help="the default model's predictions (kept: a re-run only compares)"),
    tuned_retriever: Path = typer.Option(
        ROOT / "models/retriever", help="train_retriever's folder the cpu-real predictions were made with: both models search alike"
    ),
):
    all_params = yaml.safe_load(params.read_text())
    p = all_params["evaluate"]
    all_params["evaluate"]["sets"] = {eval_set: p["sets"][eval_set]}
    if not (default_out / f"{eval_set}.jsonl").is_file():  # answered once: a re-run only compares
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "params.yaml").write_text(yaml.safe_dump(all_params))
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "qa_forge", "evaluate", "--model", str(default_model), "--name", "default",
                 "--params", str(tmp / "params.yaml"), "--out", str(default_out), "--metrics", str(tmp / "m.json"),
                 "--plots", str(tmp / "plots"), "--timings", str(tmp / "t.json"), "--tuned-retriever", str(tuned_retriever)],
                cwd=ROOT, check=True,
            )  # fmt: skip
            (default_out / "seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    seconds = float((default_out / "seconds.txt").read_text())
    default_rows = read_predictions(default_out / f"{eval_set}.jsonl")
    # the same questions, paired: the default may have answered the first n only (evaluate.sets.<set>.n in --params)
    answered = {r["id"] for r in default_rows}
    tuned_rows = [r for r in read_predictions(finetuned / f"{eval_set}.jsonl") if r["id"] in answered]
    compared = compare_set(eval_set, default_rows, tuned_rows, p["bootstrap"], p["seed"], str(finetuned / f"{eval_set}.jsonl"))
    rename = {"base": "default_finetuned", "finetuned": "cpu_real_finetuned", "difference": "cpu_real_minus_default"}
    scores = {k: ({rename[m]: v for m, v in s.items()} if isinstance(s, dict) else s) for k, s in compared.items()}
    result = {
        "eval_set": eval_set,
        "questions": len(default_rows),
        "default_model": {"identity": local_identity(default_model)},  # weights, tokenizer, template, config
        "default_eval_seconds": round(seconds, 1),
        "retriever": str(tuned_retriever),
        "scores": scores,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    for k in ("em", "f1"):
        d = scores[k]
        print(
            f"{k}: default {d['default_finetuned']['value']}  cpu-real {d['cpu_real_finetuned']['value']}  diff {d['cpu_real_minus_default']}"
        )


if __name__ == "__main__":
    typer.run(main)
