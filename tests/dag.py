"""Run the real DVC pipeline in a throwaway copy of the repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from qa_forge.core import profiles
from tests.conftest import ROOT
from tests.params import merge

BIN = Path(sys.executable).parent
# a sitecustomize that records every file each Python process opens (tests/test_deps.py)
AUDIT = ROOT / "tests" / "audit"


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # the committed baseline (dvc.lock, metrics/) belongs to the default params, not to a profile
    return [f for f in out.splitlines() if (ROOT / f).is_file() and f != "dvc.lock" and not f.startswith("metrics/")]


def make_repo(dst: Path, profile: str = "tiny", over: str = profiles.DEFAULT) -> Path:
    """Copy the repo's files to `dst`, compose params.yaml (the base, the user profile `over`, then
    the test profile), and commit so DVC sees a clean git repo."""
    for f in tracked_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    params = yaml.safe_load(profiles.compose(ROOT, over))
    over = yaml.safe_load((ROOT / "tests" / "profiles" / f"{profile}.yaml").read_text())
    (dst / "params.yaml").write_text(yaml.safe_dump(merge(params, over), sort_keys=False))
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=dst, check=True, capture_output=True)
    return dst


def dvc(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", **(env or {}))
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_param(repo: Path, dotted: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *path, last = dotted.split(".")
    for k in path:
        node = node[k]
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")]


def stage_names(dvc_yaml: Path) -> list[str]:
    """Stage names as dvc prints them: a foreach stage runs as name@key."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return [f"{name}@{key}" if "foreach" in st else name for name, st in stages.items() for key in (st.get("foreach") or [None])]


@dataclass(frozen=True)
class FirstRun:
    """The tiny profile's first `dvc repro`, shared by the DAG and deps tests (one pipeline run for both)."""

    repo: Path
    lock: dict  # dvc.lock right after it, before any test changes a param
    processes: list[dict]  # {pid, ppid, argv, files}: what each Python process it ran opened for reading


def first_repro(dst: Path) -> FirstRun:
    repo = make_repo(dst / "repo")
    audit = dst / "audit"  # beside the repo, so DVC never sees the logs
    audit.mkdir()
    pythonpath = os.pathsep.join(filter(None, [str(AUDIT), os.environ.get("PYTHONPATH")]))
    proc = dvc(repo, "repro", env={"QA_FORGE_AUDIT_DIR": str(audit), "PYTHONPATH": pythonpath})
    assert sorted(ran_stages(proc)) == sorted(stage_names(repo / "dvc.yaml")), proc.stdout
    processes = [json.loads(f.read_text()) for f in sorted(audit.glob("*.json"))]
    git(repo, "add", "-A")  # the run as a commit (dvc.lock, metrics/): clone_run starts from it
    git(repo, "commit", "-qm", "first run")
    return FirstRun(repo, yaml.safe_load((repo / "dvc.lock").read_text()), processes)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def clone_run(run: FirstRun, dst: Path) -> Path:
    """A git clone of the first run's commit with every output checked out from its DVC cache (no
    stage runs, nothing recomputed): a finished run to push, report on or experiment from, which
    the DAG tests' later param changes never touch. Its own .cache (LLM responses, embeddings,
    checkpoints) is a copy of the run's."""
    git(dst.parent, "clone", "-q", str(run.repo), dst.name)
    dvc(dst, "cache", "dir", "--local", str(run.repo / ".dvc" / "cache"))
    dvc(dst, "checkout", "-q")
    shutil.copytree(run.repo / ".cache", dst / ".cache", ignore=shutil.ignore_patterns("checkpoints"))
    return dst
