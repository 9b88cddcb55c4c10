"""params.yaml is the only place a value lives: every section validates through the model its stage
uses, every profile composes onto it and validates too, and no model holds a default that could
disagree with params.yaml (a default may only be None, meaning "not given")."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tests.conftest import ROOT
from tests.params import SECTIONS, merge

PROFILES = sorted((ROOT / "params").glob("*.yaml")) + sorted((ROOT / "tests" / "profiles").glob("*.yaml"))


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def validate_all(params: dict) -> None:
    assert set(params) == set(SECTIONS), f"sections without a model, or models without a section: {set(params) ^ set(SECTIONS)}"
    for name, model in SECTIONS.items():
        model.model_validate(params[name])


def test_params_yaml_validates():
    validate_all(base())


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_profile_composes_and_validates(profile):
    over = yaml.safe_load(profile.read_text())
    assert set(over) <= set(SECTIONS), f"{profile.name}: unknown sections {set(over) - set(SECTIONS)}"
    validate_all(merge(base(), over))


def models(model: type[BaseModel], seen: set) -> list[type[BaseModel]]:
    """`model` and every model nested in its fields."""
    if model in seen:
        return []
    seen.add(model)
    out = [model]
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += models(arg, seen)
    return out


def _types(annotation) -> list:
    args = getattr(annotation, "__args__", None)
    return [annotation] if not args else [t for a in args for t in _types(a)]


def test_models_hold_no_values():
    found = []
    seen: set = set()
    for model in [m for root in SECTIONS.values() for m in models(root, seen)]:
        for name, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True) if field.default_factory else field.default
            if default is not PydanticUndefined and default is not None:
                found.append(f"{model.__name__}.{name} = {default!r}")
    assert not found, "params models with defaults (values belong in params.yaml): " + ", ".join(found)
