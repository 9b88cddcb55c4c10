"""Files in and out: atomic file and folder writes, JSON / JSONL, records, YAML params, clear errors.

Every output is written next to its final path and renamed into place only when complete, so a
failed or killed run leaves the previous output (or none), never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from qa_forge.core.records import Record


class UserError(Exception):
    """A user-facing error: the message names the file, record or param at fault (no traceback)."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling file; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike, clean: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; swap it in for `path` only if the block succeeds.

    The old folder is renamed aside before the new one is renamed in, so `path` is missing only
    between two renames. `clean=False` keeps the temporary folder when the block fails (a caller
    that shares it with other processes removes it itself)."""
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if clean:
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def jsonl_line(row: dict | BaseModel, compact: bool = False) -> str:
    """One JSONL line: a pydantic model as its JSON; a dict as UTF-8 JSON (`compact`: no spaces)."""
    if isinstance(row, BaseModel):
        return row.model_dump_json() + "\n"
    return json.dumps(row, ensure_ascii=False, separators=(",", ":") if compact else None) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict | BaseModel], compact: bool = False) -> int:
    """Write rows atomically, one JSON object a line; returns the number of rows."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(jsonl_line(row, compact))
            n += 1
    return n


def write_jsonl_dir(out: str | os.PathLike, files: dict[str, Iterable[dict | BaseModel]], compact: bool = False) -> dict[str, int]:
    """`{name}.jsonl` for each entry, written into a fresh folder swapped in for `out`."""
    with atomic_dir(out) as tmp:
        return {name: write_jsonl(tmp / f"{name}.jsonl", rows, compact) for name, rows in files.items()}


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    return write_jsonl(path, records)


def write_record_dir(out: str | os.PathLike, files: dict[str, Iterable[Record]]) -> dict[str, int]:
    return write_jsonl_dir(out, files)


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read a JSONL file of records; a bad line raises UserError naming file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Record.model_validate_json(line))
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or "<line>"
                raise UserError(f"{path}:{i}: field '{field}': {err['msg']}") from None
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def validate(model: type, data: Any, where: str):
    """Validate `data` against a pydantic model; errors name the param path (`where.key`)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join([where, *(str(p) for p in err["loc"])])
            lines.append(f"param '{loc}': {err['msg']} (got {err.get('input')!r})")
        raise UserError("; ".join(lines)) from None


def load_section(params: str | os.PathLike, section: str, model: type, keys: Iterable[str] | None = None):
    """One section of a params file through its model; `keys` takes only those keys of the section
    (a stage that reads part of a section, e.g. the retriever settings of `retrieve`)."""
    raw = load_yaml(params).get(section)
    if not isinstance(raw, dict):
        raise UserError(f"{params}: no '{section}' section")
    if keys is not None:
        raw = {k: raw[k] for k in keys if k in raw}
    return validate(model, raw, section)
