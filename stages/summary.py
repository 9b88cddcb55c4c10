"""summary: the run in a few numbers for a reviewer -> metrics/summary.json (per eval set, the main
scores of base and fine-tuned and their paired difference, each with N and a 95 % interval; the
judge's when it ran) and metrics/plots/*.csv (both models side by side, for `dvc plots`)."""

import csv
from pathlib import Path

import typer
from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import atomic_path, check_outputs, load_section, read_json, write_json
from qa_forge.eval.summary import PLOT_FILES, load, plot_tables, summarize_run


class SummaryParams(BaseModel):
    """The interval settings evaluate scored with (`evaluate.bootstrap`, `evaluate.seed`)."""

    model_config = ConfigDict(extra="forbid")
    bootstrap: int = Field(gt=0)
    seed: int


def main(
    base: Path = typer.Option(Path("data/eval/base")),
    finetuned: Path = typer.Option(Path("data/eval/finetuned")),
    judged: Path = typer.Option(Path("metrics/compare.json"), "--judge", help="the compare stage's judge scores"),
    params: Path = PARAMS,
    out: Path = typer.Option(Path("metrics/summary.json")),
    plots: Path = typer.Option(Path("metrics/plots"), help="folder of the side-by-side plot tables"),
):
    """Base vs fine-tuned in a few numbers, with paired intervals."""
    p = load_section(params, "evaluate", SummaryParams, keys=SummaryParams.model_fields)
    check_outputs(files=[out, *(plots / name for name in PLOT_FILES)])
    folders = {"base": base, "finetuned": finetuned}
    preds = load(folders)
    summary = summarize_run(preds, folders, p.bootstrap, p.seed, read_json(judged))
    for name, (header, rows) in plot_tables(preds, p.bootstrap, p.seed).items():
        with atomic_path(plots / name) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    write_json(out, summary)
    for name, scores in summary.items():
        if name == "judge":
            continue
        cells = [
            f"{m} {s['base']['value']} -> {s['finetuned']['value']} ({_signed(s['difference'])})" for m, s in scores.items() if m != "n"
        ]
        print(f"summary {name} (n {scores['n']}): " + ", ".join(cells))


def _signed(d: dict) -> str:
    if d["value"] is None:
        return "no questions"
    return f"{d['value']:+.3f} [{d['ci95_lo']:+.3f}, {d['ci95_hi']:+.3f}]"


if __name__ == "__main__":
    run(main)
