"""`qa-forge report`: this run (the working tree, or --rev) against --base, as Markdown.

qa-forge report --base origin/main --out report.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from qa_forge.report import git
from qa_forge.report.render import Side, report


def main(
    base: str | None = typer.Option(
        None, help="the revision to compare with (default: the merge-base with origin/main when that ref exists, else HEAD)"
    ),
    rev: str | None = typer.Option(None, help="the run to report on, a revision (default: the working tree)"),
    out: Path | None = typer.Option(None, help="write the Markdown here (default: print it)"),
    repo: Path = typer.Option(Path("."), help="a folder of the git repository"),
):
    """Markdown comparing this run with BASE from git-tracked files only (params.yaml, metrics/*.json,
    the plot tables): the params diff, the scores of metrics/summary.json with their intervals and a
    flag for a drop, base vs fine-tuned, the plots as Mermaid charts, the other metrics' changes."""
    root = git.toplevel(repo)
    base_sha = git.resolve(root, base) if base else git.default_base(root)
    rev_side = Side(git.describe(root, base_sha), git.at_rev(root, base_sha))
    if rev:
        sha = git.resolve(root, rev)
        this = Side(git.describe(root, sha), git.at_rev(root, sha))
    else:
        head = git.resolve(root, "HEAD")
        this = Side(f"the working tree, on {git.describe(root, head)}", git.worktree(root))
    text = report(rev_side, this)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"report: {out} ({len(text)} characters; REV {base_sha[:7]})", file=sys.stderr)
    else:
        sys.stdout.write(text)
