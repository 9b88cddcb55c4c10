"""fetch: train and eval sources (hub or local files in their original formats) -> records in
data/fetched/{train,eval_<source>}.jsonl, metrics/fetch.json."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import load_section, write_json, write_record_dir
from qa_forge.data.fetch import FetchParams, fetch


def main(
    params: Path = PARAMS,
    out: Path = typer.Option(Path("data/fetched")),
    metrics: Path = typer.Option(Path("metrics/fetch.json")),
):
    """Fetch and normalise the train and eval sources."""
    outputs, report = fetch(load_section(params, "fetch", FetchParams))
    write_record_dir(out, outputs)
    write_json(metrics, report)
    for role in ("train", "eval"):
        for name, row in report[role].items():
            print(
                f"fetch {role:5} {name:16} read {row['read']:6}  kept {row['kept']:6}  records {row['records']:6}  dropped {row['dropped']}"
            )


if __name__ == "__main__":
    run(main)
