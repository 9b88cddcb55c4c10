"""Where the caches live: the LLM response cache, the passage embeddings, the training checkpoints
and the server logs sit outside every output under one cache root, shared by every run of the
project (the main checkout, its `git worktree`s and DVC's experiment copies), so none of them pays
twice for an LLM call or loses a checkpoint it could resume from.

The root is `$QA_FORGE_CACHE` when set (an absolute path: a relative one is taken from the current
folder, which differs between runs), else `.cache` in the main worktree of the git repository the
current folder belongs to, else `./.cache` outside any git repository. A cache path in params
(`llm.cache_dir: llm`, `train.checkpoint_dir: checkpoints`) is relative to that root; an absolute
one is used as it is, so no machine path needs to enter params.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = "QA_FORGE_CACHE"

# DVC runs `dvc exp run --queue` / `--temp` experiments in a fresh git repository created inside
# the project at <repo>/.dvc/tmp/exps/<tmpXXXX> (or .../exps/standalone/<tmpXXXX>), holding the
# commit and the changed params but no git-ignored file: git there knows nothing of <repo>, so a
# folder under these parts is resolved from <repo> instead. The one rule that knows about DVC.
_EXPERIMENT_PARTS = (".dvc", "tmp", "exps")


def cache_root(start: str | os.PathLike | None = None) -> Path:
    """The folder every cache lives under (absolute); `start` (default: the current folder) is
    the folder the run works in."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser().absolute()
    here = Path(start if start is not None else os.getcwd()).absolute()
    here = _outside_experiment(here)
    return (_main_worktree(here) or here) / ".cache"


def cache_path(value: str | os.PathLike, start: str | os.PathLike | None = None) -> Path:
    """A cache folder named in params: absolute as it is, relative under `cache_root()`."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else cache_root(start) / path


def _outside_experiment(here: Path) -> Path:
    """The project that holds a DVC experiment's temporary repository, or `here` itself."""
    parts, n = here.parts, len(_EXPERIMENT_PARTS)
    for i in range(len(parts) - n + 1):  # the outermost match: the real project
        if parts[i : i + n] == _EXPERIMENT_PARTS:
            return Path(*parts[:i])
    return here


def _main_worktree(here: Path) -> Path | None:
    """The main worktree of the git repository at `here` (the same for each of its `git worktree`s:
    their common git folder is the main worktree's `.git`), or None outside git."""
    while not here.is_dir() and here != here.parent:  # a folder not made yet: ask from its nearest parent
        here = here.parent
    try:
        common = _git(here, "--git-common-dir")
        if common is None:
            return None
        if common.name == ".git":
            return common.parent
        # a bare repository or a submodule (its git folder under .git/modules/): its own top level
        return _git(here, "--show-toplevel")
    except OSError:  # no git program, or `here` does not exist
        return None


def _git(here: Path, flag: str) -> Path | None:
    """`git rev-parse FLAG` in `here`, as an absolute path (git prints some relative to `here`)."""
    proc = subprocess.run(["git", "rev-parse", flag], cwd=here, capture_output=True, text=True, check=False)
    out = proc.stdout.strip()
    return (here / out).resolve() if proc.returncode == 0 and out else None
