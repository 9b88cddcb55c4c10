"""merge: fold the trained adapter into the base model, as a plain Hugging Face folder.

- lora / qlora (`models/trained` holds adapter_config.json): the base loads in `merge.dtype`, never
  4-bit (a QLoRA adapter merges onto the unquantised base), then peft's merge_and_unload.
- full (`models/trained` is a whole model): re-saved in `merge.dtype`.

Saved with the tokenizer to a temporary folder, then renamed onto `models/merged`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from qa_forge.core.io import UserError, atomic_dir, check_model_folder, model_errors, read_json


class MergeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32", "bfloat16", "float16"]
    max_shard_size: str  # e.g. 5GB


def trained_mode(trained: Path) -> str:
    if not trained.is_dir():
        raise UserError(f"{trained}: folder not found: run the train stage first")
    if (trained / "adapter_config.json").is_file():
        info = trained / "train_info.json"
        return read_json(info).get("mode", "lora") if info.is_file() else "lora"
    if (trained / "config.json").is_file():
        return "full"
    raise UserError(f"{trained}: neither an adapter (adapter_config.json) nor a model (config.json): run the train stage first")


def check_inputs(base: Path, trained: Path) -> str:
    """The trained mode, once the folders merge reads are sound (before torch is imported)."""
    mode = trained_mode(trained)
    if mode == "full":
        check_model_folder(trained)
    else:
        check_model_folder(trained, config="adapter_config.json")
        check_model_folder(base)
    return mode


def merged_model(base: Path, trained: Path, dtype: str, mode: str):
    """The model to save: base + adapter merged, or the fully trained model."""
    import torch
    from transformers import AutoModelForCausalLM

    dt = getattr(torch, dtype)
    if mode == "full":
        with model_errors(trained):
            return AutoModelForCausalLM.from_pretrained(trained, dtype=dt)
    from peft import PeftModel

    with model_errors(base):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dt)  # never quantised: qlora merges onto the full base
    try:
        return PeftModel.from_pretrained(model, trained).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:  # a size mismatch, or target modules the base lacks
        detail = " ".join(ln.strip() for ln in str(e).splitlines()[:2])[:400]
        raise UserError(
            f"{trained}: the adapter does not fit the base {base} ({detail}): merge it onto the base it was trained on"
        ) from None


def merge(p: MergeParams, base: Path, trained: Path, out: Path) -> dict:
    start = time.time()
    mode = check_inputs(base, trained)
    from transformers import AutoTokenizer

    model = merged_model(base, trained, p.dtype, mode)
    model.config.use_cache = True  # inference default again (training turned it off)
    # the trained model's tokenizer, never the base's: it carries the chat template the rows were packed with
    with model_errors(trained, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(trained)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, max_shard_size=p.max_shard_size)
        tok.save_pretrained(tmp)
        if (trained / "train_info.json").is_file():  # how it was trained (run key, package versions) travels with it
            shutil.copyfile(trained / "train_info.json", tmp / "train_info.json")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"mode": mode, "dtype": p.dtype, "seconds": round(time.time() - start, 1), "size_mb": round(size / 1e6, 1)}
