"""Content hashing of files and folders, with one memo: a file is read again only when its path,
size, mtime or inode changed. The memo lives in this process and, optionally, in a `DigestStore`
(an SQLite table) so a big model is hashed once across runs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from qa_forge.core.store import SqliteStore

CHUNK = 1 << 22  # bytes read at a time

_memo: dict[str, str] = {}  # memo key -> sha256, this process


class DigestStore:
    """File digests kept across runs, in a table of an SQLite store."""

    def __init__(self, store: SqliteStore):
        self.store = store
        store.execute("CREATE TABLE IF NOT EXISTS file_digests (memo TEXT PRIMARY KEY, digest TEXT NOT NULL)")

    def get(self, memo: str) -> str | None:
        row = self.store.query("SELECT digest FROM file_digests WHERE memo = ?", (memo,))
        return row[0][0] if row else None

    def put(self, memo: str, digest: str) -> None:
        self.store.execute("INSERT OR REPLACE INTO file_digests VALUES (?, ?)", (memo, digest))


def memo_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{st.st_ino}"


def file_digest(path: str | Path, store: DigestStore | None = None) -> str:
    """sha256 of a file's bytes."""
    path = Path(path)
    key = memo_key(path)
    if key not in _memo:
        digest = store.get(key) if store is not None else None
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            digest = h.hexdigest()
            if store is not None:
                store.put(key, digest)
        _memo[key] = digest
    return _memo[key]


def files_digest(files: Iterable[Path], name, store: DigestStore | None = None) -> str:
    """sha256 over files, each as `name(file)` and its content digest, in the order given."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{name(f)}\0{file_digest(f, store)}\n".encode())
    return h.hexdigest()


def check_revision(revision: str | None, field: str) -> str:
    """A hub commit (40 hex digits): a branch or tag moves, so a rerun a month later could read other
    data or weights. Raises ValueError (a params validation error names the field)."""
    if revision is None or not re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ValueError(f"'{field}' must pin a hub commit (40 hex digits, e.g. from the repo's history page), got {revision!r}")
    return revision
