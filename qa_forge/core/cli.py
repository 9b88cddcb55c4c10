"""Running a command function as a program: typer parses its options; a `UserError` prints one
`error: ...` line and exits 1, with no traceback. So do the errors no read site turned into one:
a disk or permission error (OSError) names its path, and text that is not UTF-8 says so."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import typer

from qa_forge.core.io import UserError

# every command reads its values from one params file: the default, or a profile merged by the user
PARAMS = typer.Option(Path("params.yaml"), help="the params file to read (params.yaml, or a composed profile)")


def os_message(e: OSError) -> str:
    """`path: reason` of a disk or permission error (read-only folder, disk full, no access)."""
    reason = e.strerror or str(e) or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def run(command: Callable, prog: str | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    try:
        app(prog_name=prog)
    except UserError as e:
        fail(str(e))
    except OSError as e:  # the last net: read sites name the file; this catches the writes
        fail(os_message(e))
    except UnicodeDecodeError as e:
        fail(f"an input is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
