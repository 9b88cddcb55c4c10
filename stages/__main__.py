"""`python -m stages <stage> --help`: every DVC stage also runs by hand with explicit paths."""

from __future__ import annotations

import sys

import typer

from stages import base_model, fetch, filter, generate, regenerate
from stages.io import StageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
app.command("base-model")(base_model.main)
app.command("fetch")(fetch.main)
app.command("generate")(generate.main)
app.command("regenerate")(regenerate.main)
app.command("filter")(filter.main)
from stages import retrieve  # noqa: E402
app.command("retrieve")(retrieve.main)
from stages import pack  # noqa: E402
app.command("pack")(pack.main)
from stages import merge, train  # noqa: E402
from stages import ask, compare, evaluate  # noqa: E402
app.command("train")(train.main)
app.command("merge")(merge.main)
app.command("evaluate")(evaluate.main)
app.command("compare")(compare.main)
app.command("ask")(ask.main)


def run() -> None:
    try:
        app()
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
