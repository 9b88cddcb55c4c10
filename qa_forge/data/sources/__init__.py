"""Dataset loaders. Each module turns one dataset, from a local file in its original format or
from the hub's column layout, into `Record`s.

A loader module has:
  DATASET: DatasetInfo             the dataset's name and licence (the cards stage writes it on the cards)
  read_local(path) -> list[dict]   items in the module's flat per-question shape
  read_hub(dataset) -> list[dict]  the same shape from a `datasets.Dataset` with the hub's columns
  to_record(item) -> Record        raises Drop(reason) for items we skip on purpose
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa_forge.core.io import UserError


class Drop(Exception):
    """An item skipped on purpose; `reason` is counted in metrics/fetch.json."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's licence, declared beside its loader: data, read by the cards stage
    (qa_forge/cards) for the model and dataset cards. `license` is an id of the hub's licence list
    (https://huggingface.co/docs/hub/repositories-licenses), as the page `checked` states it;
    `verified` is False when only a secondary page (a mirror) states it, which `note` explains."""

    name: str  # e.g. "SQuAD 2.0"
    hub: str | None  # the authors' own hub id; None when they publish elsewhere (params may read a mirror)
    license: str
    checked: str  # the page the licence was read from
    verified: bool = True
    note: str = ""


def stable_id(src: str, *parts: str) -> str:
    h = hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{src}-{h}"


def read_json_items(path: str | Path) -> Any:
    """Parse a .json or .jsonl file; clear errors for missing, empty and malformed files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise UserError(f"{path}: file is empty")
    if path.suffix == ".jsonl":
        items = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        return items
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_list(path: str | Path, what: str) -> list:
    """A .json list or .jsonl file of items; `what` names the expected format in the error."""
    items = read_json_items(path)
    expect(items, list, path, what)
    return items


def expect(obj: Any, kind: type, path: Path | str, what: str) -> None:
    if not isinstance(obj, kind):
        raise UserError(f"{path}: expected {what}, got {type(obj).__name__} (wrong format for this source?)")


_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "and",
        "or",
        "is",
        "was",
        "were",
        "are",
        "be",
        "did",
        "does",
        "do",
        "what",
        "who",
        "whom",
        "which",
        "when",
        "where",
        "how",
        "why",
        "it",
        "its",
        "as",
        "from",
        "that",
        "this",
    ]
)


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def most_similar(query: str, candidates: list[str]) -> int:
    """Index of the candidate sharing the most content words with `query` (ties: first)."""
    q = words(query)
    scores = [len(q & words(c)) / (1 + len(words(c))) ** 0.5 for c in candidates]
    return max(range(len(candidates)), key=lambda i: scores[i])


def join_sentences(sentences: list[str]) -> str:
    """A paragraph from its sentences: HotpotQA's carry their leading space, 2Wiki's do not (a
    plain join would glue "...in 1937.He was..."); both read right."""
    out = ""
    for s in sentences:
        out += s if not out or out[-1:].isspace() or s[:1].isspace() else " " + s
    return out.strip()


def loader(name: str):
    from qa_forge.data.sources import boolq, drop, hotpotqa, musique, squad_v2, twowiki

    table = {
        "squad_v2": squad_v2,
        "boolq": boolq,
        "drop": drop,
        "musique": musique,
        "hotpotqa": hotpotqa,
        "2wikimultihopqa": twowiki,
    }
    if name not in table:
        raise UserError(f"unknown source '{name}': choose one of {', '.join(table)}")
    return table[name]


SOURCES = ("squad_v2", "boolq", "drop", "musique", "hotpotqa", "2wikimultihopqa")
