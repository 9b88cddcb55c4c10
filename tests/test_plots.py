"""Every plot draws: `dvc plots show` on a finished run writes HTML whose vega specs all carry data
with the fields their encodings name (dvc-render drops rows silently when a field is missing, and
a bar chart with its number on the category axis renders empty)."""

import json
import re

import pytest
import yaml

from tests.dag import clone_run, dvc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shown(dag, tmp_path_factory):
    """{plot id: vega-lite spec} from the HTML `dvc plots show` writes for the first run."""
    repo = clone_run(dag, tmp_path_factory.mktemp("plots") / "repo")
    out = repo.parent / "html"
    dvc(repo, "plots", "show", "-o", str(out))
    return specs((out / "index.html").read_text()), repo


def specs(html: str) -> dict[str, dict]:
    """The specs embedded in dvc-render's page: `var spec = {...}; vegaEmbed('#id', spec);`."""
    found = {}
    decoder = json.JSONDecoder()
    for m in re.finditer(r"var spec = ", html):
        spec, end = decoder.raw_decode(html, m.end())
        found[re.search(r"vegaEmbed\('#([^']+)'", html[end:]).group(1)] = spec
    return found


def fields(spec: dict) -> set[str]:
    """Every data field an encoding of the spec (or of its layers) names."""
    out = set()
    for enc in [spec.get("encoding", {}), *(layer.get("encoding", {}) for layer in spec.get("layer", []))]:
        out |= {ch["field"] for ch in enc.values() if isinstance(ch, dict) and "field" in ch}
    return out - {"run"}  # computed by the template's transform from rev and model


def top_level_titles(repo) -> list[str]:
    return [next(iter(p)) for p in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]]


def test_every_plot_has_data_with_the_fields_it_draws(shown):
    found, repo = shown
    # the top-level plots, each stage's eval bars, the training curves and the length histogram
    assert len(found) >= len(top_level_titles(repo)) + 4
    for pid, spec in found.items():
        values = spec["data"]["values"]
        assert values, f"{pid}: no data"
        missing = {f for f in fields(spec) if not any(f in row for row in values)}
        assert not missing, f"{pid}: fields {missing} in no row"


def title(spec: dict) -> str:
    t = spec.get("title", "")
    return t.get("text", "") if isinstance(t, dict) else t


def plot(found, title_start):
    [spec] = [s for s in found.values() if title(s).startswith(title_start)]
    return spec["data"]["values"]


def test_base_and_fine_tuned_side_by_side(shown):
    found, _ = shown
    for title, category in [("Containing accuracy by HotpotQA", "type"), ("Containing accuracy by number", "retrieve_calls")]:
        rows = plot(found, title)
        assert {r["model"] for r in rows} == {"base", "finetuned"}, title
        assert all(float(r["ci95_lo"]) <= float(r["containing_accuracy"]) <= float(r["ci95_hi"]) for r in rows), title
        assert all(r[category] for r in rows)
    ended = plot(found, "How the conversations ended")
    assert {r["outcome"] for r in ended} == {"answered", "unparsable", "hop_cap", "length"}
    # the shares of one model's outcomes on one set add up to 1
    for model in ("base", "finetuned"):
        assert sum(float(r["share"]) for r in ended if r["model"] == model and r["eval_set"] == "hotpotqa") == pytest.approx(1.0, abs=1e-3)


def test_loss_and_recall_curves(shown):
    found, _ = shown
    loss = plot(found, "Train and eval loss")
    assert {r["filename"] for r in loss} == {"train/loss.tsv", "eval/loss.tsv"}  # dvc keeps the part that differs
    assert all(float(r["loss"]) > 0 for r in loss)
    recall = plot(found, "Retrieval recall@k")
    assert {r["field"] for r in recall} == {"hotpotqa", "squad_v2"} and {int(r["k"]) for r in recall} == {1, 2, 5}
