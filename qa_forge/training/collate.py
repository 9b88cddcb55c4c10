"""Batching packed rows for training and scoring, so that attention never crosses a conversation.

A row is {"input_ids", "labels", "position_ids"}: `position_ids` restart at 0 where a packed
conversation (a segment) starts, and `labels` are -100 on non-assistant tokens and on each
segment's first token. The batch carries no attention mask (`use_cache=False`). Two layouts:

- padded (sdpa, eager, flex_attention): rows right-padded to the longest, shape (B, N). transformers'
  masking utilities find the segments of each row from its restarting position ids and build a
  block-diagonal causal mask per row; each pad is a one-token segment of its own (position 0,
  label -100), so nothing real attends to it.
- flattened (flash_attention_2/3, sdpa_varlen): the micro-batch as one row (1, ΣN) with explicit
  boundaries `cu_seq_lens_q/k` and `max_length_q/k`, the padding-free layout varlen kernels take.
  transformers' flash path treats position ids as packed only when the batch size is 1
  (`_is_packed_sequence`); a (B, N) batch would run each row as one causal sequence, every
  conversation attending to the ones before it.

Why not transformers' DataCollatorWithFlattening (which pack uses to build rows): it takes each
feature as ONE sequence and renumbers its positions from 0, so the conversations inside a packed
row would lose their boundaries. Here the boundaries come from the rows' own position ids.

Torch only (no pydantic): bench/gpu_check.py imports it on a machine with only torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qa_forge.core.segments import IGNORE_INDEX, segment_bounds

if TYPE_CHECKING:
    import torch

# attention implementations that take the flattened layout
VARLEN = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn", "kernels-community/flash-attn3", "sdpa_varlen")


def flattens(attn_implementation: str) -> bool:
    """Whether batches for this attention implementation are flattened into one row."""
    return attn_implementation in VARLEN


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded layout: (B, N), position ids restarting at each segment (and at each pad)."""
    import torch  # here, not at the top: the train stage checks its inputs before paying for torch

    n = max(len(r["input_ids"]) for r in rows)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([list(r[key]) + [value] * (n - len(r[key])) for r in rows], dtype=torch.long)

    return {"input_ids": pad("input_ids", pad_id), "labels": pad("labels", IGNORE_INDEX), "position_ids": pad("position_ids", 0)}


def collate_flat(rows: list[dict]) -> dict:
    """Flattened layout: one row (1, ΣN), no padding, and every segment's boundaries as
    `cu_seq_lens_q/k` (int32) and `max_length_q/k` (ints), the kwargs transformers passes to
    `flash_attn_varlen_func`."""
    import torch

    bounds, offset = [0], 0
    for r in rows:
        bounds += [offset + b for b in segment_bounds(list(r["position_ids"]))[1:]]
        offset += len(r["input_ids"])
    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = int(cu.diff().max())

    def cat(key: str) -> torch.Tensor:
        return torch.tensor([[t for r in rows for t in r[key]]], dtype=torch.long)

    return {
        "input_ids": cat("input_ids"),
        "labels": cat("labels"),
        "position_ids": cat("position_ids"),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


class Collator:
    """A picklable collate_fn for DataLoader / Trainer: flattened for varlen kernels, else padded."""

    def __init__(self, pad_id: int, flatten: bool = False):
        self.pad_id = pad_id
        self.flatten = flatten

    def __call__(self, rows: list[dict]) -> dict:
        return collate_flat(rows) if self.flatten else collate(rows, self.pad_id)
