"""Output folders are replaced so that a kill -9 at any step leaves the old or the new folder whole.

pack and merge run through their CLI and are killed (tests/kill/sitecustomize.py) just before each
step that touches the output folder or its `.tmp` / `.new` / `.old` siblings, once with the
one-step exchange (Linux renameat2) and once with the three-rename fallback, after which a reader's
`finish_swap` completes what the killed run began."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qa_forge.core.io import atomic_dir, finish_swap
from tests.conftest import ROOT
from tests.params import merge, raw
from tests.smollm2 import sample_records, save_tokenizer
from tests.tiny_lm import make_base

KILL = ROOT / "tests" / "kill"
# the same CLI with the exchange switched off, as on a filesystem without renameat2
FALLBACK = "import runpy, sys; import qa_forge.core.io as io; io._exchange = lambda a, b: False; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
SIBLINGS = (".tmp", ".new", ".old")


def digest(folder: Path) -> dict[str, str]:
    return {f.relative_to(folder).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*")) if f.is_file()}


def run_stage(stage: str, args: list[str], out: Path, kill_at: int = 0, count: Path | None = None, exchange: bool = True):
    env = dict(os.environ, PYTHONPATH=str(KILL), QA_FORGE_KILL_PATH=str(out), QA_FORGE_KILL_AT=str(kill_at))
    if count:
        env["QA_FORGE_KILL_COUNT"] = str(count)
    script = str(ROOT / "stages" / f"{stage}.py")
    cmd = [sys.executable, script, *args] if exchange else [sys.executable, "-c", FALLBACK, script, *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False, timeout=300)


def kill_at_every_step(stage: str, old_args: list[str], new_args: list[str], out: Path, exchange: bool) -> int:
    """Write the old output, then kill the run that writes the new one at each step in turn: the folder
    under `out` is always the old or the new one, whole. Returns the number of steps."""
    assert run_stage(stage, old_args, out).returncode == 0
    old = digest(out)
    saved = out.with_name("saved-old")
    shutil.copytree(out, saved)
    count = out.parent / "steps"
    proc = run_stage(stage, new_args, out, count=count, exchange=exchange)
    assert proc.returncode == 0, proc.stderr
    new, steps = digest(out), int(count.read_text())
    assert new != old and steps >= 3
    for k in range(1, steps + 1):
        shutil.rmtree(out)
        shutil.copytree(saved, out)  # start from the old output; leftovers of the last kill stay
        proc = run_stage(stage, new_args, out, kill_at=k, exchange=exchange)
        assert proc.returncode == -9, f"step {k} of {steps}: not killed\n{proc.stderr}"
        if not exchange:
            finish_swap(out)  # what every reader does first
        assert out.is_dir() and digest(out) in (old, new), f"step {k} of {steps}: {out} is neither the old nor the new output"
    assert run_stage(stage, new_args, out, exchange=exchange).returncode == 0
    assert digest(out) == new
    assert not any(out.with_name(out.name + s).exists() for s in SIBLINGS), "a completed run leaves no temporary folders"
    return steps


@pytest.mark.slow
@pytest.mark.parametrize(
    "exchange",
    # the fallback's kill points cost a minute and a half more: they run in `make check-slow`
    [True, pytest.param(False, marks=pytest.mark.check_slow)],
    ids=["exchange", "three-renames"],
)
def test_pack_killed_at_every_step(tmp_path, exchange):
    model = save_tokenizer(tmp_path / "model")
    recs = tmp_path / "kept.jsonl"
    recs.write_text("".join(r.model_dump_json() + "\n" for r in sample_records()))
    out = tmp_path / "packed"
    args = []
    for seed in (0, 1):
        params = tmp_path / f"params{seed}.yaml"
        params.write_text(yaml.safe_dump({"pack": merge(raw("pack"), {"max_seq_length": 512, "valid_fraction": 0.2, "seed": seed})}))
        metrics = [f"--{k}" + "=" + str(tmp_path / f"{k}{seed}") for k in ("metrics", "plot")]
        args.append([str(recs), "--model", str(model), "--params", str(params), "--out", str(out), *metrics])
    assert kill_at_every_step("pack", args[0], args[1], out, exchange) >= (3 if exchange else 6)


@pytest.mark.check_slow  # a merge loads torch and two models per kill: minutes on 2 cores
@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "three-renames"])
def test_merge_killed_at_every_step(tmp_path, exchange):
    base = make_base(tmp_path / "base", seed=0)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"merge": raw("merge")}))
    out = tmp_path / "merged"
    # a fully trained model passes through merge: two different ones give two different outputs
    args = [
        ["--params", str(params), "--base", str(base), "--trained", str(make_base(tmp_path / f"full{s}", seed=s)), "--out", str(out)]
        for s in (1, 2)
    ]
    assert kill_at_every_step("merge", args[0], args[1], out, exchange) >= (3 if exchange else 6)


def test_a_failed_block_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed by a bug")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_finish_swap_puts_in_a_complete_new_folder(tmp_path):
    """The state a kill between the fallback's renames leaves: `out` gone, `out.new` complete."""
    out = tmp_path / "out"
    (tmp_path / "out.new").mkdir()
    (tmp_path / "out.new" / "a.txt").write_text("new")
    (tmp_path / "out.old").mkdir()
    assert finish_swap(out) == out and (out / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
