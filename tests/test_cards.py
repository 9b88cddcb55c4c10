"""The cards stage: a model card and a dataset card from the run's params and metrics, parsed back
through huggingface_hub. Unit tests build them from synthetic metrics (milliseconds each); the slow
test reads the ones the tiny profile's pipeline wrote."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard

from qa_forge.cards import licenses
from qa_forge.cards.dataset import dataset_card
from qa_forge.cards.model import model_card
from qa_forge.cards.run import PARAMS, load
from qa_forge.core import profiles
from qa_forge.core.io import UserError
from qa_forge.data.sources import SOURCES, loader
from tests.conftest import ROOT


def interval(value, lo, hi, n=20):
    return {"value": value, "n": n, "ci95_lo": lo, "ci95_hi": hi}


SUMMARY = {
    "hotpotqa": {
        "n": 20,
        "containing_accuracy": {
            "base": interval(0.1, 0.0279, 0.301),
            "finetuned": interval(0.55, 0.3421, 0.7418),
            "difference": interval(0.45, 0.19, 0.64),
        },
        "em": {"base": interval(0.0, 0.0, 0.1611), "finetuned": interval(0.1, 0.0279, 0.301), "difference": interval(0.1, -0.06, 0.3)},
        "f1": {"base": interval(None, None, None, 0), "finetuned": interval(0.31, 0.2, 0.42), "difference": interval(None, None, None, 0)},
    },
    "squad_v2": {
        "n": 20,
        "exact_match": {
            "base": interval(0.25, 0.11, 0.47),
            "finetuned": interval(0.4, 0.22, 0.61),
            "difference": interval(0.15, -0.08, 0.36),
        },
        "abstention": {
            "base": interval(0.5, 0.19, 0.81, 6),
            "finetuned": interval(0.83, 0.44, 0.97, 6),
            "difference": interval(0.33, -0.1, 0.7, 6),
        },
    },
    "judge": {"enabled": False},
}
PACK = {"conversations_train": 30, "conversations_valid": 4, "tokens": 16000, "max_seq_length": 1024, "rows_train": 16}
TRAIN_INFO = {
    "mode": "lora",
    "global_step": 48,
    "tokens_seen": 44430,
    "run_key": "abc",
    "packages": {"torch": "2.13.0+cpu", "transformers": "5.23.0", "peft": "0.21.2"},
}


def profile(name: str = profiles.DEFAULT) -> dict:
    return yaml.safe_load(profiles.compose(ROOT, name))


def with_sources(params: dict, names: list[str]) -> dict:
    """`params` whose fetch.train holds only `names` (their specs from params, else a local file)."""
    p = copy.deepcopy(params)
    train = p["fetch"]["train"]
    p["fetch"]["train"] = {n: train.get(n, {"path": f"data/samples/{n}_train.json", "n": None}) for n in names}
    return p


def metrics(params: dict, kept: dict[str, int] | None = None, generated: dict[str, tuple[int, int]] | None = None):
    """fetch.json and filter.json for params' train sources: 10 records each, `kept` of them kept."""
    names = list(params["fetch"]["train"])
    kept = {n: 10 for n in names} | (kept or {})
    generated = {"gen_entities": (1, 3), "gen_attributes": (0, 3)} if generated is None else generated
    fetch = {
        "train": {
            n: {"read": 11, "dropped": {"duplicate_id": 1}, "kept": 10, "records": 10, "answerable": 8, "unanswerable": 2} for n in names
        }
    }
    by_src = {n: {"kept": kept[n], "of": 10 if kept[n] or n not in (kept or {}) else 0} for n in names}
    by_src |= {src: {"kept": k, "of": of} for src, (k, of) in generated.items()}
    records = sum(v["of"] for v in by_src.values())
    total_kept = sum(v["kept"] for v in by_src.values())
    filt = {
        "records": records,
        "kept": total_kept,
        "rejected": records - total_kept,
        "reasons": {"format": 4, "near_duplicate": 1},
        "kept_by_src": by_src,
    }
    return fetch, filt


def run_of(params: dict, summary: dict = SUMMARY, template: str = "{{ messages }}", **kw):
    fetch, filt = metrics(params, **kw)
    return load(params, fetch, filt, PACK, summary, TRAIN_INFO, template)


def saved(card, path):
    card.save(path)
    return path


# --- licences -------------------------------------------------------------------------------------


def test_every_source_declares_a_licence_where_it_is_defined():
    for name in SOURCES:
        info = loader(name).DATASET
        assert info.license in licenses.NAMES, (name, info.license)
        assert info.checked.startswith("https://"), name
        assert info.verified or info.note, f"{name}: an unverified licence says why"


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["cc-by-4.0", "apache-2.0"], None),
        (["cc-by-sa-3.0"], "cc-by-sa-3.0"),
        (["cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-4.0"], "cc-by-sa-4.0"),  # 3.0 allows adaptations under a later version
    ],
)
def test_share_alike_license(ids, expected):
    assert licenses.share_alike_license(ids) == expected


def test_two_share_alike_families_cannot_be_met_together():
    with pytest.raises(UserError, match="cannot be shared under one licence"):
        licenses.share_alike_license(["cc-by-sa-4.0", "cc-by-nc-sa-4.0"])


# --- the cards ------------------------------------------------------------------------------------


def test_model_card_parses_back_with_base_model_datasets_and_scores(tmp_path):
    """The GPU profile: a hub base at a revision, hub datasets; model-index holds the fine-tuned
    scores (None values left out), the body every score with its interval."""
    params = profile("gpu")
    run = run_of(params, kept={"boolq": 0})  # boolq: none kept, so not a training dataset
    card = ModelCard.load(saved(model_card(run), tmp_path / "README.md"))
    assert card.data.base_model == "mistralai/Mistral-7B-v0.1"
    # hub sources only: the profile keeps 2WikiMultihopQA as the base's local sample file
    assert card.data.datasets == sorted(
        spec["hub"] for name, spec in params["fetch"]["train"].items() if name != "boolq" and spec.get("hub")
    )
    assert "rajpurkar/squad_v2" in card.data.datasets
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-generation" and card.data.library_name == "transformers"
    scores = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert scores == {
        ("hotpotqa/hotpot_qa", "containing_accuracy"): 0.55,
        ("hotpotqa/hotpot_qa", "em"): 0.1,
        ("hotpotqa/hotpot_qa", "f1"): 0.31,
        ("rajpurkar/squad_v2", "exact_match"): 0.4,
        ("rajpurkar/squad_v2", "abstention"): 0.83,
    }
    hotpot = next(r for r in card.data.eval_results if r.dataset_type == "hotpotqa/hotpot_qa")
    assert hotpot.dataset_revision == params["fetch"]["eval"]["hotpotqa"]["revision"] and hotpot.dataset_split == "validation"
    text = card.text
    assert params["base_model"]["hub_revision"] in text
    assert "| containing_accuracy | 0.100 [0.028, 0.301] | 0.550 [0.342, 0.742] | +0.450 [+0.190, +0.640] |" in text
    assert "| f1 | n/a | 0.310 [0.200, 0.420] | n/a |" in text
    assert "| abstention | 0.500 [0.190, 0.810] | 0.830 [0.440, 0.970] | +0.330 [-0.100, +0.700] |" in text
    assert "| lora.r | `16` |" in text and "| learning_rate | `0.0002` |" in text  # the gpu profile's train params
    assert "| transformers | `5.23.0` |" in text  # train_info.json's packages
    assert "The judge was off" in text and "No LLM judge" in text
    assert "Qwen/Qwen2.5-7B-Instruct" in text  # the generator


def test_default_profile_base_is_the_gguf_quantisation_and_local_sources_name_no_dataset(tmp_path):
    card = ModelCard.load(saved(model_card(run_of(profile())), tmp_path / "README.md"))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets is None  # local sample files: no hub dataset was read
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in card.text and "assumed" in card.text
    assert '"<tool_call>' in card.text  # SmolLM2's template has no tool calls: the text form


def test_cards_carry_each_sources_licence(tmp_path):
    run = run_of(profile())
    model = ModelCard.load(saved(model_card(run), tmp_path / "model.md")).text
    data = DatasetCard.load(saved(dataset_card(run), tmp_path / "data.md")).text
    for name in profile()["fetch"]["train"]:
        info = loader(name).DATASET
        row = f"| {info.name} | local file"
        for text in (model, data):
            line = next(ln for ln in text.splitlines() if ln.startswith(row))
            assert licenses.name(info.license) in line, line
    assert "(unverified)" in next(ln for ln in data.splitlines() if ln.startswith("| 2WikiMultihopQA |"))


@pytest.mark.parametrize(
    ("sources", "kept", "license"),
    [
        (["musique", "2wikimultihopqa"], {}, ["apache-2.0", "cc-by-4.0"]),  # no share-alike source
        (["musique", "boolq"], {"boolq": 0}, ["apache-2.0", "cc-by-4.0"]),  # configured, but none of its records in the data
        (["musique", "boolq"], {}, "cc-by-sa-3.0"),
        (["boolq", "squad_v2", "musique"], {}, "cc-by-sa-4.0"),
    ],
)
def test_share_alike_notice_exactly_when_a_cc_by_sa_source_is_used(tmp_path, sources, kept, license):
    run = run_of(with_sources(profile(), sources), kept=kept)
    card = DatasetCard.load(saved(dataset_card(run), tmp_path / "README.md"))
    assert card.data.license == license
    if isinstance(license, str):
        assert "**Share-alike.**" in card.text and f"must be shared under [{licenses.name(license)}]" in card.text
    else:
        assert "Share-alike" not in card.text and "No source of this data carries share-alike terms" in card.text
    model = model_card(run).text
    assert ("share-alike sources" in model) == (isinstance(license, str) and not kept)


def test_dataset_card_counts_and_rejection_reasons(tmp_path):
    params = profile("gpu")
    card = DatasetCard.load(saved(dataset_card(run_of(params)), tmp_path / "README.md"))
    hub = [f"extended|{s['hub']}" for s in params["fetch"]["train"].values() if s.get("hub")]
    assert card.data.source_datasets == [*hub, "original"] and len(hub) == 5
    assert card.data.size_categories == ["n<1K"] and card.data.language == ["en"]
    text = card.text
    assert "| format | 4 |" in text and "| near_duplicate | 1 |" in text
    assert "| gen_entities | multi-hop questions comparing two entities on one attribute | 3 | 1 |" in text
    assert "| SQuAD 2.0 | 11 | duplicate_id: 1 | 10 | 10 | 8 | 2 |" in text
    assert "Qwen/Qwen2.5-7B-Instruct" in text and "[Apache-2.0]" in text  # the generator and its licence
    assert "revision `3ffb306f725f7d2ce8394bc1873b24868140c412`" in text  # squad_v2's pinned hub commit


def test_names_are_data_and_the_judge_is_reported_when_on(tmp_path):
    params = profile()
    params["judge"]["llm"]["model"] = "judge-model"
    summary = {
        "my_set": {
            "n": 7,
            "accuracy_x": {
                "base": interval(0.2, 0.1, 0.3, 7),
                "finetuned": interval(0.4, 0.2, 0.6, 7),
                "difference": interval(0.2, 0.0, 0.4, 7),
            },
        },
        "judge": {
            "enabled": True,
            "accuracy": {"base": interval(0.3, 0.2, 0.4), "finetuned": interval(0.5, 0.4, 0.6), "difference": interval(0.2, 0.1, 0.3)},
            "win_rate": interval(0.6, 0.4, 0.75, 18),
        },
    }
    card = ModelCard.load(saved(model_card(run_of(params, summary)), tmp_path / "README.md"))
    assert [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results] == [("my_set", "accuracy_x", 0.4)]
    text = card.text
    assert "### my_set" in text and "| accuracy_x | 0.200 [0.100, 0.300] | 0.400 [0.200, 0.600] | +0.200 [+0.000, +0.400] |" in text
    assert "Judge: `judge-model`" in text and "| accuracy | 0.300 [0.200, 0.400] | 0.500 [0.400, 0.600] | +0.200 [+0.100, +0.300] |" in text
    assert "0.600 [0.400, 0.750], n = 18" in text and "No LLM judge" not in text


def test_an_unlisted_model_licence_is_unknown_not_guessed(tmp_path):
    params = profile("gpu")
    params["base_model"]["hub_id"] = "someone/unlisted-7b"
    params["llm"]["model"] = "gpt-4o-mini"
    params["llm"]["base_url"] = "https://api.openai.com/v1"
    run = run_of(params)
    card = ModelCard.load(saved(model_card(run), tmp_path / "model.md"))
    assert card.data.license == "unknown" and card.data.base_model == "someone/unlisted-7b"
    assert licenses.UNKNOWN_TEXT in card.text
    data = dataset_card(run).text
    assert f"Its licence: {licenses.UNKNOWN_TEXT}" in data and "not listed in `cards.model_licenses`" in data
    params["cards"]["license"] = "mit"  # a licence set by hand wins
    assert ModelCard.load(saved(model_card(run_of(params)), tmp_path / "model2.md")).data.license == "mit"


def test_a_missing_param_or_metric_is_a_clear_error():
    params = profile()
    del params["evaluate"]["max_calls"]
    with pytest.raises(UserError, match=r"no 'evaluate\.max_calls'"):
        run_of(params)
    fetch, filt = metrics(profile())
    del filt["kept_by_src"]
    with pytest.raises(UserError, match="kept_by_src"):
        load(profile(), fetch, filt, PACK, SUMMARY, TRAIN_INFO, "")


def test_dvc_yaml_declares_what_the_stage_reads():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["cards"]
    assert tuple(stage["params"]) == PARAMS
    deps = set(stage["deps"])
    for dep in (
        "stages/cards.py",
        "qa_forge/cards",
        "qa_forge/data/sources",
        "qa_forge/chat",
        "prompts/system.txt",
        "metrics/summary.json",
    ):
        assert dep in deps, dep
    outs = {next(iter(o)): next(iter(o.values())) for o in stage["outs"]}
    assert outs == {"cards/model/README.md": {"cache": False}, "cards/dataset/README.md": {"cache": False}}


def test_the_stage_writes_both_cards(tmp_path):
    """`qa-forge cards` end to end: params and metric files in, two cards out that parse."""
    params = profile()
    fetch, filt = metrics(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    files = {"fetch": fetch, "filter": filt, "pack": PACK, "summary": SUMMARY, "train-info": TRAIN_INFO}
    for name, obj in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
    (tmp_path / "template.jinja").write_text("{{ messages }}")
    args = [f"--{name}={tmp_path / f'{name}.json'}" for name in files]
    args += [f"--chat-template={tmp_path / 'template.jinja'}", f"--params={tmp_path / 'params.yaml'}"]
    args += [f"--model-card={tmp_path / 'out/model/README.md'}", f"--dataset-card={tmp_path / 'out/dataset/README.md'}"]
    proc = subprocess.run([sys.executable, "-m", "qa_forge", "cards", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ModelCard.load(tmp_path / "out/model/README.md").data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert DatasetCard.load(tmp_path / "out/dataset/README.md").data.license == "cc-by-sa-4.0"


@pytest.mark.slow
def test_the_pipeline_writes_cards_that_parse(dag):
    """The tiny profile's run: a random tiny base (no hub model), the repo's sample files."""
    model = ModelCard.load(dag.repo / "cards/model/README.md")
    assert model.data.base_model is None and model.data.license == "unknown"
    assert {r.dataset_type for r in model.data.eval_results} >= {"data/samples/hotpotqa_dev.json"}
    data = DatasetCard.load(dag.repo / "cards/dataset/README.md")
    assert data.data.license == "cc-by-sa-4.0" and "**Share-alike.**" in data.text
    summary = json.loads((dag.repo / "metrics/summary.json").read_text())
    assert all(f"### {name}" in model.text for name in summary if name != "judge")


def test_the_dataset_card_says_which_answers_came_by_rule(tmp_path):
    """cpu-real: four sources' answers are rule traces, boolq and drop give no records; the default:
    every answer from our samples, none by rule."""
    real = DatasetCard.load(saved(dataset_card(run_of(profile("cpu-real"), kept={"boolq": 0, "drop": 0})), tmp_path / "a.md")).text
    line = next(ln for ln in real.splitlines() if "composed by rule" in ln)
    for name in ("HotpotQA", "2WikiMultihopQA", "MuSiQue", "SQuAD 2.0"):
        assert name in line
    assert "BoolQ" not in line and "It wrote the complete answers" not in real
    default = DatasetCard.load(saved(dataset_card(run_of(profile())), tmp_path / "b.md")).text
    assert "composed by rule" not in default and "Every fetched record's answers came from our samples" in default


def test_the_model_card_names_the_retriever_the_evaluation_used(tmp_path):
    """The gpu profile fine-tunes the retriever (retriever.finetune), the default does not."""
    real = ModelCard.load(saved(model_card(run_of(profile("gpu"))), tmp_path / "a.md")).text
    assert "fine-tuned on this run's training pairs (the train_retriever stage" in real
    default = ModelCard.load(saved(model_card(run_of(profile())), tmp_path / "b.md")).text
    assert "train_retriever" not in default and "retriever `" in default
