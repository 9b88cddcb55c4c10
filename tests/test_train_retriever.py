"""The train_retriever stage (issue 14): switch off, the same bytes whatever the inputs (so `retrieve`
and the evaluations are never re-run by a change upstream); switch on, a tiny HotpotQA-like set
trains a couple of steps into a loadable SentenceTransformer folder, scored untuned vs tuned; and
`retrieve` / evaluate pick the tuned folder only when it holds a tuned model."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import yaml

from qa_forge.core.io import UserError, write_records
from qa_forge.core.records import Record, SubQuestion
from qa_forge.retrieval.retriever import TUNED_MARKER, UNTUNED_MARKER, RetrieveParams, effective_retriever
from tests.conftest import ROOT
from tests.params import merge, raw

METRICS = {"n", "mrr@10", "ndcg@10", "recall@1", "recall@2", "recall@5", "all@2"}


def stage():
    return runpy.run_path(str(ROOT / "stages/train_retriever.py"), run_name="stage")["main"]


def write_params(tmp_path: Path, retriever: dict | None = None, **retrieve) -> Path:
    p = tmp_path / "params.yaml"
    sections = {
        "retriever": merge(raw("retriever"), retriever or {}),
        "retrieve": merge(raw("retrieve"), {"cache_dir": str(tmp_path / "embeddings"), **retrieve}),
    }
    p.write_text(yaml.safe_dump(sections))
    return p


def outputs(tmp_path: Path) -> dict[str, Path]:
    return {
        "out": tmp_path / "models/retriever",
        "metrics": tmp_path / "metrics/retrieval_tuning.json",
        "timings": tmp_path / "metrics/timings/train_retriever.json",
    }


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- switch off -----------------------------------------------------------------------------------


def test_switch_off_writes_the_same_bytes_whatever_the_inputs(tmp_path):
    """Off, nothing is read (the inputs here do not even exist, or differ): the folder DVC hashes for
    `retrieve` and evaluate is byte-identical, so a change upstream never re-runs them."""
    params = write_params(tmp_path)
    assert yaml.safe_load(params.read_text())["retriever"]["finetune"] is False  # the embedded default
    main = stage()
    seen = []
    for i, (filtered, fetched) in enumerate([(tmp_path / "none.jsonl", tmp_path / "none"), (ROOT / "README.md", ROOT / "stages")]):
        outs = outputs(tmp_path / f"run{i}")
        main(params=params, filtered=filtered, fetched=fetched, **outs)
        seen.append((folder_bytes(outs["out"]), outs["metrics"].read_bytes()))
        assert json.loads(outs["metrics"].read_text()) == {"finetune": False}
    assert seen[0] == seen[1]
    files = seen[0][0]
    assert list(files) == [UNTUNED_MARKER]
    assert json.loads(files[UNTUNED_MARKER]) == {"finetune": False, "model": "minilm", "revision": None}
    # and retrieve / evaluate keep the untuned model
    rp = RetrieveParams.model_validate(yaml.safe_load(params.read_text())["retrieve"])
    assert effective_retriever(rp, tmp_path / "run0/models/retriever") == rp


def test_effective_retriever_takes_a_tuned_folder_only(tmp_path):
    rp = RetrieveParams.model_validate(raw("retrieve"))
    assert effective_retriever(rp, tmp_path / "missing") == rp  # outside the DAG: no folder, the untuned model
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / TUNED_MARKER).write_text(json.dumps({"finetune": True, "base": {"model": "minilm", "revision": None}}))
    got = effective_retriever(rp, tuned)
    assert got.model == str(tuned) and got.revision is None
    assert got.model_dump(exclude={"model", "revision"}) == rp.model_dump(exclude={"model", "revision"})  # prefixes etc. kept
    with pytest.raises(UserError, match="tuned from 'minilm'.*intfloat/e5-base-v2.*train_retriever"):
        effective_retriever(rp.model_copy(update={"model": "intfloat/e5-base-v2", "revision": "f" * 40}), tuned)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "model.safetensors").write_text("x")
    with pytest.raises(UserError, match="not a train_retriever output"):
        effective_retriever(rp, stray)


# --- switch on: a tiny HotpotQA-like set -------------------------------------------------------------

PEOPLE = [  # (film, director, city, river)
    ("Glass Harbor", "Mira Oakes", "Tallin Ford", "Vell"),
    ("The Copper Lantern", "Joren Pike", "Ashbury", "Sorn"),
    ("Night Orchard", "Lena Vast", "Corrow", "Almet"),
    ("Paper Comets", "Ivo Brandt", "Helmsby", "Tarn"),
    ("The Salt Road", "Oda Finch", "Marrow Bay", "Quill"),
    ("Blue Meridian", "Teo Rask", "Dunmere", "Ostra"),
    ("Winter Clockwork", "Ada Moll", "Pellow", "Rhee"),
    ("Amber Signal", "Nils Crane", "Wexley", "Brann"),
    ("The Last Ferry", "Sana Hollis", "Kettering Cross", "Lume"),
    ("Iron Lullaby", "Bram Eller", "Fennick", "Dorr"),
]
DISTRACTORS = [
    ("Lighthouse", "A lighthouse is a tower with a lamp that guides ships at night."),
    ("Film festival", "A film festival shows films of many directors over a few days in one city."),
    ("River", "A river is a natural stream of water flowing towards an ocean, a lake or another river."),
]


def film(i):
    f, d, _, _ = PEOPLE[i]
    return (f, f"{f} is a drama film directed by {d}, released to wide acclaim.")


def person(i):
    f, d, c, _ = PEOPLE[i]
    return (d, f"{d} is a film director born in {c}, best known for {f}.")


def hotpot(i, rid, src):
    f, d, c, _ = PEOPLE[i]
    others = [film((i + 1) % len(PEOPLE)), person((i + 2) % len(PEOPLE))]
    ctx = [film(i), person(i), *others, *DISTRACTORS]
    return Record(
        id=rid,
        src=src,
        question=f"Where was the director of {f} born?",
        multihop=True,
        sub_questions=[
            SubQuestion(question=f"Who directed {f}?", title=f, paragraph=film(i)[1], answer=d),
            SubQuestion(question=f"Where was {d} born?", title=d, paragraph=person(i)[1], answer=c),
        ],
        final_answer=c,
        meta={"context": [{"title": t, "text": x} for t, x in ctx], "supporting_titles": [f, d], "type": "bridge"},
    )


def single(i, rid, src):
    _, d, c, river = PEOPLE[i]
    text = f"{c} is a town on the {river} river, the birthplace of {d}."
    return Record(
        id=rid,
        src=src,
        question=f"Which river flows through {c}?",
        sub_questions=[SubQuestion(question=f"Which river flows through {c}?", title=c, paragraph=text, answer=river)],
    )


def test_switch_on_trains_a_loadable_model_and_reports_untuned_vs_tuned(tmp_path, one_thread):
    train = [hotpot(i, f"t{i}", "hotpotqa") for i in range(7)] + [single(i, f"s{i}", "squad_v2") for i in range(4)]
    write_records(tmp_path / "data/filtered/kept.jsonl", train)
    fetched = tmp_path / "data/fetched"
    write_records(fetched / "eval_hotpotqa.jsonl", [hotpot(i, f"e{i}", "hotpotqa") for i in (6, 7, 8, 9)])  # e6: t6's paragraphs
    write_records(fetched / "eval_squad_v2.jsonl", [single(i, f"q{i}", "squad_v2") for i in (5, 6)])
    tuning = {
        "finetune": True,
        "pairs": {"heldout_fraction": 0.25, "seed": 0, "eval_overlap": "drop"},
        "mining": {"bm25": {"n": 1, "skip": 0}, "dense": {"n": 1, "skip": 0}, "query_chunk": 4},
        "tune": {"max_steps": 2, "batch_size": 4, "negatives": 1, "learning_rate": 1.0e-4, "warmup_ratio": 0.0},
    }
    params = write_params(tmp_path, tuning)
    outs = outputs(tmp_path)
    stage()(params=params, filtered=tmp_path / "data/filtered/kept.jsonl", fetched=fetched, **outs)

    folder = outs["out"]
    assert (folder / TUNED_MARKER).is_file() and (folder / "modules.json").is_file()
    from sentence_transformers import SentenceTransformer

    vecs = SentenceTransformer(str(folder), device="cpu").encode(["Where was Mira Oakes born?"])
    assert vecs.shape == (1, 384)

    m = json.loads(outs["metrics"].read_text())
    assert m["finetune"] is True
    pairs = m["pairs"]
    assert pairs["total"] == 7 * 4 + 4 and pairs["hop"] + pairs["question"] == pairs["total"]
    assert pairs["train"] + pairs["heldout"] + pairs["dropped"] == pairs["total"]
    assert pairs["heldout"] > 0 and pairs["dropped"] == m["overlap"]["pairs"] > 0  # t6, and paragraphs of the eval contexts
    assert m["mining"]["bm25"] > 0 and m["mining"]["dense"] > 0
    assert m["training"]["steps"] == 2 and m["training"]["loss_first"] is not None
    assert m["model"]["untuned"] != m["model"]["tuned"] and m["model"]["tuned"].startswith("local:retriever:")
    for part in ("all", "hop", "question"):
        assert set(m["heldout"][part]) == {"untuned", "tuned"}
    assert set(m["heldout"]["all"]["untuned"]) == METRICS and m["heldout"]["all"]["untuned"]["n"] > 0
    assert set(m["sources"]) == {"hotpotqa", "squad_v2"}
    for name, n in (("hotpotqa", 4), ("squad_v2", 2)):
        for which in ("untuned", "tuned"):
            row = m["sources"][name][which]
            assert set(row) == METRICS and row["n"] == n
    assert set(json.loads(outs["timings"].read_text())) >= {"training_s", "total_s"}

    # retrieve and evaluate now search with the tuned folder, its embeddings in their own cache file
    rp = RetrieveParams.model_validate(yaml.safe_load(params.read_text())["retrieve"])
    assert effective_retriever(rp, folder).model == str(folder)
    caches = sorted(p.name for p in (tmp_path / "embeddings").glob("*.sqlite"))
    assert len(caches) == 2 and caches[0].split("-")[0] != caches[1].split("-")[0], caches

    # metrics/retrieval.json: the retrieve stage's own scores (of the tuned model) and the two side by side
    from stages.retrieve import main as retrieve

    retrieval = tmp_path / "metrics/retrieval.json"
    retrieve(params=params, fetched=fetched, out=tmp_path / "data/retrieval", metrics=retrieval, limit=None,
             plot=tmp_path / "metrics/recall_at_k.csv", tuned_retriever=folder, tuning=outs["metrics"])  # fmt: skip
    r = json.loads(retrieval.read_text())
    assert r["model"] == m["model"]["tuned"] and r["tuning"]["sources"] == m["sources"] and r["tuning"]["heldout"] == m["heldout"]
