"""What the response cache keys on: the model's identity."""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.hashing import DigestStore, files_digest
from qa_forge.core.io import UserError
from qa_forge.llm.params import LLMParams

WEIGHT_GLOBS = ("*.safetensors", "*.bin")
NOT_WEIGHTS = {"training_args.bin"}


def weights_digest(folder: Path, store: DigestStore | None = None) -> str:
    """sha256 over a folder's weight files (name + content digest, sorted by name)."""
    files = sorted({p for g in WEIGHT_GLOBS for p in folder.glob(g) if p.is_file() and p.name not in NOT_WEIGHTS})
    if not files:
        raise UserError(f"param 'model': {folder} has no weight files ({', '.join(WEIGHT_GLOBS)})")
    return files_digest(files, lambda f: f.name, store)


def model_identity(p: LLMParams, store: DigestStore | None = None) -> str:
    """API endpoint + model name, a hash of local weights, or a hub id."""
    if p.backend == "openai":
        return f"openai:{p.base_url or 'api.openai.com'}:{p.model}"
    if Path(p.model).is_dir():
        return f"local:{weights_digest(Path(p.model), store)}"
    return f"hub:{p.model}"
