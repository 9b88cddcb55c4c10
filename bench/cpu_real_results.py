"""Collect a finished `make repro PROFILE=cpu-real` run into bench/results/cpu_real.{json,md}: the
training (tokens, time, loss curve), per eval set the base and fine-tuned scores with N, 95 %
intervals and the paired difference, the supporting-paragraph coverage of the model's own retrieve
calls against one question-only retrieval, and (when bench/cpu_real_vs_default.py has run) the
fine-tuned cpu-real model against the embedded default's fine-tuned model. Issue 13's targets are
checked against the figures, never the other way round.

    .venv/bin/python bench/cpu_real_results.py --run /path/to/checkout --wall-seconds 5012

A run whose base model was not evaluated (evaluate@base skipped for time) takes the base model's
figures from an earlier results file of the same profile (`--base-from`, e.g. cpu_real_partial.json:
the same base weights and questions, greedy decoding, so the same answers). A paired difference
needs both models' per-question scores; it is given only where the earlier base score is 0 on the
whole set (a sum of non-negative scores that is 0 makes every question's 0, so the pairing is
known exactly), and left out elsewhere.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer

from qa_forge.eval import metrics
from qa_forge.eval.summary import scores
from qa_forge.eval.tasks import TASKS, read_predictions

ROOT = Path(__file__).resolve().parent.parent
SETS = ("hotpotqa", "2wikimultihopqa", "squad_v2")


def read(path: Path):
    return json.loads(path.read_text())


def loss_curve(run: Path, split: str, every: int = 1) -> list[list[float]]:
    path = run / f"metrics/train/plots/metrics/{split}/loss.tsv"
    rows = list(csv.DictReader(path.open(), delimiter="\t")) if path.is_file() else []
    return [[int(r["step"]), round(float(r["loss"]), 4)] for i, r in enumerate(rows) if i % every == 0 or i == len(rows) - 1]


def training(run: Path) -> dict:
    m, t = read(run / "metrics/train/metrics.json"), read(run / "metrics/timings/train.json")
    pack = read(run / "metrics/pack.json")
    return {
        "conversations_train": pack["conversations_train"],
        "conversations_valid": pack["conversations_valid"],
        "tokens_available": pack["train"]["tokens"],
        "tokens_seen": m["summary"]["tokens_seen"],
        "steps": m["summary"]["global_step"],
        "train_seconds": t["train_seconds"],
        "tokens_per_second": t["tokens_per_second"],
        "first_loss": round(m["summary"]["first_loss"], 4),
        "final_loss": round(m["summary"]["final_loss"], 4),
        "eval_loss": loss_curve(run, "eval"),
        "train_loss_every_8_steps": loss_curve(run, "train", 8),
    }


def stage_seconds(run: Path, base_from: dict | None = None) -> dict:
    timings = run / "metrics/timings"
    out = {"base_model": read(timings / "base_model.json")["seconds"], "train": read(timings / "train.json")["seconds"]}
    if (timings / "train_retriever.json").is_file():
        out["train_retriever"] = read(timings / "train_retriever.json")["total_s"]
    if base_from is not None:  # the earlier run's base evaluation (its own figure), never the checkout's file
        out["evaluate@base (earlier run)"] = base_from["stage_seconds"]["evaluate@base"]
    for model in ("base", "finetuned") if base_from is None else ("finetuned",):
        t = read(timings / f"eval_{model}.json")
        out[f"evaluate@{model}"] = round(sum(s["questions"] / s["questions_per_s"] for s in t.values()), 1)
    return out


def fmt(x: dict | None) -> str:
    if not x or x.get("value") is None:
        return "n/a"
    return f"{x['value']:.3f} [{x['ci95_lo']:.3f}, {x['ci95_hi']:.3f}] (n={x['n']})"


def targets(summary: dict, versus: dict | None) -> list[dict]:
    hot, squad = summary["hotpotqa"], summary["squad_v2"]
    cov = summary["_coverage"]["hotpotqa"]["finetuned"]
    rows = [
        {"target": "dev_277 EM >= 0.30", "value": hot["em"]["finetuned"]["value"], "met": hot["em"]["finetuned"]["value"] >= 0.30},
        {"target": "dev_277 F1 >= 0.38", "value": hot["f1"]["finetuned"]["value"], "met": hot["f1"]["finetuned"]["value"] >= 0.38},
        {
            "target": "bridge: the model's calls cover both paragraphs more often than one question-only retrieval",
            "value": cov.get("difference"),
            "met": bool(cov.get("n")) and cov["difference"]["value"] > 0,
        },
        {
            "target": "SQuAD v2 HasAns EM >= 0.40",
            "value": squad["has_answer_em"]["finetuned"]["value"],
            "met": squad["has_answer_em"]["finetuned"]["value"] >= 0.40,
        },
        {
            "target": "SQuAD v2 NoAns >= 0.50",
            "value": squad["abstention"]["finetuned"]["value"],
            "met": squad["abstention"]["finetuned"]["value"] >= 0.50,
        },
    ]
    if versus:
        for k in ("em", "f1"):
            d = versus["scores"][k]["cpu_real_minus_default"]
            rows.append(
                {
                    "target": f"dev_277 {k.upper()}: cpu-real beats the embedded default, paired CI excludes 0",
                    "value": d,
                    "met": d["ci95_lo"] > 0,
                }
            )
    return rows


# an earlier results file's base figures (cpu_real_partial.json's eval_base) under the summary's names
EARLIER_NAMES = {
    "squad_v2": {"exact_match": "exact_match", "f1": "f1", "correct_no_answer": "abstention", "correct_has_answer": "has_answer_em"}
}


def summary_with_earlier_base(run: Path, earlier: dict, bootstrap: int = 1000, seed: int = 0) -> dict:
    """metrics/summary.json's shape for a run with no base evaluation: the fine-tuned scores from its
    predictions, the base's from `earlier` (eval_base of an earlier run), the paired difference only
    where the earlier base score is 0 on every question."""
    out: dict = {}
    for name, base_set in earlier["eval_base"].items():
        path = run / f"data/eval/finetuned/{name}.jsonl"
        if not path.is_file():
            continue
        rows = read_predictions(path)
        names = EARLIER_NAMES.get(name, {k: k for k in base_set})
        out[name] = {"n": len(rows)}
        for old, metric in names.items():
            if metric not in TASKS[name].summary or not isinstance(base_set.get(old), dict) or metric == "coverage":
                continue
            h = TASKS[name].summary[metric]
            tuned = scores(rows, h, str(path))
            base = base_set[old]
            zero = base["value"] == 0 and base["n"] == len(tuned)
            out[name][metric] = {
                "base": {**base, "source": "earlier run"},
                "finetuned": metrics.summarize(tuned, n=bootstrap, seed=seed, binary=h.binary),
                "difference": metrics.paired_difference(tuned, [0.0] * len(tuned), n=bootstrap, seed=seed, binary=h.binary)
                if zero
                else None,
            }
    return out


def main(
    run: Path = typer.Option(ROOT, help="a checkout where the cpu-real profile ran"),
    wall_seconds: float = typer.Option(None, help="the measured wall time of the whole profile (one dvc repro), seconds"),
    out: Path = typer.Option(ROOT / "bench/results/cpu_real"),
    base_from: Path = typer.Option(None, help="an earlier results file with the base model's figures (the run has no evaluate@base)"),
):
    # with --base-from the run's own base files are not read: they may be another run's (a checkout's committed ones)
    evals = {m: read(run / f"metrics/eval_{m}.json") for m in ("base", "finetuned") if m == "finetuned" or base_from is None}
    summary = read(run / "metrics/summary.json") if "base" in evals else {}
    evals.setdefault("base", {})
    missing = [name for name in SETS if name in evals["finetuned"] and name not in evals["base"]]
    if missing:  # sets the base model was not evaluated on in this run
        if base_from is None:
            raise typer.BadParameter(f"the run has no base evaluation of {', '.join(missing)}: give --base-from")
        earlier = read(base_from)
        filled = summary_with_earlier_base(run, {"eval_base": {n: earlier["eval_base"][n] for n in missing}})
        summary.update(filled)
        evals["base"].update({n: earlier["eval_base"][n] for n in missing})
        summary["_base_source"] = f"for {', '.join(missing)}, {base_from.name} ({earlier.get('commit_of_run', '').strip()})"
    summary["_coverage"] = {
        s: {m: evals[m][s]["coverage"] for m in ("base", "finetuned")} for s in ("hotpotqa", "2wikimultihopqa") if s in evals["finetuned"]
    }
    versus_path = out.parent / "cpu_real_vs_default.json"
    versus = read(versus_path) if versus_path.is_file() else None
    result = {
        "profile": "cpu-real",
        "wall_seconds": wall_seconds,
        "stage_seconds": (stages := stage_seconds(run, read(base_from) if base_from else None)),
        "stages_sum_seconds": round(sum(stages.values()), 1),
        "fetch": {
            role: {k: {f: v[f] for f in ("read", "kept", "records", "dropped")} for k, v in read(run / "metrics/fetch.json")[role].items()}
            for role in ("train", "eval")
        },
        "filter": {k: read(run / "metrics/filter.json")[k] for k in ("records", "kept", "rejected")},
        "training": training(run),
        "summary": summary,
        "outcomes": {
            m: {
                s: {k: evals[m][s].get(k) for k in ("unparsable", "hop_cap_stops", "length_stops", "mean_retrieve_calls")}
                for s in SETS
                if s in evals[m] and s in evals["finetuned"]
            }
            for m in ("base", "finetuned")
        },
        "versus_default": versus,
    }
    result["targets"] = targets(summary, versus)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))


def markdown(r: dict) -> str:
    t, s = r["training"], r["summary"]
    lines = [
        "# cpu-real: SmolLM2-135M on rule traces of real multi-hop data, 2 CPU cores",
        "",
        "`bench/cpu_real_results.py` → `cpu_real.json`. "
        + (
            f"Whole profile (`dvc repro`): **{r['wall_seconds'] / 60:.1f} min** wall. "
            if r["wall_seconds"]
            else f"Whole profile: not timed in one `dvc repro`; the stages, each timed by itself, sum to **{r['stages_sum_seconds'] / 60:.1f} min**. "
        )
        + "Stages: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in r["stage_seconds"].items())
        + ".",
        "",
        f"Training: {t['conversations_train']} conversations ({t['tokens_available']:,} tokens available), {t['tokens_seen']:,} tokens "
        f"seen in {t['steps']} steps, {t['train_seconds'] / 60:.1f} min, {t['tokens_per_second']} tokens/s; train loss "
        f"{t['first_loss']} → {t['final_loss']}; validation loss ({t['conversations_valid']} held-out conversations) by step: "
        + ", ".join(f"{a}: {b}" for a, b in t["eval_loss"])
        + ".",
        "",
        "Train loss every 8 steps: " + ", ".join(f"{a}: {b}" for a, b in t["train_loss_every_8_steps"]) + ".",
        "",
        "| set | score | base | fine-tuned | difference (paired) |",
        "|---|---|---|---|---|",
    ]
    if s.get("_base_source"):
        note = (
            f"The base column comes from an earlier run {s['_base_source']}: the same base weights and questions, greedy "
            "decoding. There a paired difference is shown only where that base score is 0 on every question."
        )
        lines[-2:-2] = [note, ""]
    for name in SETS:
        for metric, v in s.get(name, {}).items():
            if isinstance(v, dict) and "base" in v:
                lines.append(f"| {name} | {metric} | {fmt(v['base'])} | {fmt(v['finetuned'])} | {fmt(v['difference'])} |")
    lines += ["", "Coverage of bridge / compositional questions: every supporting paragraph retrieved across the model's calls vs one retrieval with the question alone at the same number of paragraphs (paired, Newcombe):", "",
              "| set | model | n | model's calls | single retrieval | difference |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, by_model in s["_coverage"].items():
        for m, c in by_model.items():
            lines.append(
                f"| {name} | {m} | {c.get('n', 0)} | {fmt(c.get('model'))} | {fmt(c.get('single'))} | {fmt(c.get('difference'))} |"
            )
    if r["versus_default"]:
        v = r["versus_default"]
        lines += ["", f"Against the embedded default's fine-tuned model on the same {v['questions']} {v['eval_set']} questions (paired):", "",
                  "| score | default fine-tuned | cpu-real fine-tuned | cpu-real − default |", "|---|---|---|---|"]  # fmt: skip
        for metric, d in v["scores"].items():
            if isinstance(d, dict) and "default_finetuned" in d:
                lines.append(
                    f"| {metric} | {fmt(d['default_finetuned'])} | {fmt(d['cpu_real_finetuned'])} | {fmt(d['cpu_real_minus_default'])} |"
                )
    lines += ["", "| target (issue 13) | value | met |", "|---|---|---|"]
    for row in r["targets"]:
        val = fmt(row["value"]) if isinstance(row["value"], dict) else (f"{row['value']:.3f}" if row["value"] is not None else "n/a")
        lines.append(f"| {row['target']} | {val} | {'yes' if row['met'] else 'no'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    typer.run(main)
