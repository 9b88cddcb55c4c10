"""fetch: load train and eval sources (hub or local files) into records.

Writes data/fetched/train.jsonl, data/fetched/eval_<source>.jsonl and metrics/fetch.json
(records per source and role, drops by reason, train/eval overlap, which must be zero).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, model_validator

from qa_forge import traces
from qa_forge.core.hashing import check_revision
from qa_forge.core.io import UserError
from qa_forge.core.records import Origin, Record
from qa_forge.data.sources import SOURCES, Drop, loader
from qa_forge.traces import RULE_SOURCES


class SourceParams(BaseModel):
    """One source: a local file in the original format (`path`) or a hub dataset (`hub`)."""

    model_config = ConfigDict(extra="forbid")

    # absent keys mean "not given": a file or a hub id, and how many items to take (None: all)
    path: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    split: str | None = None  # required with `hub`
    revision: str | None = None  # required with `hub`: the dataset commit, so a rerun reads the same data
    n: NonNegativeInt | None = None  # sample this many
    answerable: NonNegativeInt | None = None  # or sample per group (SQuAD, MuSiQue)
    unanswerable: NonNegativeInt | None = None
    # samples: our complete answers (fetch.answers_path); rule: traces composed from the source's own
    # annotations (qa_forge.traces: HotpotQA, 2WikiMultihopQA, MuSiQue, SQuAD v2); null: the generator writes them
    answers_from: Literal["samples", "rule"] | None = None

    @model_validator(mode="after")
    def _one_origin(self):
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (local file) or 'hub' (dataset id)")
        if self.hub is not None and self.split is None:
            raise ValueError("a hub source needs 'split' (e.g. train)")
        if self.hub is not None:
            check_revision(self.revision, "revision")
        if self.n is not None and (self.answerable is not None or self.unanswerable is not None):
            raise ValueError("give 'n' or 'answerable'/'unanswerable', not both")
        return self


class FetchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int
    answers_path: str
    unanswerable_answer: str
    train: dict[str, SourceParams]
    eval: dict[str, SourceParams]

    @model_validator(mode="after")
    def _known_sources(self):
        for role in ("train", "eval"):
            for name in getattr(self, role):
                if name not in SOURCES:
                    raise ValueError(f"unknown source '{name}' in fetch.{role}: choose one of {', '.join(SOURCES)}")
        for name, spec in self.train.items():
            if spec.answers_from == "rule" and name not in RULE_SOURCES:
                raise ValueError(
                    f"fetch.train.{name}.answers_from: rule: {name} has no supporting sentences to compose a trace from "
                    f"(rule sources: {', '.join(RULE_SOURCES)}); use samples or null (the generator)"
                )
        for name, spec in self.eval.items():
            if spec.answers_from is not None:
                raise ValueError(f"fetch.eval.{name}.answers_from: eval records keep only their gold answers; remove the key")
        return self


def read_items(name: str, spec: SourceParams) -> tuple[list[dict], str]:
    mod = loader(name)
    if spec.path is not None:
        return mod.read_local(Path(spec.path)), spec.path
    import datasets

    where = f"hub:{spec.hub}@{spec.revision[:8]}[{spec.split}]"
    try:
        ds = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split, revision=spec.revision)
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (offline, unknown id, bad config): all become one clear error
        raise UserError(f"{where}: cannot load ({type(e).__name__}: {e})") from None
    return mod.read_hub(ds), where


def convert(name: str, items: list[dict], where: str, rule_abstain: str | None = None) -> tuple[list[Record], Counter]:
    """Items -> records (with `rule_abstain`, the source's rule traces, abstaining with that answer);
    Drop is counted, anything else is a format error naming the item."""
    mod = loader(name)
    to_record = mod.to_record if rule_abstain is None else (lambda item: traces.compose(name, item, rule_abstain))
    records, drops = [], Counter()
    for i, item in enumerate(items):
        try:
            records.append(to_record(item))
        except Drop as d:
            drops[d.reason] += 1
        except KeyError as e:
            raise UserError(f"{where}: record {i}: missing field {e} (not the {name} format?)") from None
        except (TypeError, AttributeError, ValueError) as e:
            ident = item.get("id", item.get("_id", "")) if isinstance(item, dict) else ""
            raise UserError(f"{where}: record {i} {ident}: {e}") from None
    seen, unique = set(), []
    for r in records:
        if r.id in seen:
            drops["duplicate_id"] += 1
        else:
            seen.add(r.id)
            unique.append(r)
    return unique, drops


def sample(records: list[Record], spec: SourceParams, rng: random.Random) -> list[Record]:
    """Sample `n`, or `answerable` + `unanswerable`, keeping file order among the chosen."""

    def take(group: list[Record], k: int | None) -> list[Record]:
        return group if k is None or k >= len(group) else rng.sample(group, k)

    if spec.n is not None:
        chosen = take(records, spec.n)
    else:
        chosen = take([r for r in records if r.answerable], spec.answerable) + take(
            [r for r in records if not r.answerable], spec.unanswerable
        )
    keep = {r.id for r in chosen}
    return [r for r in records if r.id in keep]


def load_sample_answers(path: str | Path) -> dict[tuple[str, str], dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: answers file not found (param fetch.answers_path)")
    table = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                table[(row["src"], norm_q(row["question"]))] = row
            except (json.JSONDecodeError, KeyError) as e:
                raise UserError(f"{path}:{i}: bad answers row ({e})") from None
    return table


def apply_sample_answers(r: Record, row: dict, where: str) -> Record:
    """Fill thought/answer (and sub-question text where the source has none) from our samples."""
    subs = row.get("sub_questions", [])
    if len(subs) != len(r.sub_questions):
        raise UserError(f"{where}: record {r.id}: field 'sub_questions': samples give {len(subs)}, source has {len(r.sub_questions)}")
    origin = Origin(kind="samples")
    for sq, a in zip(r.sub_questions, subs):
        sq.question = sq.question or a["question"]
        sq.thought, sq.answer, sq.answer_origin = a["thought"], a["answer"], origin
    if r.multihop:
        r.summary, r.final_thought = row.get("summary", ""), row.get("final_thought", "")
    r.final_answer = row["final_answer"]
    r.final_origin = origin
    return r


def fetch(p: FetchParams) -> tuple[dict[str, list[Record]], dict]:
    """Return {output name: records} and the metrics."""
    rng = random.Random(p.seed)
    answers = None
    outputs: dict[str, list[Record]] = {"train": []}
    report: dict = {"train": {}, "eval": {}}
    for role in ("train", "eval"):
        for name, spec in getattr(p, role).items():
            items, where = read_items(name, spec)
            if not items:
                raise UserError(f"{where}: no items (empty file?)")
            rule = p.unanswerable_answer if spec.answers_from == "rule" else None
            records, drops = convert(name, items, where, rule)
            chosen = sample(records, spec, rng)
            if spec.answers_from == "samples":
                answers = answers if answers is not None else load_sample_answers(p.answers_path)
                for r in chosen:
                    if (row := answers.get((r.src, norm_q(r.question)))) is not None:
                        apply_sample_answers(r, row, p.answers_path)
            for r in chosen:
                if not r.answerable and r.multihop and not r.final_answer:
                    r.final_answer, r.final_origin = p.unanswerable_answer, Origin(kind="rule")
            report[role][name] = {
                "read": len(items),
                "dropped": dict(sorted(drops.items())),
                "kept": len(records),
                "records": len(chosen),
                "answerable": sum(r.answerable for r in chosen),
                "unanswerable": sum(not r.answerable for r in chosen),
                "with_answers": sum(bool(r.final_answer) for r in chosen),
            }
            if role == "train":
                outputs["train"].extend(chosen)
            else:
                outputs[f"eval_{name}"] = chosen
    train_q = {norm_q(r.question) for r in outputs["train"]}
    overlap = sorted({r.question for k, rs in outputs.items() if k != "train" for r in rs if norm_q(r.question) in train_q})
    report["overlap"] = len(overlap)
    report["train_records"] = len(outputs["train"])
    if overlap:
        raise UserError(
            f"train/eval overlap: {len(overlap)} question(s) appear in both, e.g. {overlap[0]!r}; remove them from a train source"
        )
    return outputs, report


def norm_q(q: str) -> str:
    """Question text for matching: case, spacing and a final "?" ignored."""
    return " ".join(q.lower().strip().rstrip("?").split())
