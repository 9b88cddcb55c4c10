"""compare: an LLM judge scores base and fine-tuned answers (accuracy against the reference; win
rate asked in both orders) -> metrics/compare.json."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section, write_json
from qa_forge.eval.tasks import check_predictions
from qa_forge.judge.judge import JudgeParams, judge


def main(
    base: Path = typer.Option(Path("data/eval/base")),
    finetuned: Path = typer.Option(Path("data/eval/finetuned")),
    params: Path = PARAMS,
    metrics_path: Path = typer.Option(Path("metrics/compare.json"), "--metrics"),
):
    """Judge base vs fine-tuned answers: accuracy and win rate."""
    p = load_section(params, "judge", JudgeParams)
    check_outputs(files=[metrics_path])
    if p.enabled:
        check_predictions(base, finetuned)
    report = judge(p, base, finetuned)
    write_json(metrics_path, report)
    if not report["enabled"]:
        print("compare: the judge is off (judge.enabled: false); no scores written")
        return
    summary = {k: v for k, v in report.items() if k not in ("judge", "llm")}
    print(f"compare: judge {report['judge']}: {summary}"[:400])


if __name__ == "__main__":
    run(main)
