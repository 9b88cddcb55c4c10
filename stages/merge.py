"""merge: the trained LoRA adapter folded into the base (a fully trained model re-saved) -> models/merged."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section
from qa_forge.models.merge import MergeParams, merge


def main(
    params: Path = PARAMS,
    base: Path = typer.Option(Path("models/base")),
    trained: Path = typer.Option(Path("models/trained"), help="the train stage's output: an adapter or a full model"),
    out: Path = typer.Option(Path("models/merged")),
):
    """Merge the trained adapter into the base (or pass a fully trained model through)."""
    p = load_section(params, "merge", MergeParams)
    check_outputs(folders=[out])
    info = merge(p, base, trained, out)
    print(f"merge: {info}")


if __name__ == "__main__":
    run(main)
