"""Prompt templates (plain text files in prompts/) and parsers for their labelled replies."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from qa_forge.core.io import UserError

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"  # the project's prompts/ folder


@lru_cache
def template(name: str, folder: str = str(PROMPTS)) -> str:
    path = Path(folder) / f"{name}.txt"
    if not path.is_file():
        raise UserError(f"{path}: prompt file not found")
    return path.read_text(encoding="utf-8")


def fill(name: str, **values) -> str:
    """The prompt `name` with its {placeholders} filled; a missing value names the prompt and key."""
    try:
        return template(name).format(**values)
    except KeyError as e:
        raise UserError(f"prompts/{name}.txt: no value for placeholder {e}") from None


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def parse_fields(text: str, labels: list[str]) -> dict[str, str]:
    """Values of `Label: value` lines (a value runs until the next known label); labels are case-insensitive."""
    alternation = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    pattern = re.compile(rf"^[ \t*#-]*({alternation})[ \t*]*:[ \t]*", re.IGNORECASE | re.MULTILINE)
    found: dict[str, str] = {}
    matches = list(pattern.finditer(text))
    canon = {label.lower(): label for label in labels}
    for m, nxt in zip(matches, [*matches[1:], None]):
        label = canon[m.group(1).lower()]
        value = text[m.end() : nxt.start() if nxt else len(text)].strip().lstrip("*").strip()
        if label not in found and value:
            found[label] = value
    return found


def require(fields: dict[str, str], labels: list[str]) -> list[str]:
    """Errors for every required label that is missing."""
    return [f"missing '{label}'" for label in labels if not fields.get(label)]


def parse_list(text: str, label: str) -> list[str]:
    """Every `Label: value` line, in order (e.g. the facts of a chunk)."""
    pattern = re.compile(rf"^[ \t*#\d.)-]*{re.escape(label)}[ \t]*\d*[ \t]*:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
    return [m.group(1).strip() for m in pattern.finditer(text) if m.group(1).strip()]


def short_or_none(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().strip(".").strip()
    return None if v.lower() in ("", "none", "n/a", "unknown", "null") else v
