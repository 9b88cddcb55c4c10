"""Packed rows for the Trainer: the dataset and the collator that also counts real tokens."""

from __future__ import annotations

import json
from pathlib import Path

from qa_forge.core.io import UserError
from qa_forge.core.rows import IGNORE_INDEX, ROW_KEYS
from qa_forge.training.collate import Collator


class PackedDataset:
    """Rows of a packed JSONL file, kept as compact int arrays; items are dicts of lists."""

    KEYS = ROW_KEYS

    def __init__(self, path: Path):
        import numpy as np

        if not path.is_file():
            raise UserError(f"{path}: file not found (the pack stage writes it)")
        self.path = path
        self.rows: list[tuple] = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{i}: not valid JSON: {e}") from None
                self.rows.append(tuple(np.asarray(self._check(row, path, i)[k], dtype=np.int64) for k in self.KEYS))

    @classmethod
    def _check(cls, row, path, i) -> dict:
        if not isinstance(row, dict) or any(k not in row for k in cls.KEYS):
            raise UserError(f"{path}:{i}: a row needs the keys {list(cls.KEYS)}")
        n = len(row["input_ids"])
        if n == 0 or any(len(row[k]) != n for k in cls.KEYS):
            raise UserError(f"{path}:{i}: input_ids, labels and position_ids must be non-empty and of equal length")
        if row["position_ids"][0] != 0:
            raise UserError(f"{path}:{i}: position_ids must start at 0")
        return row

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
