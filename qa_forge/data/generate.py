"""generate: an LLM writes training records.

1. entities:   two entities of a random category compared on one attribute (multi-hop)
2. attributes: two attributes of one entity asked together (multi-hop)
3. answers:    complete answers at temperature 0 for fetched train records that only carry short
               answers, grounded on the gold answer (HotpotQA / 2Wiki: sub-questions first)
4. documents:  .txt files -> chunks -> theme -> facts -> one Q&A per fact -> Q&A in several voices

Questions and paragraphs are written hot (`temperature` range); regenerate rewrites the answers.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

from qa_forge.core.io import UserError, model_errors, read_text
from qa_forge.core.prompts import fill, parse_fields, parse_list, require, user
from qa_forge.core.records import Origin, Record, SubQuestion
from qa_forge.data import answering
from qa_forge.llm.llm import LLM, Request

ENTITY_FIELDS = [
    "Entity 1",
    "Entity 2",
    "Common attributes",
    "Selected attribute",
    "Question 1",
    "Question 2",
    "Paragraph 1",
    "Paragraph 2",
    "Multi-hop question",
]
ATTRIBUTE_FIELDS = [
    "Entity",
    "Attributes",
    "Attribute 1",
    "Attribute 2",
    "Question 1",
    "Question 2",
    "Paragraph 1",
    "Paragraph 2",
    "Multi-hop question",
]


class Count(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: NonNegativeInt


class AnswersParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool


class DocumentsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: str | None  # null: generator 4 off
    chunk_tokens: int = Field(gt=16)
    max_chunks: NonNegativeInt | None  # null: every chunk
    max_facts: int = Field(gt=0)
    roles: list[str]


class GenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int
    temperature: tuple[float, float]  # questions and paragraphs are written hot, drawn from this range
    categories: str  # a text file of categories
    max_tokens: dict[str, int]  # questions, answer, final, sub_question, document
    entities: Count
    attributes: Count
    answers: AnswersParams
    documents: DocumentsParams


def read_categories(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: categories file not found (param generate.categories)")
    cats = [c.strip() for line in read_text(path).splitlines() if not line.startswith("#") for c in line.split(",") if c.strip()]
    if not cats:
        raise UserError(f"{path}: no categories")
    return cats


def rng_for(p: GenerateParams, generator: str) -> random.Random:
    """One RNG per generator: growing one generator's count leaves the others' plans (and cache hits) alone."""
    return random.Random(f"{p.seed}-{generator}")


def hot(rng: random.Random, p: GenerateParams) -> float:
    lo, hi = p.temperature
    return round(rng.uniform(lo, hi), 3)


def multihop_record(src: str, i: int, fields: dict, errors: list[str], meta: dict) -> Record:
    subs = [SubQuestion(question=fields.get(f"Question {k}", ""), paragraph=fields.get(f"Paragraph {k}", "")) for k in (1, 2)]
    return Record(
        id=f"{src}-{i:05d}",
        src=src,
        question=fields.get("Multi-hop question", ""),
        multihop=True,
        sub_questions=subs,
        meta={**meta, "errors": errors} if errors else meta,
    )


def gen_entities(llm: LLM, p: GenerateParams, rng: random.Random) -> list[Record]:
    cats = read_categories(p.categories)
    plan = [(rng.choice(cats), rng.randint(1, 5), rng.randint(1, 5), hot(rng, p)) for _ in range(p.entities.n)]
    reqs = [
        Request.chat(user(fill("two_entities", category=c, k1=k1, k2=k2)), t, p.max_tokens["questions"], sample=i)
        for i, (c, k1, k2, t) in enumerate(plan)
    ]
    out = []
    for i, ((c, k1, k2, t), resp) in enumerate(zip(plan, llm.complete(reqs, desc="generate: two entities"))):
        f = parse_fields(resp.text, ENTITY_FIELDS)
        meta = {
            "category": c,
            "popularity": [k1, k2],
            "temperature": t,
            "entities": [f.get("Entity 1", ""), f.get("Entity 2", "")],
            "attribute": f.get("Selected attribute", ""),
            "raw": resp.text,
        }
        out.append(multihop_record("gen_entities", i, f, resp.problems() or require(f, ENTITY_FIELDS[:2] + ENTITY_FIELDS[4:]), meta))
    return out


def gen_attributes(llm: LLM, p: GenerateParams, rng: random.Random) -> list[Record]:
    cats = read_categories(p.categories)
    plan = [(rng.choice(cats), rng.randint(1, 5), hot(rng, p)) for _ in range(p.attributes.n)]
    reqs = [
        Request.chat(user(fill("two_attributes", category=c, k=k)), t, p.max_tokens["questions"], sample=i)
        for i, (c, k, t) in enumerate(plan)
    ]
    out = []
    for i, ((c, k, t), resp) in enumerate(zip(plan, llm.complete(reqs, desc="generate: two attributes"))):
        f = parse_fields(resp.text, ATTRIBUTE_FIELDS)
        meta = {
            "category": c,
            "popularity": [k],
            "temperature": t,
            "entities": [f.get("Entity", "")],
            "attributes": [f.get("Attribute 1", ""), f.get("Attribute 2", "")],
            "raw": resp.text,
        }
        out.append(multihop_record("gen_attributes", i, f, resp.problems() or require(f, ["Entity", *ATTRIBUTE_FIELDS[4:]]), meta))
    return out


def gen_answers(llm: LLM, records: list[Record], p: GenerateParams, model: str) -> list[Record]:
    """Generator 3: complete answers at temperature 0 for records without them; others pass through."""
    records = [r.model_copy(deep=True) for r in records]
    todo = [r for r in records if any(sq.answer_origin is None for sq in r.sub_questions) or r.final_origin is None]
    origin = Origin(kind="model", model=model, temperature=0.0)
    answering.write_sub_questions(llm, todo, p.max_tokens["sub_question"], "generate: sub-questions")
    answering.answer_hops(
        llm, todo, lambda sq: sq.answer_origin is None, answering.gold_prompt, origin, p.max_tokens["answer"], "generate: answers"
    )
    answering.write_finals(llm, todo, lambda r: r.final_origin is None, origin, p.max_tokens["final"], "generate: final answers")
    return records


def chunk_text(text: str, tokenizer, size: int) -> list[str]:
    """Split at paragraph, then sentence boundaries into chunks of at most `size` tokens."""
    pieces = [s for para in re.split(r"\n\s*\n", text) for s in re.split(r"(?<=[.!?])\s+", para.strip()) if s.strip()]
    chunks, cur, n = [], [], 0
    for s in pieces:
        k = len(tokenizer(s)) if tokenizer else len(s.split())
        if cur and n + k > size:
            chunks.append(" ".join(cur))
            cur, n = [], 0
        cur.append(s)
        n += k
    if cur:
        chunks.append(" ".join(cur))
    return chunks


def read_documents(d: DocumentsParams) -> list[tuple[str, str]]:
    """(file name, text) of every .txt file of the documents folder; none when generator 4 is off."""
    if not d.folder:
        return []
    folder = Path(d.folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise UserError(f"{folder}: no .txt files (param generate.documents.folder)")
    return [(f.name, read_text(f)) for f in files]


def gen_documents(llm: LLM, p: GenerateParams, rng: random.Random, tokenizer=None, documents: list | None = None) -> list[Record]:
    """Generator 4 over `documents` (`read_documents`, read here when not given)."""
    d = p.documents
    documents = read_documents(d) if documents is None else documents
    chunks = [(name, c) for name, text in documents for c in chunk_text(text, tokenizer, d.chunk_tokens)][: d.max_chunks]
    if not chunks:
        return []
    mt = p.max_tokens["document"]
    themes = llm.complete(
        [Request.chat(user(fill("doc_theme", chunk=c)), hot(rng, p), 32, sample=i) for i, (_, c) in enumerate(chunks)],
        desc="generate: themes",
    )
    themes = [parse_fields(t.text, ["Theme"]).get("Theme", "") for t in themes]
    facts_resp = llm.complete(
        [
            Request.chat(user(fill("doc_facts", chunk=c, theme=th, max_facts=d.max_facts)), hot(rng, p), mt, sample=i)
            for i, ((_, c), th) in enumerate(zip(chunks, themes))
        ],
        desc="generate: facts",
    )
    facts = [(i, f) for i, r in enumerate(facts_resp) for f in parse_list(r.text, "Fact")[: d.max_facts]]
    qa_temps = [hot(rng, p) for _ in facts]
    qa_resp = llm.complete(
        [
            Request.chat(user(fill("doc_qa", theme=themes[i], fact=f)), t, mt, sample=j)
            for j, ((i, f), t) in enumerate(zip(facts, qa_temps))
        ],
        desc="generate: Q&A",
    )
    pairs = []  # (chunk index, fact, question, answer, temperature, voice)
    for (i, f), t, r in zip(facts, qa_temps, qa_resp):
        fields = parse_fields(r.text, ["Question", "Answer"])
        if r.text.strip().upper().startswith("SKIP") or require(fields, ["Question", "Answer"]):
            continue
        pairs.append((i, f, fields["Question"], fields["Answer"], t, None))
    role_plan = [(pair, role, hot(rng, p)) for pair in pairs for role in d.roles]
    role_resp = llm.complete(
        [Request.chat(user(fill("doc_role", role=role, question=pair[2], answer=pair[3])), t, mt) for pair, role, t in role_plan],
        desc="generate: voices",
    )
    for (pair, role, t), r in zip(role_plan, role_resp):
        fields = parse_fields(r.text, ["Question", "Answer"])
        if not require(fields, ["Question", "Answer"]):
            pairs.append((pair[0], pair[1], fields["Question"], fields["Answer"], t, role))
    out = []
    for n, (i, fact, q, a, t, role) in enumerate(pairs):
        name, chunk = chunks[i]
        sq = SubQuestion(question=q, paragraph=chunk, answer=a, answer_origin=Origin(kind="model", model=llm.params.model, temperature=t))
        out.append(
            Record(
                id=f"gen_documents-{n:05d}",
                src="gen_documents",
                question=q,
                sub_questions=[sq],
                meta={"file": name, "theme": themes[i], "fact": fact, "voice": role},
            )
        )
    return out


def load_tokenizer(model: str):
    """Token counter for chunking: the model's tokenizer for a local folder, else words."""
    if not Path(model, "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    with model_errors(model, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(model)
    return lambda s: tok(s, add_special_tokens=False)["input_ids"]


def generate_all(llm: LLM, p: GenerateParams, fetched: list[Record]) -> dict[str, list[Record]]:
    """The four generators, each with its own RNG; file name -> records. Every input file is read
    before the first LLM call, so a bad one costs nothing."""
    read_categories(p.categories)
    documents = read_documents(p.documents)
    return {
        "entities": gen_entities(llm, p, rng_for(p, "entities")),
        "attributes": gen_attributes(llm, p, rng_for(p, "attributes")),
        "sources": gen_answers(llm, fetched, p, llm.params.model) if p.answers.enabled else fetched,
        "documents": gen_documents(llm, p, rng_for(p, "documents"), load_tokenizer(llm.params.model), documents),
    }
