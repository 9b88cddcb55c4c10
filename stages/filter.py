"""filter: drop records that break the format or the facts, with counted reasons ->
data/filtered/{kept,rejected}.jsonl, metrics/filter.json."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import UserError, check_outputs, load_section, read_records, write_json, write_record_dir
from qa_forge.data.filter import FilterParams, filter_records


def main(
    inputs: list[Path] = typer.Argument(..., help="JSONL files of records (e.g. data/regenerated/*.jsonl)"),
    params: Path = PARAMS,
    out: Path = typer.Option(Path("data/filtered")),
    metrics: Path = typer.Option(Path("metrics/filter.json")),
):
    """Drop records that break the format or the facts; counts per reason to metrics."""
    p = load_section(params, "filter", FilterParams)
    check_outputs(files=[metrics], folders=[out])
    # one input may be empty (no documents generated); all of them empty would empty the outputs
    records = [r for path in inputs for r in read_records(path, allow_empty=True)]
    if not records:
        raise UserError(f"{', '.join(map(str, inputs))}: no records to filter (empty input)")
    kept, rejected, report = filter_records(records, p)
    write_record_dir(out, {"kept": kept, "rejected": rejected})
    write_json(metrics, report)
    print(f"filter: kept {report['kept']} of {report['records']}; rejected {report['reasons']}")


if __name__ == "__main__":
    run(main)
