"""`python -m stages <stage> --help`: every DVC stage also runs by hand with explicit paths."""

from __future__ import annotations

import sys

import typer

from stages import ask, base_model, compare, evaluate, fetch, filter, generate, merge, pack, regenerate, retrieve, train
from stages.io import StageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
for name, module in [
    ("base-model", base_model), ("fetch", fetch), ("generate", generate), ("regenerate", regenerate), ("filter", filter),
    ("retrieve", retrieve), ("pack", pack), ("train", train), ("merge", merge), ("evaluate", evaluate), ("compare", compare),
    ("ask", ask),
]:
    app.command(name)(module.main)


def run() -> None:
    try:
        app()
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
