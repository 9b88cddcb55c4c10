"""Checkpoints outside the DVC outputs, in `<checkpoint_dir>/<run key>/checkpoint-N` (checkpoint_dir under
the cache root, qa_forge.core.paths, shared by every experiment of the project): the run key
hashes the train params, the packed data and the base weights, so `resume: auto` continues a
killed run of the same inputs and any change starts a fresh one. A checkpoint counts only once
the Trainer has saved all of it (the MARKER file)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from qa_forge.core.hashing import DigestStore, file_digest
from qa_forge.core.io import UserError
from qa_forge.training.params import TrainParams

MARKER = ".complete"  # written into a checkpoint folder once the Trainer has saved all of it


def weight_files(base: Path) -> list[Path]:
    files = sorted(
        f for f in base.iterdir() if f.is_file() and (f.suffix in (".safetensors", ".bin", ".pt", ".pth") or f.name == "config.json")
    )
    if not any(f.name != "config.json" for f in files):
        raise UserError(f"{base}: no model weights (*.safetensors, *.bin): run the base_model stage first")
    return files


def run_key(p: TrainParams, packed: Path, base: Path, store: DigestStore | None = None) -> str:
    """sha256 of (the train params that define the run, the packed data, the base weights)."""
    h = hashlib.sha256()
    h.update(json.dumps(p.model_dump(exclude={"resume", "checkpoint_dir", "num_threads"}), sort_keys=True).encode())
    for f in [packed / "train.jsonl", packed / "valid.jsonl"]:
        if f.is_file():
            h.update(f"data:{f.name}:{file_digest(f, store)}".encode())
    for f in weight_files(base):
        h.update(f"base:{f.name}:{file_digest(f, store)}".encode())
    return h.hexdigest()[:20]


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run that were saved to the end, oldest first."""
    if not run_dir.is_dir():
        return []
    found = []
    for d in run_dir.glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if d.is_dir() and step.isdigit() and (d / MARKER).is_file():
            found.append((int(step), d))
    return [d for _, d in sorted(found)]


def prune_incomplete(run_dir: Path) -> None:
    """Drop checkpoint folders a crash or kill left half-written."""
    for d in run_dir.glob("checkpoint-*"):
        if d.is_dir() and not (d / MARKER).is_file():
            shutil.rmtree(d, ignore_errors=True)


def prepare_run_dir(run_dir: Path, p: TrainParams) -> None:
    """Main process: start fresh (`resume: never`) or drop half-written checkpoints; record the params."""
    if p.resume == "never":
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    prune_incomplete(run_dir)
    (run_dir / "params.json").write_text(json.dumps(p.model_dump(), indent=2) + "\n")
