"""What the response cache keys on: everything about the model that changes an answer.

- a local folder (transformers, vllm): its weights, tokenizer files, chat template, config and
  generation config;
- a served model (openai backend): endpoint and model name, plus `model_version` when declared,
  else the server's metadata for the model (GET /models/{model}, minus its volatile fields). A
  server that keeps the name and path of a retrained model (`vllm serve` of a new checkpoint)
  looks the same from outside: declare `model_version` (e.g. the DVC hash of the served folder).
- a folder served for evaluate / ask (`vllm serve FOLDER --served-model-name NAME`): NAME is
  `served_name(FOLDER)`, its local identity, so the name itself says which weights answer.
URL credentials (`user:password@`) never enter an identity or a message.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from qa_forge.core.hashing import DigestStore, files_digest
from qa_forge.core.io import UserError
from qa_forge.llm.params import LLMParams

WEIGHT_GLOBS = ("*.safetensors", "*.bin")
NOT_WEIGHTS = {"training_args.bin"}
# what besides the weights decides an answer: how the prompt is rendered and tokenised, and how
# generation stops and samples
ANSWER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
VOLATILE_METADATA = {"created", "permission"}  # vLLM stamps these per request
SERVED_PREFIX = "qa-forge-"
SERVED_DIGITS = 16  # of the sha256: names stay readable; 64 bits tell builds apart (not a defence against forgery)


def public_url(url: str | None) -> str:
    """`url` without `user:password@`: safe to store and print."""
    if not url:
        return "api.openai.com"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)) if parts.netloc else url


def weight_files(folder: Path) -> list[Path]:
    files = sorted({p for g in WEIGHT_GLOBS for p in folder.glob(g) if p.is_file() and p.name not in NOT_WEIGHTS})
    if not files:
        raise UserError(f"param 'model': {folder} has no weight files ({', '.join(WEIGHT_GLOBS)})")
    return files


def weights_digest(folder: Path, store: DigestStore | None = None) -> str:
    """sha256 over a folder's weight files (name + content digest, sorted by name)."""
    return files_digest(weight_files(folder), lambda f: f.name, store)


def local_identity(folder: Path, store: DigestStore | None = None) -> str:
    files = weight_files(folder) + sorted(folder / name for name in ANSWER_FILES if (folder / name).is_file())
    return f"local:{files_digest(files, lambda f: f.name, store)}"


def served_name(folder: Path, store: DigestStore | None = None) -> str:
    """The model name to serve `folder` under: its content hash (`local_identity`: weights, tokenizer,
    chat template, config, generation config). A client asking a server for this name gets these
    weights or a 404, never a retrained model left behind under an old name."""
    return SERVED_PREFIX + local_identity(folder, store).removeprefix("local:")[:SERVED_DIGITS]


def served_identity(p: LLMParams, metadata: dict | None) -> str:
    version = p.model_version if p.model_version is not None else json.dumps(metadata, sort_keys=True)
    return f"openai:{public_url(p.base_url)}:{p.model}:{version}"


def legacy_identity(p: LLMParams, store: DigestStore | None = None) -> str | None:
    """The identity caches used before it covered tokenizer, template and version: its rows are
    re-keyed (same weights, same endpoint), not orphaned."""
    if p.backend == "openai":
        return f"openai:{p.base_url or 'api.openai.com'}:{p.model}"
    return f"local:{weights_digest(Path(p.model), store)}" if Path(p.model).is_dir() else None


def model_identity(p: LLMParams, store: DigestStore | None = None, metadata: dict | None = None) -> str:
    if p.backend == "openai":
        return served_identity(p, metadata)
    if Path(p.model).is_dir():
        return local_identity(Path(p.model), store)
    return f"hub:{p.model}"
