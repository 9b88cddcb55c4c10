"""Running a command function as a program: typer parses its options; a `UserError` prints one
`error: ...` line and exits 1, with no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from qa_forge.core.io import UserError


def run(command: Callable, prog: str | None = None) -> None:
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    try:
        app(prog_name=prog)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
