"""Files in and out: atomic file and folder writes, JSON / JSONL, records, YAML params, clear errors.

Every output is written next to its final path and renamed into place only when complete, so a
failed or killed run leaves the previous output (or none), never half of one.
"""

from __future__ import annotations

import codecs
import ctypes
import errno
import functools
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
    except OSError as e:
        if e.filename is None:  # a failed write (disk full, file too large) names no file: name the output
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <linux/fcntl.h>, <linux/fs.h>


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux renameat2(RENAME_EXCHANGE); False where the OS or the
    filesystem cannot. Python's os module has no renameat2, and it is the only way to replace a
    non-empty folder so that a kill at any instant leaves one whole folder under the name."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _swap_names(path: Path) -> tuple[Path, Path, Path]:
    """The folder being written, the complete new folder waiting to go in, and the old one going out."""
    return path.with_name(path.name + ".tmp"), path.with_name(path.name + ".new"), path.with_name(path.name + ".old")


def finish_swap(path: str | os.PathLike) -> Path:
    """Complete a folder swap that a killed run left half done; returns `path`.

    Only the fallback swap (three renames, where the filesystem cannot exchange) can be cut between
    steps: its complete new folder waits as `<name>.new`, and this puts it in. Every reader of a
    stage's input folder calls this first, so nothing reads a folder the swap left missing."""
    path = Path(path)
    _, new, old = _swap_names(path if path.name else path.resolve())
    if new.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        new.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    return path


def _swap_in(tmp: Path, path: Path) -> None:
    if not path.exists():
        tmp.rename(path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp)  # it now holds the old folder
    else:
        _, new, old = _swap_names(path)
        tmp.rename(new)  # from here on the new folder is complete: finish_swap puts it in
        path.rename(old)
        new.rename(path)
        shutil.rmtree(old)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; swap it in for `path` only if the block succeeds.

    A kill at any point leaves the old or the new folder whole under `path`: the two are exchanged
    in one step where Linux allows, else `finish_swap` (run first here and by every reader)
    completes what a killed run began. A failed block removes its temporary folder."""
    path = finish_swap(path)
    tmp, _, old = _swap_names(path)
    for leftover in (tmp, old):  # of an earlier run of this stage that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _swap_in(tmp, path)
    finally:
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


def _open(path: Path):
    """`path` opened for reading in binary; a missing, folder or unreadable path is a UserError."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def _utf8(path: Path, data: bytes, line: int = 1) -> str:
    """`data` (from `line` of `path` on) as UTF-8 text, a leading BOM dropped; else a UserError
    naming the line and column of the first bad byte (a file saved in Latin-1 or UTF-16)."""
    if line == 1:
        data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = line + data.count(b"\n", 0, e.start)
        col = e.start - data.rfind(b"\n", 0, e.start)
        raise UserError(f"{path}:{at}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col}): save the file as UTF-8") from None


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; a missing, unreadable or undecodable file is a UserError naming it."""
    path = Path(path)
    with _open(path) as f:
        return _utf8(path, f.read())


def _json_error(path: Path, line: int, e: json.JSONDecodeError) -> UserError:
    return UserError(f"{path}:{line}: not valid JSON ({e.msg} at column {e.colno})")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise _json_error(path, e.lineno, e) from None


def _row_error(path: Path, line: int, e: ValidationError) -> UserError:
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        msg = err["msg"].removeprefix("Invalid JSON: ").replace(" at line 1 column ", " at column ")
        return UserError(f"{path}:{line}: not valid JSON ({msg})")
    field, msg = ".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, ")
    return UserError(f"{path}:{line}: field '{field}': {msg}" if field else f"{path}:{line}: {msg}")


def iter_jsonl(path: str | os.PathLike, model: type[BaseModel] | None = None, context: dict | None = None) -> Iterator:
    """Rows of a JSONL file, blank lines skipped: each validated by `model` (with `context` for its
    validators), else a dict. Every input row of every stage is read here, so a bad one is always
    a UserError naming file, line and field: bad bytes, bad JSON, a wrong or missing field."""
    path = Path(path)
    finish_swap(path.parent)
    with _open(path) as f:
        for i, raw in enumerate(f, 1):
            line = _utf8(path, raw, i)
            if not line.strip():
                continue
            if model is not None:
                try:
                    yield model.model_validate_json(line.rstrip("\r\n"), context=context)  # one line: "at column N" in errors
                except ValidationError as e:
                    raise _row_error(path, i, e) from None
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise _json_error(path, i, e) from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            yield row


def read_jsonl(path: str | os.PathLike, model: type[BaseModel] | None = None, allow_empty: bool = False) -> list:
    """`iter_jsonl` as a list. A file with no rows is an error unless `allow_empty`: an empty input
    must not silently replace a stage's previous output with empty files."""
    rows = list(iter_jsonl(path, model))
    if not rows and not allow_empty:
        raise UserError(f"{path}: no records (the file is empty)")
    return rows


def read_records(path: str | os.PathLike, allow_empty: bool = False) -> list[Record]:
    """A JSONL file of records; a bad line raises UserError naming file, line and field."""
    return read_jsonl(path, Record, allow_empty)


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        what = ": ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or " ".join(str(e).split())
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML ({what})") from None
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


# --- model folders -------------------------------------------------------------------------------


def check_model_folder(folder: str | os.PathLike, config: str | None = "config.json", weights: bool = True) -> dict:
    """A model (or adapter) folder's `config` file, parsed, once the files loading it needs are
    sound: the folder, its JSON files (config, tokenizer) and the headers of its safetensors.
    Checked here because transformers reports a missing or truncated file as a long traceback that
    names neither; headers only, so it is fast and runs before torch is imported."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: model folder not found" if not folder.exists() else f"{folder}: a file, not a model folder")
    found = {f.name: read_json(f) for f in sorted(folder.glob("*.json"))}
    if config and not isinstance(found.get(config), dict):
        raise UserError(f"{folder}: not a model folder (no {config})" if config not in found else f"{folder / config}: not a JSON object")
    if weights:
        files = sorted(folder.glob("*.safetensors"))
        if not files and not any(folder.glob("*.bin")):
            raise UserError(f"{folder}: no weights (*.safetensors): build or download the model again")
        index = found.get("model.safetensors.index.json")
        listed = index.get("weight_map", {}) if isinstance(index, dict) else {}
        missing = sorted(set(listed.values()) - {f.name for f in files})
        if missing:
            raise UserError(f"{folder}: weight files {missing} of model.safetensors.index.json are missing")
        for f in files:
            _check_safetensors(f)
    return found.get(config, {}) if config else {}


def _check_safetensors(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "np"):
            pass
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: corrupt or truncated weights ({e}): build or download the model again") from None


@contextmanager
def model_errors(folder: str | os.PathLike, what: str = "model") -> Iterator[None]:
    """Turn what a library raises while loading from `folder` (a config, tokenizer or weights it
    cannot use) into a UserError naming the folder: the last net after `check_model_folder`."""
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = " ".join(lines[:2])[:400] or type(e).__name__
        raise UserError(f"{folder}: cannot load the {what} ({type(e).__name__}: {detail})") from None


# --- outputs -------------------------------------------------------------------------------------


def check_outputs(files: Iterable[str | os.PathLike] = (), folders: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse, before any work, outputs that cannot be written: a stage writes several outputs one
    after another, so one failing late would leave the others new and it old. Each is written as
    a sibling temporary renamed into place, so its nearest existing parent must be a writable
    folder (os.access also sees a read-only filesystem, even as root)."""
    for path, is_dir in [*((Path(f), False) for f in files), *((Path(d), True) for d in folders)]:
        if path.exists() and path.is_dir() != is_dir:
            raise UserError(f"{path}: cannot write the output: it exists as a {'file' if is_dir else 'folder'}")
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"{path}: cannot write the output: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"{path}: cannot write the output: {parent} is not writable")
