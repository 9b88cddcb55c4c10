"""The LLM response cache: one sqlite file (WAL), one row per response, written as each arrives.

The key is a sha256 over everything that decides a response (model identity, messages, sampling
settings, sample index), so a re-run asks the backend only for what is missing. A completion that
cannot be an answer (empty, cut off) is stored as a failure with its reason: paid for once, sent
again only when the user asks. Each request is journaled in `pending` before it is sent and
cleared when its answer is stored, so after a kill the next run knows which calls a server may
already have billed. Rows never hold an API key or URL credentials. The same file memoises
weight-file digests (`DigestStore`) so a big local model is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

from qa_forge.core.hashing import DigestStore
from qa_forge.core.paths import cache_path
from qa_forge.core.store import SqliteStore

SCHEMA_VERSION = 1  # bump to invalidate every key when the key layout changes

_PUT = (
    "INSERT OR REPLACE INTO responses (key, identity, request, text, prompt_tokens, completion_tokens, created, failure) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, identity TEXT NOT NULL, sent REAL NOT NULL)",
)


def cache_key(identity: str, request: dict) -> str:
    """sha256 of the canonical JSON of the model identity and the request's deciding fields."""
    blob = json.dumps({"v": SCHEMA_VERSION, "identity": identity, **request}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Thread-safe; every row committed as it is written (a kill loses nothing written)."""

    def __init__(self, cache_dir: str | Path, filename: str = "llm.sqlite"):
        self.store = SqliteStore(cache_path(cache_dir) / filename)
        self.path = self.store.path
        for sql in _SCHEMA:
            self.store.execute(sql)
        if "failure" not in {row[1] for row in self.store.query("PRAGMA table_info(responses)")}:  # a cache from before failures
            self.store.execute("ALTER TABLE responses ADD COLUMN failure TEXT")
        self.digests = DigestStore(self.store)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[str, int, int, str | None]]:
        """{key: (text, prompt_tokens, completion_tokens, failure)} for the keys present."""
        rows = self.store.query_in("SELECT key, text, prompt_tokens, completion_tokens, failure FROM responses WHERE key IN ({})", keys)
        return {k: (text, pt, ct, failure) for k, text, pt, ct, failure in rows}

    def put(
        self, key: str, identity: str, request: dict, text: str, prompt_tokens: int, completion_tokens: int, failure: str | None
    ) -> None:
        """Store a response and clear its journal entry, in one transaction."""
        row = (key, identity, json.dumps(request, ensure_ascii=False), text, prompt_tokens, completion_tokens, time.time(), failure)
        self.store.transaction([(_PUT, row), ("DELETE FROM pending WHERE key = ?", (key,))])

    # -- the journal of requests sent but not answered --
    def sending(self, key: str, identity: str) -> None:
        self.store.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?)", (key, identity, time.time()))

    def unanswered(self, key: str) -> None:
        """A request that got no answer (it is retried, or the run gives up on it)."""
        self.store.execute("DELETE FROM pending WHERE key = ?", (key,))

    def pending(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` were sent by a run that stopped before their answer was stored."""
        return {k for (k,) in self.store.query_in("SELECT key FROM pending WHERE key IN ({})", keys)}

    def migrate(self, old_identity: str, new_identity: str) -> int:
        """Re-key the rows stored under `old_identity` (answers already paid for stay usable when
        the identity gains detail); returns how many moved."""
        rows = self.store.query("SELECT key, request FROM responses WHERE identity = ?", (old_identity,))
        moves = [(cache_key(new_identity, json.loads(request)), new_identity, key) for key, request in rows]
        self.store.transaction([("UPDATE OR IGNORE responses SET key = ?, identity = ? WHERE key = ?", m) for m in moves])
        self.store.execute("DELETE FROM responses WHERE identity = ?", (old_identity,))  # duplicates of moved keys
        return len(moves)

    def __len__(self) -> int:
        return self.store.count("responses")

    def close(self) -> None:
        self.store.close()
