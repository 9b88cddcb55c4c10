"""evaluate: the model answers every eval set (`evaluate.sets`) by calling retrieve as often as it
needs -> data/eval/NAME/<set>.jsonl (predictions with every step), metrics/eval_NAME.json,
metrics/eval_NAME/*.csv (plots), metrics/timings/eval_NAME.json (questions per second: not a metric,
so a slower machine never shows as a change in `dvc metrics diff`). dvc.yaml runs it once per model
(foreach: base, finetuned)."""

from pathlib import Path
from typing import Annotated

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section, write_json, write_jsonl_dir
from qa_forge.eval.evaluate import EvaluateParams, evaluate, headline, metrics_view, write_plots
from qa_forge.retrieval.retriever import TUNED_RETRIEVER, RetrieverParams, effective_retriever


def main(
    model: Path = typer.Option(..., help="a Hugging Face model folder (models/base or models/merged)"),
    name: str = typer.Option(..., help="base or finetuned: names the outputs"),
    params: Path = PARAMS,
    out: Path = typer.Option(None, help="predictions folder (default data/eval/NAME)"),
    metrics_path: Path = typer.Option(None, "--metrics", help="default metrics/eval_NAME.json"),
    plots: Path = typer.Option(None, help="default metrics/eval_NAME/"),
    timings: Path = typer.Option(None, help="default metrics/timings/eval_NAME.json"),
    # Annotated: a direct call main(...) (tests) gets the Path default, not typer's OptionInfo
    tuned_retriever: Annotated[Path, typer.Option(help="train_retriever's folder: its tuned model, if it holds one")] = TUNED_RETRIEVER,
):
    """Answer the eval sets with the retrieve loop and score them."""
    p = load_section(params, "evaluate", EvaluateParams)
    rp = effective_retriever(load_section(params, "retrieve", RetrieverParams, keys=RetrieverParams.model_fields), tuned_retriever)
    out, metrics_path, plots, timings = (
        out or Path("data/eval") / name,
        metrics_path or Path(f"metrics/eval_{name}.json"),
        plots or Path(f"metrics/eval_{name}"),
        timings or Path(f"metrics/timings/eval_{name}.json"),
    )
    check_outputs(files=[metrics_path, timings], folders=[out, plots])
    report, predictions, speed = evaluate(p, rp, str(model), name)
    write_jsonl_dir(out, predictions)  # every set's predictions in one folder swap: never a mix of new and old
    write_json(metrics_path, metrics_view(report))
    write_json(timings, speed)
    write_plots(report, plots)
    print("\n".join(headline(report)))


if __name__ == "__main__":
    run(main)
