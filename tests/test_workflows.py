"""The GitHub Actions workflows of the pull-request report: valid against SchemaStore's workflow
schema (check-jsonschema's builtin copy, no network), every job with a timeout, and the split that
keeps a fork's pull request from running code with a write token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

CHECK = Path(sys.executable).parent / "check-jsonschema"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def lint(schema: str, files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK), "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflows_pass_the_linter(schema):
    assert [p.name for p in WORKFLOWS] == ["report-comment.yml", "report.yml"]
    proc = lint(schema, WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_linter_catches_a_broken_workflow(tmp_path):
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "report.yml").read_text())
    del wf["jobs"]["report"]["runs-on"]
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(wf))
    proc = lint("vendor.github-workflows", [bad])
    assert proc.returncode == 1 and "'runs-on' is a required property" in proc.stdout, proc.stdout + proc.stderr
    del wf["jobs"]["report"]["timeout-minutes"]
    wf["jobs"]["report"]["runs-on"] = "ubuntu-latest"
    bad.write_text(yaml.safe_dump(wf))
    assert lint("custom.github-workflows-require-timeout", [bad]).returncode == 1


def load(name: str) -> dict:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def steps(wf: dict) -> list[dict]:
    return [s for job in wf["jobs"].values() for s in job.get("steps", [])]


def test_fork_safe_split():
    report, comment = load("report.yml"), load("report-comment.yml")
    # the unprivileged run: the PR's code, read-only, full history for `git show BASE:path`
    assert list(report["on"]) == ["pull_request"] and report["permissions"] == {"contents": "read"}
    checkout = next(s for s in steps(report) if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    run = "\n".join(s.get("run", "") for s in steps(report))
    assert 'qa-forge report --base "$BASE_SHA"' in run and "pip install --no-deps -e ." in run
    assert "torch" not in run and "dvc" not in run
    # the privileged run: triggered by the report's completion, never checks out or runs PR code
    assert comment["on"]["workflow_run"]["workflows"] == [report["name"]]
    assert comment["permissions"]["pull-requests"] == "write"
    assert not any(s.get("uses", "").startswith(("actions/checkout@", "actions/setup-python@")) or "run" in s for s in steps(comment))
    download = next(s for s in steps(comment) if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}" and "github-token" in download["with"]
    script = next(s for s in steps(comment) if s.get("uses", "").startswith("actions/github-script@"))["with"]["script"]
    assert "<!-- qa-forge-report -->" in script and "updateComment" in script and "head.sha" in script
    for s in steps(report) + steps(comment):
        if "uses" in s:
            assert s["uses"].split("@")[1].startswith("v"), s["uses"]  # pinned to a major version at least
