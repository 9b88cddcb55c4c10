"""Batching packed or single conversations for training and evaluation.

A row is {"input_ids", "labels", "position_ids"}: `position_ids` restart at 0 where a packed
segment starts, and `labels` are -100 on non-assistant tokens and on each segment's first token.
The batch carries no attention mask: with `use_cache=False`, transformers derives a block-diagonal
causal mask from restarting position ids (sdpa, eager, flex) or runs varlen kernels (flash), so
attention never crosses a segment. Rows are right-padded to the batch's longest; each pad is a
one-token segment of its own (position 0, label -100), so nothing real attends to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qa_forge.core.rows import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    import torch  # here, not at the top: the train stage checks its inputs before paying for torch

    n = max(len(r["input_ids"]) for r in rows)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([list(r[key]) + [value] * (n - len(r[key])) for r in rows], dtype=torch.long)

    return {"input_ids": pad("input_ids", pad_id), "labels": pad("labels", IGNORE_INDEX), "position_ids": pad("position_ids", 0)}


class Collator:
    """A picklable collate_fn for DataLoader / Trainer."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return collate(rows, self.pad_id)
