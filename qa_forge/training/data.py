"""Packed rows for the Trainer: the dataset and the collator that also counts real tokens."""

from __future__ import annotations

from pathlib import Path

from qa_forge.core.io import iter_jsonl
from qa_forge.core.rows import IGNORE_INDEX, ROW_KEYS, PackedRow
from qa_forge.training.collate import Collator


class PackedDataset:
    """Rows of a packed JSONL file, kept as compact int arrays; items are dicts of lists. With
    `vocab_size` (the model's), a token id past it is an error naming the file and line."""

    KEYS = ROW_KEYS

    def __init__(self, path: Path, vocab_size: int | None = None):
        import numpy as np

        self.path = path
        rows = iter_jsonl(path, PackedRow, context={"vocab_size": vocab_size})
        self.rows: list[tuple] = [tuple(np.asarray(getattr(row, k), dtype=np.int64) for k in self.KEYS) for row in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return dict(zip(self.KEYS, (a.tolist() for a in self.rows[i])))

    def tokens(self) -> int:
        return sum(len(r[0]) for r in self.rows)

    def supervised(self) -> int:
        return sum(int((r[1] != IGNORE_INDEX).sum()) for r in self.rows)


class CountingCollator(Collator):
    """`qa_forge.training.collate.Collator`, plus the batch's real token count (popped before the forward)."""

    def __call__(self, rows: list[dict]):
        import torch

        batch = super().__call__(rows)
        batch["num_real_tokens"] = torch.tensor(sum(len(r["input_ids"]) for r in rows), dtype=torch.long)
        return batch
