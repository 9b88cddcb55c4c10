"""merge: fold the trained adapter into the base model, as a plain Hugging Face folder.

- lora / qlora (`models/trained` holds adapter_config.json): the base loads in `merge.dtype`, never
  4-bit (a QLoRA adapter merges onto the unquantised base), then peft's merge_and_unload.
- full (`models/trained` is a whole model): re-saved in `merge.dtype`.

Saved with the tokenizer to a temporary folder, then renamed onto `models/merged`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qa_forge.core.io import UserError, atomic_dir


class MergeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32", "bfloat16", "float16"]
    max_shard_size: str  # e.g. 5GB


def trained_mode(trained: Path) -> str:
    if (trained / "adapter_config.json").is_file():
        info = trained / "train_info.json"
        return json.loads(info.read_text()).get("mode", "lora") if info.is_file() else "lora"
    if (trained / "config.json").is_file():
        return "full"
    raise UserError(f"{trained}: neither an adapter (adapter_config.json) nor a model (config.json): run the train stage first")


def merged_model(base: Path, trained: Path, dtype: str):
    """The model to save: base + adapter merged, or the fully trained model."""
    import torch
    from transformers import AutoModelForCausalLM

    dt = getattr(torch, dtype)
    mode = trained_mode(trained)
    if mode == "full":
        return AutoModelForCausalLM.from_pretrained(trained, dtype=dt), mode
    if not (base / "config.json").is_file():
        raise UserError(f"{base}: not a model folder (no config.json)")
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dt)  # never quantised: qlora merges onto the full base
    model = PeftModel.from_pretrained(model, trained).merge_and_unload()
    return model, mode


def merge(p: MergeParams, base: Path, trained: Path, out: Path) -> dict:
    from transformers import AutoTokenizer

    start = time.time()
    model, mode = merged_model(base, trained, p.dtype)
    model.config.use_cache = True  # inference default again (training turned it off)
    tok = AutoTokenizer.from_pretrained(trained if (trained / "tokenizer_config.json").is_file() else base)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, max_shard_size=p.max_shard_size)
        tok.save_pretrained(tmp)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"mode": mode, "dtype": p.dtype, "seconds": round(time.time() - start, 1), "size_mb": round(size / 1e6, 1)}
