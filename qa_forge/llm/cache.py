"""The LLM response cache: one sqlite file (WAL), one row per response, written as each arrives.

The key is a sha256 over everything that decides a response (model identity, messages, sampling
settings, sample index), so a re-run asks the backend only for what is missing. Rows never hold
an API key: only the key, the identity, the request, the text and the token counts. The same file
memoises weight-file digests (`DigestStore`) so a big local model is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

from qa_forge.core.hashing import DigestStore
from qa_forge.core.store import SqliteStore

SCHEMA_VERSION = 1  # bump to invalidate every key when the key layout changes

_SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)"""


def cache_key(identity: str, request: dict) -> str:
    """sha256 of the canonical JSON of the model identity and the request's deciding fields."""
    blob = json.dumps({"v": SCHEMA_VERSION, "identity": identity, **request}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Thread-safe; every row committed as it is written (a kill loses nothing written)."""

    def __init__(self, cache_dir: str | Path, filename: str = "llm.sqlite"):
        self.store = SqliteStore(Path(cache_dir) / filename)
        self.path = self.store.path
        self.store.execute(_SCHEMA)
        self.digests = DigestStore(self.store)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """{key: (text, prompt_tokens, completion_tokens)} for the keys present."""
        rows = self.store.query_in("SELECT key, text, prompt_tokens, completion_tokens FROM responses WHERE key IN ({})", keys)
        return {k: (text, pt, ct) for k, text, pt, ct in rows}

    def put(self, key: str, identity: str, request: dict, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        row = (key, identity, json.dumps(request, ensure_ascii=False), text, prompt_tokens, completion_tokens, time.time())
        self.store.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def __len__(self) -> int:
        return self.store.count("responses")

    def close(self) -> None:
        self.store.close()
