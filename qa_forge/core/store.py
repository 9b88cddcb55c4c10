"""One SQLite file in WAL mode behind a lock, shared by threads: the response cache, the embedding
cache and the digest memo all use it. Autocommit: every statement is its own transaction, so a
killed process loses nothing it wrote."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from qa_forge.core.io import UserError

MAX_VARIABLES = 500  # bound variables per query: SQLite's limit is higher, this stays well under


class SqliteStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: survives a process kill
            self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # reads the schema: a damaged file fails here
        except sqlite3.DatabaseError as e:
            # every store is a cache: deleting the file loses only time, never data
            raise UserError(f"{self.path}: not a usable SQLite cache ({e}): it only holds a cache, delete it and run again") from None

    def execute(self, sql: str, args: Sequence = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def execute_many(self, sql: str, rows: Iterable[Sequence]) -> None:
        """All rows in one transaction."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(sql, rows)
            self._db.execute("COMMIT")

    def transaction(self, statements: Iterable[tuple[str, Sequence]]) -> None:
        """Several statements that stand or fall together."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def query_in(self, sql: str, values: Iterable) -> list[tuple]:
        """`sql` holds one `IN ({})`: run it over `values` in chunks under the variable limit."""
        values = list(dict.fromkeys(values))
        out = []
        for i in range(0, len(values), MAX_VARIABLES):
            chunk = values[i : i + MAX_VARIABLES]
            out += self.query(sql.format(",".join("?" * len(chunk))), chunk)
        return out

    def count(self, table: str) -> int:
        return self.query(f"SELECT COUNT(*) FROM {table}")[0][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
