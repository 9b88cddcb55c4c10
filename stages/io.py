"""Small I/O helpers: atomic writes, JSONL records, params, clear errors."""

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
from pydantic import ValidationError

from stages.schema import Record


class StageError(Exception):
    """A user-facing error: the message names the file, record or param at fault."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
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


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_records(path: str | os.PathLike, records: Iterable[Record]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json(exclude_defaults=False) + "\n")
            n += 1
    return n


def read_records(path: str | os.PathLike) -> list[Record]:
    """Read a JSONL file of records; a bad line raises StageError naming file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: file not found")
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
                raise StageError(f"{path}:{i}: field '{field}': {err['msg']}") from None
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise StageError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a mapping at the top level")
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
        raise StageError("; ".join(lines)) from None


def write_record_dir(out: str | os.PathLike, files: dict[str, Iterable[Record]]) -> dict[str, int]:
    """Write `{name}.jsonl` for each entry into a temporary folder, then swap it in for `out`."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        counts = {name: write_records(tmp / f"{name}.jsonl", records) for name, records in files.items()}
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
