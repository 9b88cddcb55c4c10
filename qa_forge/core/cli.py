"""Running a command function as a program: typer parses its options; a `UserError` prints one
`error: ...` line and exits 1, with no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import typer

from qa_forge.core.io import UserError

# every command reads its values from one params file: the default, or a profile merged by the user
PARAMS = typer.Option(Path("params.yaml"), help="the params file to read (params.yaml, or a composed profile)")


def run(command: Callable, prog: str | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    try:
        app(prog_name=prog)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
