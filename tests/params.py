"""Params for tests: a section of the committed params.yaml through its model, with overrides.
The models carry no defaults, so tests start from the values users run."""

from __future__ import annotations

import copy

import yaml

from qa_forge.cards.run import CardsParams
from qa_forge.core import profiles
from qa_forge.data.fetch import FetchParams
from qa_forge.data.filter import FilterParams
from qa_forge.data.generate import GenerateParams
from qa_forge.data.pack import PackParams
from qa_forge.data.regenerate import RegenerateParams
from qa_forge.eval.evaluate import EvaluateParams
from qa_forge.judge.judge import JudgeParams
from qa_forge.llm import LLMParams
from qa_forge.models.base import BaseModelParams
from qa_forge.models.merge import MergeParams
from qa_forge.retrieval.retriever import RetrieveParams, RetrieverParams
from qa_forge.retrieval.tuning.run import RetrieverTuningParams
from qa_forge.training.params import TrainParams
from tests.conftest import ROOT

# params.yaml section -> the model its stage validates it with
SECTIONS = {
    "base_model": BaseModelParams,
    "fetch": FetchParams,
    "llm": LLMParams,
    "generate": GenerateParams,
    "regenerate": RegenerateParams,
    "filter": FilterParams,
    "retrieve": RetrieveParams,
    "retriever": RetrieverTuningParams,
    "pack": PackParams,
    "train": TrainParams,
    "merge": MergeParams,
    "evaluate": EvaluateParams,
    "judge": JudgeParams,
    "cards": CardsParams,
}


def merge(base: dict, over: dict) -> dict:
    """`over` laid over a copy of `base`, as profiles compose (mappings merged key by key)."""
    return profiles.merge(copy.deepcopy(base), over)


def raw(name: str) -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())[name]


def params(name: str, **overrides):
    """The `name` section of params.yaml with `overrides` merged in, validated by its model."""
    return SECTIONS[name].model_validate(merge(raw(name), overrides))


def retriever(**overrides) -> RetrieverParams:
    r = merge(raw("retrieve"), overrides)
    return RetrieverParams.model_validate({k: r[k] for k in RetrieverParams.model_fields})
