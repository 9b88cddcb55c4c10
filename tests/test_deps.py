"""Deps true by construction: every file of the repo that a stage's process opens during `dvc repro`
(modules imported inside functions, prompts, configs included) is a dep or an out of that stage in
dvc.lock, so editing it re-runs the stage. tests/audit/sitecustomize.py records the opens."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Read on purpose without being deps: caches keyed by content (.cache), the environment (.venv),
# git and DVC's own files (dvclive in train opens the repo through DVC), and params.yaml, which DVC
# tracks per key through each stage's `params`.
NOT_DEPS = (".cache/", ".venv/", ".git/", ".dvc/", "params.yaml")
VCS_FILES = {".gitignore", ".dvcignore"}
SWAP_SUFFIXES = (".tmp", ".new", ".old")
PYC = re.compile(r"(?P<dir>(?:.*/)?)__pycache__/(?P<module>[^/.]+)\.[^/]+\.pyc$")


def source_of(rel: str) -> str:
    """A cached module stands for its source: with a valid .pyc, Python never opens the .py."""
    m = PYC.fullmatch(rel)
    return f"{m['dir']}{m['module']}.py" if m else rel


def repo_file(path: str, roots: list[Path]) -> str | None:
    """`path` relative to the repo, or None outside it. The library comes from the checkout that
    holds the editable install, the stages from the repo DVC runs in: both are "the repo"."""
    real = Path(os.path.realpath(path))
    for root in roots:
        if real.is_relative_to(root):
            rel = source_of(real.relative_to(root).as_posix())
            return None if rel.startswith(NOT_DEPS) or Path(rel).name in VCS_FILES else rel
    return None


def covered(rel: str, paths: list[str]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in paths)


def stage_processes(lock: dict, processes: list[dict]) -> dict[str, list[dict]]:
    """Each lock stage's processes: the one whose argv ends with the stage's cmd (`qa-forge pack …`
    runs as `python …/bin/qa-forge pack …`), and every Python process it started."""
    tails = {name: shlex.split(st["cmd"])[1:] for name, st in lock["stages"].items()}
    owner = {}
    for p in processes:
        owner[p["pid"]] = next((name for name, tail in tails.items() if tail and p["argv"][-len(tail) :] == tail), None)
    by_pid = {p["pid"]: p for p in processes}

    def stage_of(p: dict) -> str | None:
        while owner[p["pid"]] is None and p["ppid"] in by_pid:
            p = by_pid[p["ppid"]]
        return owner[p["pid"]]

    out: dict[str, list[dict]] = {name: [] for name in tails}
    for p in processes:
        if (name := stage_of(p)) is not None:
            out[name].append(p)
    return out


def undeclared_reads(lock: dict, processes: list[dict], roots: list[Path]) -> dict[str, list[str]]:
    """stage -> the repo files its processes read that are neither its deps nor its outs."""
    found = {}
    for name, procs in stage_processes(lock, processes).items():
        stage = lock["stages"][name]
        outs = [o["path"] for o in stage.get("outs", [])]
        # an out is written as a temporary sibling swapped in at the end (qa_forge.core.io.atomic_dir)
        declared = [d["path"] for d in stage.get("deps", [])] + outs + [o + s for o in outs for s in SWAP_SUFFIXES]
        files = {rel for p in procs for f in p["files"] if (rel := repo_file(f, roots)) is not None}
        if missing := sorted(f for f in files if not covered(f, declared)):
            found[name] = missing
    return found


def roots(dag) -> list[Path]:
    return [Path(os.path.realpath(dag.repo)), Path(os.path.realpath(ROOT))]


def test_every_stage_ran_audited(dag):
    procs = stage_processes(dag.lock, dag.processes)
    assert all(procs.values()), f"no audited process for {[n for n, p in procs.items() if not p]}"
    # the audit sees lazy imports and prompts, not only the stage script
    reads = {n: {repo_file(f, roots(dag)) for p in ps for f in p["files"]} for n, ps in procs.items()}
    assert "qa_forge/training/attention.py" in reads["train"]
    assert "prompts/two_entities.txt" in reads["generate"]


def test_every_file_a_stage_reads_is_a_dep_or_an_out(dag):
    missing = undeclared_reads(dag.lock, dag.processes, roots(dag))
    report = "\n".join(f"{name}: {f}" for name, files in missing.items() for f in files)
    assert not missing, f"files read but not declared in dvc.yaml (add the folder or file to the stage's deps):\n{report}"


def test_a_dropped_dep_is_reported(dag):
    """The check can fail: without qa_forge/training, train's modules show up as undeclared."""
    lock = {"stages": {n: dict(st) for n, st in dag.lock["stages"].items()}}
    lock["stages"]["train"]["deps"] = [d for d in lock["stages"]["train"]["deps"] if d["path"] != "qa_forge/training"]
    missing = undeclared_reads(lock, dag.processes, roots(dag))
    assert list(missing) == ["train"] and "qa_forge/training/attention.py" in missing["train"]


@pytest.mark.parametrize(
    ("rel", "source"),
    [("qa_forge/llm/__pycache__/cache.cpython-311.pyc", "qa_forge/llm/cache.py"), ("prompts/answer.txt", "prompts/answer.txt")],
)
def test_source_of(rel, source):
    assert source_of(rel) == source
