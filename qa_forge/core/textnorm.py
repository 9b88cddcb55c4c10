"""Answer normalisation shared by filter and the metrics (SQuAD/HotpotQA official rules)."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation and articles, squeeze spaces (the official SQuAD/HotpotQA rule)."""
    s = _ARTICLES.sub(" ", s.lower().translate(_PUNCT))
    return " ".join(s.split())


def contains(text: str, answer: str) -> bool:
    """Whether the normalised answer occurs in the normalised text as whole words."""
    a, t = normalize_answer(answer), normalize_answer(text)
    return bool(a) and f" {a} " in f" {t} "


def abstains(text: str, phrases: tuple[str, ...] | list[str]) -> bool:
    """Whether the text says the question cannot be answered (one of `phrases`, from params)."""
    t = text.lower()
    return any(ph in t for ph in phrases)
