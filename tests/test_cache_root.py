"""The cache root (qa_forge/core/paths.py): $QA_FORGE_CACHE, else the main worktree's .cache found
through git (from a `git worktree` too, and from DVC's experiment copies under .dvc/tmp/exps),
else ./.cache; and a queued grid of two experiments that repays no LLM call."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from qa_forge.core.paths import ENV, cache_path, cache_root
from tests.dag import BIN, clone_run, git


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def init(repo: Path) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q")
    (repo / "f").write_text("x\n")
    git(repo, "add", "f")
    git(repo, "commit", "-qm", "one")
    return repo


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    repo = init(tmp_path / "repo")
    monkeypatch.setenv(ENV, str(tmp_path / "shared"))
    assert cache_root(repo) == tmp_path / "shared"
    assert cache_path("llm", repo) == tmp_path / "shared" / "llm"


def test_the_main_worktree_and_its_subfolders(tmp_path, no_env):
    repo = init(tmp_path / "repo")
    (repo / "a" / "b").mkdir(parents=True)
    assert cache_root(repo) == repo.resolve() / ".cache"
    assert cache_root(repo / "a" / "b") == repo.resolve() / ".cache"
    assert cache_root(repo / "not" / "made") == repo.resolve() / ".cache"


def test_a_git_worktree_uses_the_main_worktrees_cache(tmp_path, no_env):
    repo = init(tmp_path / "repo")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "other")
    assert cache_root(tmp_path / "wt") == repo.resolve() / ".cache"


def test_a_dvc_experiment_copy_uses_the_enclosing_projects_cache(tmp_path, no_env):
    repo = init(tmp_path / "repo")
    for exp in (repo / ".dvc/tmp/exps/tmpabc123", repo / ".dvc/tmp/exps/standalone/tmpxyz"):  # --queue, --temp
        init(exp)  # DVC's executor: a git repository of its own that knows nothing of repo
        assert cache_root(exp) == repo.resolve() / ".cache"
        assert cache_root(exp / "sub") == repo.resolve() / ".cache"  # not there yet: still inside the project


def test_a_dvc_experiment_copy_of_a_worktree_uses_the_main_worktrees_cache(tmp_path, no_env):
    repo = init(tmp_path / "repo")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "other")
    exp = init(tmp_path / "wt/.dvc/tmp/exps/tmpabc123")
    assert cache_root(exp) == repo.resolve() / ".cache"


def test_outside_git_the_current_folder(tmp_path, no_env, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # whatever encloses tmp_path is not searched
    (tmp_path / "plain").mkdir()
    assert cache_root(tmp_path / "plain") == tmp_path / "plain" / ".cache"
    monkeypatch.chdir(tmp_path / "plain")
    assert cache_root() == tmp_path / "plain" / ".cache"
    assert cache_path("embeddings") == tmp_path / "plain" / ".cache" / "embeddings"


def test_an_absolute_value_is_used_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "elsewhere"))
    assert cache_path(tmp_path / "mine") == tmp_path / "mine"
    assert cache_path(str(tmp_path / "mine")) == tmp_path / "mine"


# --- a queued grid -------------------------------------------------------------------------------

GRID = ("llm.concurrency=2", "llm.concurrency=3")  # how many requests fly at once: changes no request
TIMEOUT = 600


def dvc(repo: Path, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1")
    env.pop(ENV, None)  # the clone's own .cache
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def responses(cache: Path) -> int:
    with sqlite3.connect(cache) as db:
        return db.execute("SELECT count(*) FROM responses").fetchone()[0]


def experiments(repo: Path) -> dict[str, dict]:
    """{experiment name: {metrics file: its data}} from `dvc exp show --json`."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    out = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                metrics = (rev.get("data") or {}).get("metrics") or {}
                out[rev["name"]] = {path: m["data"] for path, m in metrics.items()}
    return out


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 120)
def test_a_queued_grid_repays_no_llm_call(dag, tmp_path):
    """Each experiment runs in a fresh git repository under .dvc/tmp/exps without the git-ignored
    .cache: its generate and regenerate re-run (every llm param is theirs) and find every answer in
    the clone's own cache. (The tiny model's replies are all cut off, so each generated record has
    a parse error and regenerate sends nothing: its zero calls are checked, its hits cannot be.)"""
    repo = clone_run(dag, tmp_path / "clone")
    git(repo, "config", "user.email", "t@t")  # the experiments' commits
    git(repo, "config", "user.name", "t")
    cache = repo / ".cache" / "llm" / "llm.sqlite"
    before = responses(cache)
    first = json.loads((repo / "metrics" / "generate.json").read_text())["llm"]
    assert before > 0 and first["calls"] + first["cached"] > 0
    for value in GRID:
        dvc(repo, "exp", "run", "--queue", "-S", value)
    try:
        # one worker, followed to the end: faster than `dvc queue start -j 1` and polling `dvc queue
        # status` (22 s against 38 s on 2 busy cores), and its output holds each experiment's log
        proc = dvc(repo, "exp", "run", "--run-all", "-j", "1")
    finally:  # the worker idles 10 s before it exits: stop it now, and kill whatever a timeout left running
        subprocess.run([str(BIN / "dvc"), "queue", "stop", "--kill"], cwd=repo, capture_output=True, timeout=60, check=False)
    assert "Failed to reproduce" not in proc.stderr, proc.stdout + proc.stderr  # exits 0 all the same

    runs = experiments(repo)
    assert len(runs) == len(GRID), runs.keys()
    for name, metrics in runs.items():
        generate, regenerate = (metrics[f"metrics/{stage}.json"]["llm"] for stage in ("generate", "regenerate"))
        assert generate["calls"] == 0 and generate["cached"] == first["calls"] + first["cached"], f"{name} generate: {generate}"
        assert regenerate["calls"] == 0, f"{name} regenerate: {regenerate}"
    assert responses(cache) == before  # nothing new was asked or stored
    table = dvc(repo, "exp", "show", "--md").stdout
    assert all(name in table for name in runs) and "llm.concurrency" in table


WRITER = """
import sys
from qa_forge.llm.cache import ResponseCache, cache_key
cache = ResponseCache(sys.argv[1])
for i in range(200):
    key = cache_key("m", {"writer": sys.argv[2], "i": i})
    cache.sending(key, "m")
    cache.put(key, "m", {"i": i}, "answer", 1, 1, None)
"""


def test_processes_share_one_response_cache(tmp_path):
    """Experiments run at once (`dvc queue start -j N`) write to the same cache: none loses a row."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(n)]) for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    assert responses(tmp_path / "llm.sqlite") == 800
