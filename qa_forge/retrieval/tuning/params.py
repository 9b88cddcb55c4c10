"""The training run's params, apart from train.py: the train_retriever stage validates them without
importing torch and sentence-transformers (with the switch off it never trains)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt


class TuneParams(BaseModel):
    """The training run."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    epochs: PositiveFloat
    max_steps: PositiveInt | None  # set: stop after this many steps (overrides epochs)
    learning_rate: PositiveFloat
    batch_size: int = Field(ge=2)  # rows per batch: every other row's passages are a row's in-batch negatives
    warmup_ratio: float = Field(ge=0.0, lt=1.0)
    negatives: NonNegativeInt  # hard negatives per row (0: in-batch negatives only)
    scale: PositiveFloat  # MNRL's inverse temperature on the cosine similarities (sentence-transformers: 20)
    # tokens a text is cut to while training (null: the model's own, 256 for MiniLM); the saved model keeps its
    # own length for retrieval. A batch is padded to its longest text, so one long paragraph among 96 makes
    # the whole step 256 wide: training cost is about linear in this
    max_seq_length: PositiveInt | None
