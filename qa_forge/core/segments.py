"""The packed-row layout in plain Python (no torch, no pydantic): where the conversations of a row
start, and the label the loss skips. Shared by pack, the row schema, the collator and
bench/gpu_check.py (which runs on a machine with only torch and transformers)."""

from __future__ import annotations

import itertools

IGNORE_INDEX = -100  # a label the loss skips (transformers' CrossEntropyLoss ignore_index)


def segment_bounds(position_ids: list[int]) -> list[int]:
    """Where each segment of a row starts (its position id restarts at 0), then the row's length."""
    return [i for i, p in enumerate(position_ids) if p == 0 or i == 0] + [len(position_ids)]


def segments(position_ids: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each segment in a packed row."""
    return list(itertools.pairwise(segment_bounds(position_ids)))
