"""generate: an LLM writes multi-hop questions (two entities; two attributes), complete answers for
fetched records and Q&A from a folder of documents -> data/generated/*.jsonl, metrics/generate.json."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section, read_records, write_json, write_record_dir
from qa_forge.data.generate import GenerateParams, generate_all
from qa_forge.llm import LLM, LLMParams
from qa_forge.llm.dryrun import DryRunLLM


def main(
    params: Path = PARAMS,
    fetched: Path = typer.Option(Path("data/fetched/train.jsonl"), help="train records from fetch"),
    out: Path = typer.Option(Path("data/generated")),
    metrics: Path = typer.Option(Path("metrics/generate.json")),
    dry_run: bool = typer.Option(False, help="print the estimated calls and cost, call nothing"),
):
    """Write multi-hop questions, complete answers and document Q&A with an LLM."""
    p = load_section(params, "generate", GenerateParams)
    lp = load_section(params, "llm", LLMParams)
    if not dry_run:
        check_outputs(files=[metrics], folders=[out])
    records = read_records(fetched)
    with LLM(lp) as model:  # leaving the block stops a server serve_command started
        llm = DryRunLLM(model) if dry_run else model
        outputs = generate_all(llm, p, records)
    if dry_run:
        llm.report()
        return
    write_record_dir(out, outputs)
    errors = {k: sum(bool(r.meta.get("errors")) for r in v) for k, v in outputs.items()}
    write_json(metrics, {"records": {k: len(v) for k, v in outputs.items()}, "parse_errors": errors, "llm": llm.stats})
    print(f"generate: {', '.join(f'{k} {len(v)}' for k, v in outputs.items())}; llm {llm.stats}")


if __name__ == "__main__":
    run(main)
