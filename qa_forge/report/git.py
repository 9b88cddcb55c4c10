"""The report's files of one side, from git alone: a revision's (`git show REV:path`) or the working
tree's (the files git tracks, or would track: not ignored). Never a DVC cache or remote, so a
pull request from a fork, with no credentials, gets its report.

The files: params.yaml, every metrics/**/*.json but metrics/timings/ (timings are no metric), and
the plot tables (qa_forge.report.plots.FILES).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from qa_forge.core.io import UserError
from qa_forge.report import plots

MAX_BYTES = 5_000_000  # a file larger than this is no metrics file: left out


def wanted(path: str) -> bool:
    if path == "params.yaml" or path in plots.FILES:
        return True
    return path.startswith("metrics/") and path.endswith(".json") and not path.startswith("metrics/timings/")


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"git {' '.join(args)} (in {repo}): {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def toplevel(path: Path) -> Path:
    return Path(git(path, "rev-parse", "--show-toplevel").strip())


def resolve(repo: Path, rev: str) -> str:
    """The commit a revision names (a sha, branch, tag, HEAD~1, ...)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise UserError(f"--base/--rev {rev!r}: no such commit in {repo} (a shallow clone? fetch with full history)")
    return proc.stdout.strip()


def default_base(repo: Path, upstream: str = "origin/main") -> str:
    """Where this branch left `upstream` (what its pull request is compared with) when that ref
    exists, else HEAD (the last commit: the report shows the working tree's uncommitted run)."""
    has = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{upstream}^{{commit}}"], cwd=repo, capture_output=True, check=False)
    return git(repo, "merge-base", "HEAD", upstream).strip() if has.returncode == 0 else resolve(repo, "HEAD")


def describe(repo: Path, sha: str) -> str:
    """`abc1234` (the subject line, cut)."""
    subject = git(repo, "log", "-1", "--format=%s", sha).strip()
    if len(subject) > 60:
        subject = subject[:59] + "…"
    return f"`{sha[:7]}` ({subject})" if subject else f"`{sha[:7]}`"


def at_rev(repo: Path, sha: str) -> dict[str, str]:
    """The report's files as committed at `sha`."""
    names = git(repo, "ls-tree", "-r", "-z", "--name-only", sha).split("\0")
    out = {}
    for name in filter(wanted, names):
        proc = subprocess.run(["git", "show", f"{sha}:{name}"], cwd=repo, capture_output=True, check=False)
        if proc.returncode == 0 and len(proc.stdout) <= MAX_BYTES:
            out[name] = proc.stdout.decode("utf-8", errors="replace")
    return out


def worktree(repo: Path) -> dict[str, str]:
    """The report's files in the working tree that git tracks or would track (not ignored)."""
    names = git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    out = {}
    for name in dict.fromkeys(filter(wanted, names)):
        p = repo / name
        if p.is_file() and p.stat().st_size <= MAX_BYTES:
            out[name] = p.read_bytes().decode("utf-8", errors="replace")
    return out
