"""regenerate: rewrite, at temperature 0, every answer a model wrote hot (generators 1, 2 and 4)
or left empty: each hop re-answered from its paragraph alone (thought, answer, short answer or
an abstention), then the multi-hop summary, thought and final answer from the hop answers.
Answers from sources, our samples or generator 3 (temperature 0) are kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from qa_forge.core.io import UserError, read_records
from qa_forge.core.records import Origin, Record, SubQuestion
from qa_forge.data import answering
from qa_forge.llm.llm import LLM


class RegenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(ge=0)
    hot_above: float = Field(ge=0, description="answers written above this temperature are rewritten")
    max_tokens: dict[str, int]  # answer, final


def needs_answer(sq: SubQuestion, p: RegenerateParams) -> bool:
    return sq.answer_origin is None or sq.answer_origin.is_hot(p.hot_above)


def regenerate(llm: LLM, records: list[Record], p: RegenerateParams) -> tuple[list[Record], int]:
    records = [r.model_copy(deep=True) for r in records]
    todo = [r for r in records if not r.meta.get("errors") and any(needs_answer(sq, p) for sq in r.sub_questions)]
    origin = Origin(kind="model", model=llm.params.model, temperature=p.temperature)
    answering.answer_hops(
        llm, todo, lambda sq: needs_answer(sq, p), answering.plain_prompt, origin, p.max_tokens["answer"], "regenerate: answers"
    )
    answering.write_finals(llm, todo, lambda r: True, origin, p.max_tokens["final"], "regenerate: final answers")
    return records, len(todo)


def read_inputs(inputs: list[Path]) -> dict[str, list[Record]]:
    """Output name (the input's stem) -> its records, all read before any LLM call. Two inputs with
    one file name would write one output: refused. One input may be empty (no documents), not all."""
    names: dict[str, Path] = {}
    for path in inputs:
        if path.stem in names:
            raise UserError(f"{names[path.stem]} and {path}: two inputs named {path.name}; each writes {path.stem}.jsonl: rename one")
        names[path.stem] = path
    records = {name: read_records(path, allow_empty=True) for name, path in names.items()}
    if not any(records.values()):
        raise UserError(f"{', '.join(map(str, inputs))}: no records to regenerate (empty input)")
    return records
