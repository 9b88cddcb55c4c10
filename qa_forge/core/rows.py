"""The packed-row contract between pack (writer) and train (reader).

A row is {"input_ids", "labels", "position_ids"}, lists of equal length. `position_ids` restart at
0 where a packed conversation (a segment) starts; `labels` are IGNORE_INDEX on tokens not learnt
(everything but assistant turns) and on each segment's first token, so no segment is predicted
from the one before it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator, model_validator

from qa_forge.core.segments import IGNORE_INDEX, segments  # noqa: F401  (the row contract re-exports them)

ROW_KEYS = ("input_ids", "labels", "position_ids")


class PackedRow(BaseModel):
    """One row of data/packed/*.jsonl as train reads it. Validated with the model's vocab size in the
    context (`vocab_size`): an id past it means rows packed with another tokenizer, which would
    otherwise fail deep inside the embedding lookup."""

    model_config = ConfigDict(extra="forbid")

    input_ids: list[StrictInt] = Field(min_length=1)
    labels: list[StrictInt]
    position_ids: list[StrictInt]

    @field_validator("input_ids", "labels")
    @classmethod
    def _in_vocab(cls, ids: list[int], info: ValidationInfo) -> list[int]:
        vocab = (info.context or {}).get("vocab_size")
        skip = IGNORE_INDEX if info.field_name == "labels" else None  # labels also hold the ignored -100
        bad = next((t for t in ids if t != skip and not 0 <= t < vocab), None) if vocab else None
        if bad is not None:
            raise ValueError(
                f"token id {bad} is outside the model's vocabulary (vocab_size {vocab}): were the rows packed with another tokenizer?"
            )
        return ids

    @model_validator(mode="after")
    def _aligned(self):
        if not len(self.input_ids) == len(self.labels) == len(self.position_ids):
            raise ValueError("input_ids, labels and position_ids must be non-empty and of equal length")
        if self.position_ids[0] != 0:
            raise ValueError("position_ids must start at 0")
        return self
