"""A tiny Llama + word-level tokenizer built offline, and packed rows in the pack stage's format."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>"]
VOCAB = SPECIAL + [f"w{i}" for i in range(61)]  # 64 tokens
MARK = 1  # <|im_start|>: the token before every answer
END = 2  # <|im_end|>: ends every answer (and pads, like SmolLM2's pad = eos)
ANSWER = [10, 11, 12, 13, 14, 15, 16, 17]  # every answer: learnable, unlike the noise prompts


def make_base(path: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<|im_end|>", eos_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<pad>"
    )
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.3,
        bos_token_id=MARK,
        eos_token_id=END,
        pad_token_id=END,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def segment(rng: random.Random) -> tuple[list[int], list[int]]:
    prompt = [rng.randrange(20, len(VOCAB)) for _ in range(rng.randint(4, 8))] + [MARK]
    answer = ANSWER + [END]
    ids = prompt + answer
    labels = [-100] * len(prompt) + answer  # the first token of a segment is never labelled
    return ids, labels


def packed_rows(n: int, seed: int = 0, per_row: int = 3) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = {"input_ids": [], "labels": [], "position_ids": []}
        for _ in range(per_row):
            ids, labels = segment(rng)
            row["input_ids"] += ids
            row["labels"] += labels
            row["position_ids"] += list(range(len(ids)))
        rows.append(row)
    return rows


def write_packed(folder: Path, n_train: int = 32, n_valid: int = 4, seed: int = 0) -> Path:
    """The pack stage's folder: train/valid rows and the chat template they were rendered with."""
    from qa_forge.chat.render import CHATML

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chat_template.jinja").write_text(CHATML)
    for name, n, s in (("train", n_train, seed), ("valid", n_valid, seed + 1000)):
        with open(folder / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in packed_rows(n, s))
    return folder


def write_params(path: Path, **train) -> Path:
    path.write_text(yaml.safe_dump({"train": train}, sort_keys=False))
    return path
