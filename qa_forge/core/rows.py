"""The packed-row contract between pack (writer) and train (reader).

A row is {"input_ids", "labels", "position_ids"}, lists of equal length. `position_ids` restart at
0 where a packed conversation (a segment) starts; `labels` are IGNORE_INDEX on tokens not learnt
(everything but assistant turns) and on each segment's first token, so no segment is predicted
from the one before it.
"""

from __future__ import annotations

import itertools

IGNORE_INDEX = -100  # a label the loss skips (transformers' CrossEntropyLoss ignore_index)
ROW_KEYS = ("input_ids", "labels", "position_ids")


def segments(position_ids: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each segment in a packed row."""
    starts = [i for i, p in enumerate(position_ids) if p == 0] + [len(position_ids)]
    return list(itertools.pairwise(starts))
