"""regenerate: rewrite, at temperature 0, every answer a model wrote hot (generators 1, 2 and 4)
or left empty: each hop re-answered from its paragraph alone (thought, answer, short answer or
an abstention), then the multi-hop summary, thought and final answer from the hop answers.
Answers from sources, our samples or generator 3 (temperature 0) are kept."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import BaseModel, ConfigDict, Field

from stages import answering
from stages.io import load_yaml, read_records, validate, write_json, write_record_dir
from stages.llm import LLM, LLMParams
from stages.schema import Origin, Record, SubQuestion


class RegenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.0, ge=0)
    hot_above: float = Field(0.0, ge=0, description="answers written above this temperature are rewritten")
    max_tokens: dict[str, int] = Field(default_factory=lambda: {"answer": 192, "final": 256})


def needs_answer(sq: SubQuestion, p: RegenerateParams) -> bool:
    return sq.answer_origin is None or sq.answer_origin.is_hot(p.hot_above)


def regenerate(llm: LLM, records: list[Record], p: RegenerateParams) -> tuple[list[Record], int]:
    records = [r.model_copy(deep=True) for r in records]
    todo = [r for r in records if not r.meta.get("errors") and any(needs_answer(sq, p) for sq in r.sub_questions)]
    origin = Origin(kind="model", model=llm.params.model, temperature=p.temperature)
    answering.answer_hops(llm, todo, lambda sq: needs_answer(sq, p), answering.plain_prompt, origin, p.max_tokens["answer"], "regenerate: answers")
    answering.write_finals(llm, todo, lambda r: True, origin, p.max_tokens["final"], "regenerate: final answers")
    return records, len(todo)


def main(
    inputs: list[Path] = typer.Argument(..., help="JSONL files from generate"),
    params: Path = typer.Option(Path("params.yaml")),
    out: Path = typer.Option(Path("data/regenerated")),
    metrics: Path = typer.Option(Path("metrics/regenerate.json")),
):
    """Rewrite hot or missing answers at temperature 0."""
    raw = load_yaml(params)
    p = validate(RegenerateParams, raw.get("regenerate", {}), "regenerate")
    llm = LLM(validate(LLMParams, raw.get("llm", {}), "llm"))
    files, rewritten = {}, 0
    for path in inputs:
        files[path.stem], n = regenerate(llm, read_records(path), p)
        rewritten += n
    write_record_dir(out, files)
    write_json(metrics, {"records": {k: len(v) for k, v in files.items()}, "rewritten": rewritten, "llm": llm.stats})
    print(f"regenerate: rewrote {rewritten} records; llm {llm.stats}")
