"""The one record format every stage reads and writes (JSONL, one Record per line).

Answers are structured, never pre-rendered: `qa_forge.chat.render` composes the conversation text.
Each answer carries an `Origin` so later stages know what they may rewrite: only answers a
model wrote at high temperature are regenerated; `source`, `samples` and `rule` are kept.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OriginKind = Literal["source", "samples", "rule", "model"]


class Origin(BaseModel):
    """Where an answer came from: a dataset, our samples, a fixed rule, or a model at a temperature."""

    model_config = ConfigDict(extra="forbid")

    kind: OriginKind
    model: str | None = None
    temperature: float | None = None

    def is_hot(self, threshold: float = 0.0) -> bool:
        """True when a model wrote it above `threshold`: such answers get regenerated."""
        return self.kind == "model" and (self.temperature or 0.0) > threshold


class SubQuestion(BaseModel):
    """One hop: a single question, its retrieved paragraph and its answer."""

    model_config = ConfigDict(extra="forbid")

    question: str = ""
    paragraph: str = ""
    title: str | None = None
    thought: str = ""
    answer: str = ""  # the complete answer; empty until a source, the samples or a model writes it
    short_answer: str | None = None
    unanswerable: bool = False
    answer_origin: Origin | None = None  # origin of thought + answer


class Record(BaseModel):
    """A single-hop or multi-hop question with everything needed to render a training chat."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    src: str = Field(min_length=1)
    question: str = ""  # empty only in a generated record whose completion did not parse (filter drops it)
    multihop: bool = False
    sub_questions: list[SubQuestion] = Field(default_factory=list)
    summary: str = ""
    final_thought: str = ""
    final_answer: str = ""
    short_answer: str | None = None
    final_origin: Origin | None = None  # origin of summary + final_thought + final_answer
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def answerable(self) -> bool:
        return not any(sq.unanswerable for sq in self.sub_questions)
