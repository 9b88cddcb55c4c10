"""params.yaml is the only file DVC reads and params/ the only place values live: the committed
params.yaml is the base composed with no overlay, every profile composes and validates through
the models the stages use, hub values are pinned to commits, hand edits are never overwritten,
and no model holds a default that could disagree with params/ (a default may only be None)."""

from __future__ import annotations

import shutil

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from qa_forge.core import profiles
from qa_forge.core.io import UserError
from tests.conftest import ROOT
from tests.params import SECTIONS, merge

# every overlay alone, and the combinations the README documents
PROFILES = [*profiles.profiles(ROOT), "gpu+full", "cpu-real+hub"]
TEST_PROFILES = sorted((ROOT / "tests" / "profiles").glob("*.yaml"))


def base() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def validate_all(params: dict) -> None:
    assert set(params) == set(SECTIONS), f"sections without a model, or models without a section: {set(params) ^ set(SECTIONS)}"
    for name, model in SECTIONS.items():
        model.model_validate(params[name])


def test_params_yaml_is_the_base_composed_with_no_overlay():
    assert (ROOT / "params.yaml").read_text() == profiles.compose(ROOT), "params.yaml differs: run `qa-forge profile default`"
    validate_all(base())
    assert profiles.hub_uses(base()) == [], "the embedded default must run offline"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_composes_and_validates(profile):
    validate_all(yaml.safe_load(profiles.compose(ROOT, profile)))


@pytest.mark.parametrize("profile", TEST_PROFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_test_profile_composes_and_validates(profile):
    over = yaml.safe_load(profile.read_text())
    assert set(over) <= set(SECTIONS), f"{profile.name}: unknown sections {set(over) - set(SECTIONS)}"
    validate_all(merge(base(), over))


def test_the_gpu_profile_pins_every_hub_value_and_keeps_comments():
    text = profiles.compose(ROOT, "gpu")
    gpu = yaml.safe_load(text)
    assert text.startswith("# params.yaml, composed by `qa-forge profile gpu` from params/base.yaml + params/gpu.yaml")
    assert "# 1: two entities compared on one attribute" in text  # the base's comments travel
    uses = profiles.hub_uses(gpu)
    assert "base_model.hub_id" in uses and "retrieve.model" in uses and "fetch.eval.hotpotqa.hub" in uses
    assert len(gpu["base_model"]["hub_revision"]) == 40 and len(gpu["retrieve"]["revision"]) == 40
    hub_sources = [s for role in ("train", "eval") for s in gpu["fetch"][role].values() if s.get("hub")]
    assert hub_sources and all(len(s["revision"]) == 40 for s in hub_sources)
    full = yaml.safe_load(profiles.compose(ROOT, "gpu+full"))
    assert full["train"]["mode"] == "full" and full["train"]["attn_implementation"] == "flash_attention_2"  # full over gpu


def test_an_unpinned_hub_value_fails_validation():
    fetch = merge(base()["fetch"], {"train": {"boolq": {"path": None, "hub": "google/boolq", "split": "train", "revision": "main"}}})
    with pytest.raises(ValidationError, match="revision"):
        SECTIONS["fetch"].model_validate(fetch)
    with pytest.raises(ValidationError, match="hub_revision"):
        SECTIONS["base_model"].model_validate(merge(base()["base_model"], {"source": "hub", "hub_id": "mistralai/Mistral-7B-v0.1"}))


@pytest.fixture
def project(tmp_path):
    shutil.copytree(ROOT / "params", tmp_path / "params")
    return tmp_path


def test_hand_edits_are_never_overwritten(project):
    target = project / "params.yaml"
    profiles.write(project, "gpu", target, force=False)
    profiles.write(project, "default", target, force=False)  # an unedited composition may be replaced
    assert target.read_text() == profiles.compose(project)
    target.write_text(target.read_text().replace("learning_rate: 1.0e-3", "learning_rate: 3.0e-3"))
    edited = target.read_text()
    with pytest.raises(UserError, match="edited since `qa-forge profile default`"):
        profiles.write(project, "gpu", target, force=False)
    assert target.read_text() == edited and not list(project.glob("*.tmp"))
    profiles.write(project, "gpu", target, force=True)
    assert yaml.safe_load(target.read_text())["train"]["attn_implementation"] == "flash_attention_2"


def test_unknown_profile_and_unknown_section_are_clear_errors(project):
    with pytest.raises(UserError, match="profile 'nope': no overlay"):
        profiles.compose(project, "nope")
    (project / "params" / "typo.yaml").write_text("trian: {mode: full}\n")
    with pytest.raises(UserError, match=r"typo\.yaml: sections not in params/base\.yaml: trian"):
        profiles.compose(project, "typo")


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
