"""The LLM response cache: one sqlite file (WAL), one row per response, written as each arrives.

The key is a sha256 over everything that decides a response (model identity, messages, sampling
settings, sample index), so a re-run asks the backend only for what is missing. Rows never hold
an API key: only the key, the identity, the request, the text and the token counts. A second
table memoises weight-file digests (per path, mtime, size) so a big local model is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

SCHEMA_VERSION = 1  # bump to invalidate every key when the key layout changes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS file_digests (
    memo TEXT PRIMARY KEY,  -- path|mtime_ns|size|inode of a weight file
    digest TEXT NOT NULL
)
"""


def cache_key(identity: str, request: dict) -> str:
    """sha256 of the canonical JSON of the model identity and the request's deciding fields."""
    blob = json.dumps({"v": SCHEMA_VERSION, "identity": identity, **request}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Thread-safe: one connection behind a lock; commits every row (a kill loses nothing written)."""

    def __init__(self, cache_dir: str | Path, filename: str = "llm.sqlite"):
        self.path = Path(cache_dir) / filename
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # autocommit (isolation_level=None): each INSERT is its own transaction
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
        self._db.executescript(_SCHEMA)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """{key: (text, prompt_tokens, completion_tokens)} for the keys present."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, tuple[str, int, int]] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # stay under sqlite's bound-variable limit
                chunk = keys[i : i + 500]
                q = f"SELECT key, text, prompt_tokens, completion_tokens FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
                for k, text, pt, ct in self._db.execute(q, chunk):
                    out[k] = (text, pt, ct)
        return out

    def put(self, key: str, identity: str, request: dict, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        row = (key, identity, json.dumps(request, ensure_ascii=False), text, prompt_tokens, completion_tokens, time.time())
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def get_digest(self, memo: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT digest FROM file_digests WHERE memo = ?", (memo,)).fetchone()
        return row[0] if row else None

    def put_digest(self, memo: str, digest: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO file_digests VALUES (?, ?)", (memo, digest))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
