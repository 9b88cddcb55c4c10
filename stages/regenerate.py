"""regenerate: answers a model wrote hot, rewritten at temperature 0 -> data/regenerated/*.jsonl,
metrics/regenerate.json."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section, write_json, write_record_dir
from qa_forge.data.regenerate import RegenerateParams, read_inputs, regenerate
from qa_forge.llm import LLM, LLMParams


def main(
    inputs: list[Path] = typer.Argument(..., help="JSONL files from generate"),
    params: Path = PARAMS,
    out: Path = typer.Option(Path("data/regenerated")),
    metrics: Path = typer.Option(Path("metrics/regenerate.json")),
):
    """Rewrite hot or missing answers at temperature 0."""
    p = load_section(params, "regenerate", RegenerateParams)
    lp = load_section(params, "llm", LLMParams)
    check_outputs(files=[metrics], folders=[out])
    records = read_inputs(inputs)
    files, rewritten = {}, 0
    with LLM(lp) as llm:  # leaving the block stops a server serve_command started
        for name, recs in records.items():
            files[name], n = regenerate(llm, recs, p)
            rewritten += n
    write_record_dir(out, files)
    write_json(metrics, {"records": {k: len(v) for k, v in files.items()}, "rewritten": rewritten, "llm": llm.stats})
    print(f"regenerate: rewrote {rewritten} records; llm {llm.stats}")


if __name__ == "__main__":
    run(main)
