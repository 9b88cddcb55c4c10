"""Text rules shared by the rule composers: sentences, entity names, containment, keywords.

Containment is always the official answer normalisation (qa_forge.core.textnorm): lower case, no
punctuation, no articles, whole words. Nothing here guesses meaning; each function is a fixed rule.
"""

from __future__ import annotations

import html
import re

from qa_forge.core.textnorm import contains, normalize_answer
from qa_forge.data.sources import words as content_words

# A word before a full stop that does not end a sentence: titles, initials, months, "U.S."
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "mt",
        "ft",
        "jr",
        "sr",
        "lt",
        "col",
        "gen",
        "gov",
        "sen",
        "rep",
        "rev",
        "no",
        "nos",
        "vol",
        "vols",
        "vs",
        "etc",
        "inc",
        "ltd",
        "co",
        "corp",
        "bros",
        "dept",
        "est",
        "approx",
        "ca",
        "c",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "fig",
        "pp",
        "e.g",
        "i.e",
        "a.d",
        "b.c",
    ]
)
# a sentence ends at . ! or ? (plus closing quotes or brackets, and footnote marks like [e]), then whitespace, then what can open a sentence
_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*(?:\[[^\]]{1,20}\])*(?=\s+[\"'“‘(\[]?[A-Z0-9])")
_PAREN_SUFFIX = re.compile(r"\s*\([^()]*\)\s*$")
_POSSESSIVE = re.compile(r"(?<=\w)['’]s\b")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’]*")


def squeeze(text: str) -> str:
    """Whitespace runs (newlines included) become one space, so a quoted sentence stays on one line."""
    return " ".join(text.split())


def _ends_sentence(text: str, dot: int) -> bool:
    """Whether the . at `dot` ends a sentence: not after an initial ("B."), an abbreviation or "U.S."."""
    if text[dot] != ".":
        return True
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip("\"'“‘([")
    if len(word) == 1 and word.isalpha():
        return False
    return word.lower() not in _ABBREVIATIONS and "." not in word


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, by a fixed rule (see _BOUNDARY and _ends_sentence)."""
    spans, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if _ends_sentence(text, m.start()):
            spans.append((start, m.end()))
            start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            out.append((s, e))
    return out


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


def sentence_at(text: str, start: int, end: int) -> str:
    """The sentence(s) of `text` covering the characters [start, end) (a span across a boundary takes both)."""
    covering = [(s, e) for s, e in sentence_spans(text) if s < end and e > start]
    if not covering:
        raise ValueError(f"no sentence covers characters {start}-{end}")
    return text[covering[0][0] : covering[-1][1]]


def has(text: str, phrase: str) -> bool:
    """Whether the normalised phrase occurs in the normalised text as whole words, the text read
    also without possessive 's ("Ezer Weizman's resignation" has "Ezer Weizman")."""
    return contains(text, phrase) or contains(_POSSESSIVE.sub("", text), phrase)


def same(a: str, b: str) -> bool:
    return normalize_answer(a) == normalize_answer(b)


def name_of(title: str) -> str:
    """A Wikipedia title without its disambiguation: "Lilu (mythology)" -> "Lilu"."""
    return _PAREN_SUFFIX.sub("", title).strip() or title.strip()


def name_variants(title: str) -> list[str]:
    """How a text may name a page, longest first: "Leland, North Carolina" -> [that, "Leland"]."""
    name = name_of(html.unescape(title))
    variants = [name]
    if "," in name and name.split(",")[0].strip():
        variants.append(name.split(",")[0].strip())
    return variants


def mention(text: str, title: str) -> str | None:
    """The first (longest) variant of the page's name that `text` contains, or None."""
    return next((v for v in name_variants(title) if has(text, v)), None)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text)


def overlap(a: str, b: str) -> int:
    """How many distinct content words (the loaders' rule: no function words) two texts share."""
    return len(content_words(a) & content_words(b))


def remove_phrase(text: str, phrase: str) -> str:
    """`text` without the occurrences of `phrase` (case-insensitive, as written)."""
    return re.sub(re.escape(phrase), " ", text, flags=re.IGNORECASE)
