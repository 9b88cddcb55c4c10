"""Bad input gets a clear error (issue 10): every stage but fetch, run through its CLI on one broken
input each. Every case must exit non-zero with one `error:` line naming the file (and the line and
field where there is one), print no traceback, leave the previous outputs byte-identical and leave
no temporary (`*.tmp`, `*.new`, `*.old`) behind."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.llm_server import LLMServer
from tests.params import merge, raw
from tests.tiny_lm import make_base, write_packed

pytestmark = pytest.mark.slow  # ~65 CLI runs: about 50 s on 2 idle cores, 80-95 s on a shared machine

AS_ROOT = os.geteuid() == 0  # root reads and writes through any permission bits

# the outputs of each stage: option -> a folder or a file
OUTPUTS = {
    "base-model": {"--out": "dir", "--metrics": "file"},
    "generate": {"--out": "dir", "--metrics": "file"},
    "regenerate": {"--out": "dir", "--metrics": "file"},
    "filter": {"--out": "dir", "--metrics": "file"},
    "retrieve": {"--out": "dir", "--metrics": "file"},
    "train-retriever": {"--out": "dir", "--metrics": "file", "--timings": "file"},
    "pack": {"--out": "dir", "--metrics": "file", "--plot": "file"},
    "train": {"--out": "dir", "--metrics-dir": "dir"},
    "merge": {"--out": "dir"},
    "evaluate": {"--out": "dir", "--metrics": "file", "--plots": "dir"},
    "compare": {"--metrics": "file"},
}
SECTIONS = {  # the params sections each stage reads
    "base-model": ["base_model"],
    "generate": ["generate", "llm"],
    "regenerate": ["regenerate", "llm"],
    "filter": ["filter"],
    "retrieve": ["retrieve"],
    "train-retriever": ["retriever", "retrieve"],
    "pack": ["pack"],
    "train": ["train"],
    "merge": ["merge"],
    "evaluate": ["evaluate", "retrieve"],
    "compare": ["judge"],
}
TEMPORARY = ("*.tmp", "*.new", "*.old")

RECORD = {
    "id": "r1",
    "src": "test",
    "question": "Who wrote Hamlet?",
    "sub_questions": [{"question": "Who wrote Hamlet?", "paragraph": "Hamlet is a play by William Shakespeare.", "answer": "Shakespeare."}],
    "final_answer": "William Shakespeare wrote Hamlet.",
    "meta": {"answers": ["William Shakespeare"]},
}
PREDICTION = {"id": "q1", "question": "Who wrote Hamlet?", "gold": ["Shakespeare"], "final_message": "Shakespeare."}


def line(obj: dict, **changes) -> str:
    return json.dumps({**obj, **changes})


def record(i: int = 1, **changes) -> str:
    return line(RECORD, id=f"r{i}", **changes)


def write(path: Path, *lines: str | bytes) -> Path:
    """A file of `lines` (str: a text line; bytes: written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(x if isinstance(x, bytes) else (x + "\n").encode() for x in lines))
    return path


# --- the world the cases break: built once -------------------------------------------------------


@dataclass
class World:
    base: Path  # a tiny Llama + tokenizer (vocab 64)
    other: Path  # a tiny Llama of another width: the wrong base for `adapter`
    adapter: Path  # a LoRA adapter trained on `base`
    packed: Path
    server: LLMServer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("world")
    base = make_base(d / "base")
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d / "other")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(d / "adapter")
    with LLMServer() as server:
        yield World(base, d / "other", d / "adapter", write_packed(d / "packed", n_train=4, n_valid=1), server)


# --- a case: its inputs, the run, the checks -----------------------------------------------------


@dataclass
class Ctx:
    """What a case's setup works with: its folder, the world, the outputs (option -> path) it may redirect."""

    tmp: Path
    world: World
    stage: str
    outputs: dict[str, Path] = field(default_factory=dict)
    limit_file_size: int | None = None  # bytes: writes past it fail (EFBIG), as on a full disk

    def params(self, drop: str | None = None, **over) -> Path:
        """A params file with the stage's sections (`raw` with `over` laid over; tmp caches and a loopback LLM)."""
        llm = {
            "backend": "openai",
            "model": "test-model",
            "base_url": self.world.server.url,
            "api_key_env": None,
            "cache_dir": str(self.tmp / "llm"),
        }
        local = {
            "llm": llm,
            "judge": {"enabled": True, "llm": llm},
            "retrieve": {"cache_dir": str(self.tmp / "embeddings")},
            "train": {"checkpoint_dir": str(self.tmp / "ckpt"), "num_threads": 1},
            "generate": {"documents": {"folder": None}},
        }
        sections = {s: merge(merge(raw(s), local.get(s, {})), over.get(s, {})) for s in SECTIONS[self.stage] if s != drop}
        path = self.tmp / "params.yaml"
        path.write_text(yaml.safe_dump(sections, sort_keys=False))
        return path


@dataclass
class Case:
    id: str
    stage: str
    setup: Callable[[Ctx], list[str]]  # writes the inputs; returns the arguments but the outputs
    expect: tuple[str, ...]  # in stderr: the file, and the line and field where there is one
    skip: str | None = None


def previous(path: Path, kind: str) -> None:
    """A known previous output: a folder with a marker file, or a metrics JSON."""
    if kind == "dir":
        write(path / "marker.txt", "previous run")
    else:
        write(path, '{"previous": true}')


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def limit_writes(n: int) -> Callable[[], None]:
    def limit() -> None:  # in the child: a write past n bytes fails with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))

    return limit


def run_case(case: Case, tmp: Path, world: World) -> subprocess.CompletedProcess:
    outdir = tmp / "outputs"
    ctx = Ctx(tmp, world, case.stage, {opt: outdir / opt.strip("-") for opt in OUTPUTS[case.stage]})
    for opt, path in ctx.outputs.items():
        previous(path, OUTPUTS[case.stage][opt])
    args = case.setup(ctx)
    for opt, path in ctx.outputs.items():
        args += [opt, str(path)]
    before = snapshot(outdir)
    proc = subprocess.run(
        [sys.executable, "-m", "qa_forge", case.stage, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        preexec_fn=limit_writes(ctx.limit_file_size) if ctx.limit_file_size else None,
    )
    outdir.chmod(0o755)
    assert proc.returncode != 0, f"exit 0:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "error: " in proc.stderr, proc.stderr
    for text in case.expect:
        assert text in proc.stderr, f"{text!r} not in stderr:\n{proc.stderr}"
    assert snapshot(outdir) == before, "the previous outputs changed"
    left = [str(p) for pattern in TEMPORARY for p in tmp.rglob(pattern)]
    assert not left, f"temporaries left: {left}"
    return proc


# --- the cases -----------------------------------------------------------------------------------


def filter_on(*lines: str | bytes, **params) -> Callable[[Ctx], list[str]]:
    """filter reading one records file of `lines`."""

    def setup(ctx: Ctx) -> list[str]:
        return [str(write(ctx.tmp / "records.jsonl", *lines)), "--params", str(ctx.params(**params))]

    return setup


def params_text(text: bytes, stage_args: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return [*stage_args(ctx), "--params", str(write(ctx.tmp / "bad.yaml", text))]

    return setup


def records_arg(ctx: Ctx) -> list[str]:
    return [str(write(ctx.tmp / "records.jsonl", record()))]


def filter_missing_input(ctx):
    return [str(ctx.tmp / "nope.jsonl"), "--params", str(ctx.params())]


def filter_folder_input(ctx):
    (ctx.tmp / "folder.jsonl").mkdir()
    return [str(ctx.tmp / "folder.jsonl"), "--params", str(ctx.params())]


def filter_unreadable(ctx):
    path = write(ctx.tmp / "locked.jsonl", record())
    path.chmod(0)
    return [str(path), "--params", str(ctx.params())]


def filter_read_only_outputs(ctx):
    args = records_arg(ctx) + ["--params", str(ctx.params())]
    (ctx.tmp / "outputs").chmod(0o555)
    return args


def filter_output_under_a_file(ctx):
    write(ctx.tmp / "outputs" / "blocker", "a file")
    ctx.outputs["--metrics"] = ctx.tmp / "outputs" / "blocker" / "filter.json"
    return records_arg(ctx) + ["--params", str(ctx.params())]


def filter_metrics_is_a_folder(ctx):
    ctx.outputs["--metrics"] = ctx.tmp / "outputs" / "filter.json"
    previous(ctx.outputs["--metrics"], "dir")
    return records_arg(ctx) + ["--params", str(ctx.params())]


def filter_disk_full(ctx):
    ctx.limit_file_size = 2000  # the outputs need more: the write fails as on a full disk
    path = write(ctx.tmp / "records.jsonl", *(record(i, question=f"Who wrote play number {i}?") for i in range(20)))
    return [str(path), "--params", str(ctx.params())]


# regenerate


def regenerate_same_names(ctx):
    a, b = write(ctx.tmp / "a" / "x.jsonl", record(1)), write(ctx.tmp / "b" / "x.jsonl", record(2))
    return [str(a), str(b), "--params", str(ctx.params())]


def regenerate_corrupt(ctx):
    good, bad = write(ctx.tmp / "sources.jsonl", record()), write(ctx.tmp / "entities.jsonl", record(1), '{"id": "r2", "src"')
    return [str(good), str(bad), "--params", str(ctx.params())]


def regenerate_all_empty(ctx):
    return [str(write(ctx.tmp / "sources.jsonl")), str(write(ctx.tmp / "documents.jsonl", "")), "--params", str(ctx.params())]


def corrupt_llm_cache(ctx) -> None:
    write(ctx.tmp / "llm" / "llm.sqlite", b"this is not a database " * 50)


def regenerate_corrupt_cache(ctx):
    corrupt_llm_cache(ctx)
    return records_arg(ctx) + ["--params", str(ctx.params())]


# generate


def generate_with(fetched: list[str | bytes], docs: bytes | None = None, **params):
    def setup(ctx: Ctx) -> list[str]:
        over = dict(params)
        if docs is not None:
            write(ctx.tmp / "docs" / "notes.txt", docs)
            over = merge(over, {"generate": {"documents": {"folder": str(ctx.tmp / "docs")}}})
        over = merge({"generate": {"entities": {"n": 1}, "attributes": {"n": 1}}}, over)
        return ["--fetched", str(write(ctx.tmp / "train.jsonl", *fetched)), "--params", str(ctx.params(**over))]

    return setup


def generate_corrupt_cache(ctx):
    corrupt_llm_cache(ctx)
    return generate_with([record()])(ctx)


def generate_missing_categories(ctx):
    return generate_with([record()], generate={"categories": str(ctx.tmp / "categories.txt")})(ctx)


# retrieve


def retrieve_with(**files: list[str]):
    def setup(ctx: Ctx) -> list[str]:
        for name, lines in files.items():
            write(ctx.tmp / "fetched" / f"{name}.jsonl", *lines)
        return ["--fetched", str(ctx.tmp / "fetched"), "--params", str(ctx.params())]

    return setup


def retrieve_corrupt_cache(ctx):
    from qa_forge.retrieval.retriever import EmbeddingCache, model_identity

    probe = EmbeddingCache(ctx.tmp / "probe", model_identity("minilm"))  # where the stage's cache file lives
    probe.close()
    write(ctx.tmp / "embeddings" / probe.path.name, b"this is not a database " * 50)
    return retrieve_with(eval_hotpotqa=[record()])(ctx)


# train-retriever (the switch on: with it off nothing is read)


def tune_with(records: list[str] | None, eval_files: dict[str, list[str]] | None = None):
    def setup(ctx: Ctx) -> list[str]:
        kept = ctx.tmp / "kept.jsonl"
        if records is not None:
            write(kept, *records)
        (ctx.tmp / "fetched").mkdir()
        for name, lines in (eval_files if eval_files is not None else {"eval_hotpotqa": [record()]}).items():
            write(ctx.tmp / "fetched" / f"{name}.jsonl", *lines)
        params = ctx.params(retriever={"finetune": True})
        return ["--filtered", str(kept), "--fetched", str(ctx.tmp / "fetched"), "--params", str(params)]

    return setup


def retrieve_no_folder(ctx):
    return ["--fetched", str(ctx.tmp / "fetched"), "--params", str(ctx.params())]


# pack


def pack_with(model: Callable[[Ctx], Path], *lines: str | bytes, **params):
    def setup(ctx: Ctx) -> list[str]:
        recs = write(ctx.tmp / "kept.jsonl", *(lines or (record(),)))
        return [str(recs), "--model", str(model(ctx)), "--params", str(ctx.params(**params))]

    return setup


def the_base(ctx: Ctx) -> Path:
    return ctx.world.base


def base_copy(ctx: Ctx, files: dict[str, bytes | None]) -> Path:
    """A copy of the tiny base with `files` replaced (None: removed)."""
    folder = ctx.tmp / "model"
    shutil.copytree(ctx.world.base, folder)
    for name, data in files.items():
        (folder / name).unlink()
        if data is not None:
            (folder / name).write_bytes(data)
    return folder


def truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


# train


def train_with(base: Callable[[Ctx], Path], packed: Callable[[Ctx], Path] | None = None, **params):
    def setup(ctx: Ctx) -> list[str]:
        folder = packed(ctx) if packed else ctx.world.packed
        return ["--packed", str(folder), "--base", str(base(ctx)), "--params", str(ctx.params(**params))]

    return setup


def packed_rows(*lines: str) -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        write(ctx.tmp / "packed" / "train.jsonl", *lines)
        return ctx.tmp / "packed"

    return make


# merge


def merge_with(base: Callable[[Ctx], Path], trained: Callable[[Ctx], Path], **params):
    def setup(ctx: Ctx) -> list[str]:
        return ["--base", str(base(ctx)), "--trained", str(trained(ctx)), "--params", str(ctx.params(**params))]

    return setup


def adapter_copy(ctx: Ctx, truncate: bool = False) -> Path:
    folder = ctx.tmp / "adapter"
    shutil.copytree(ctx.world.adapter, folder)
    if truncate:
        (folder / "adapter_model.safetensors").write_bytes(truncated(folder / "adapter_model.safetensors"))
    return folder


# evaluate


def evaluate_with(hotpot: list[str | bytes], squad: list[str | bytes], model: Callable[[Ctx], Path] | None = None, **params):
    def setup(ctx: Ctx) -> list[str]:
        sets = {
            "hotpotqa": {"path": str(write(ctx.tmp / "eval_hotpotqa.jsonl", *hotpot)), "n": 3, "scope": "question", "top_k": 1},
            "squad_v2": {"path": str(write(ctx.tmp / "eval_squad_v2.jsonl", *squad)), "n": 3, "scope": "question", "top_k": 1},
        }
        folder = model(ctx) if model else ctx.world.base
        p = ctx.params(**merge({"evaluate": {"sets": sets}}, params))
        return ["--model", str(folder), "--name", "base", "--params", str(p)]

    return setup


# compare


def compare_with(base: list[str | bytes] | None, tuned: list[str | bytes] | None, cache: bool = False):
    def setup(ctx: Ctx) -> list[str]:
        for name, lines in (("base", base), ("finetuned", tuned)):
            (ctx.tmp / name).mkdir()
            if lines is not None:
                write(ctx.tmp / name / "hotpotqa.jsonl", *lines)
        if cache:
            corrupt_llm_cache(ctx)
        return ["--base", str(ctx.tmp / "base"), "--finetuned", str(ctx.tmp / "finetuned"), "--params", str(ctx.params())]

    return setup


GOOD_PRED = line(PREDICTION)
NOT_UTF8 = b'{"id": "r1", "src": "caf\xe9"}\n'  # Latin-1 "é"

CASES = [
    # params: the file, its sections and values
    Case("params-missing-file", "filter", lambda c: [*records_arg(c), "--params", str(c.tmp / "none.yaml")], ("none.yaml", "not found")),
    Case("params-invalid-yaml", "filter", params_text(b"filter: [unclosed\n", records_arg), ("bad.yaml", "not valid YAML")),
    Case(
        "params-not-utf8",
        "filter",
        params_text(b"# ok\nfilter: {near_duplicate_jaccard: 0.5} # \xff\n", records_arg),
        ("bad.yaml:2", "UTF-8"),
    ),
    Case(
        "params-section-missing", "filter", lambda c: [*records_arg(c), "--params", str(c.params(drop="filter"))], ("no 'filter' section",)
    ),
    Case("params-out-of-range", "filter", filter_on(record(), filter={"near_duplicate_jaccard": 1.5}), ("filter.near_duplicate_jaccard",)),
    Case("params-unknown-key", "pack", pack_with(the_base, pack={"max_len": 512}), ("pack.max_len", "Extra inputs")),
    Case("params-bad-choice", "base-model", lambda c: ["--params", str(c.params(base_model={"source": "onnx"}))], ("base_model.source",)),
    Case(
        "params-bad-tiny-config",
        "base-model",
        lambda c: ["--params", str(c.params(base_model={"source": "tiny", "tiny": {"hidden_size": 30, "num_attention_heads": 4}}))],
        ("base_model.tiny", "not a multiple"),
    ),
    Case("params-negative-lr", "train", train_with(the_base, train={"learning_rate": -1.0}), ("train.learning_rate",)),
    Case("params-bad-dtype", "merge", merge_with(the_base, adapter_copy, merge={"dtype": "int8"}), ("merge.dtype",)),
    Case(
        "params-zero-questions",
        "evaluate",
        evaluate_with([record()], [record()], evaluate={"sets": {"hotpotqa": {"n": 0}}}),
        ("hotpotqa.n",),
    ),
    Case(
        "params-unknown-eval-set",
        "evaluate",
        evaluate_with([record()], [record()], evaluate={"sets": {"trivia": {"path": "t.jsonl", "n": 1, "scope": "question", "top_k": 1}}}),
        ("unknown eval set",),
    ),
    # records files (filter)
    Case("missing-file", "filter", filter_missing_input, ("nope.jsonl", "file not found")),
    Case("folder-not-file", "filter", filter_folder_input, ("folder.jsonl", "a folder, not a file")),
    Case("empty-file", "filter", filter_on(), ("records.jsonl", "no records")),
    Case("blank-only-file", "filter", filter_on("", "   ", "\t"), ("records.jsonl", "no records")),
    Case("truncated-json-line", "filter", filter_on(record(1), record(2)[:40]), ("records.jsonl:2", "not valid JSON")),
    Case("wrong-type-field", "filter", filter_on(record(1), record(2), record(3, question=5)), ("records.jsonl:3", "field 'question'")),
    Case(
        "nested-wrong-type",
        "filter",
        filter_on(record(1, sub_questions=[{"answer": ["x"]}])),
        ("records.jsonl:1", "sub_questions.0.answer"),
    ),
    Case("unknown-field", "filter", filter_on(record(1, answer="x")), ("records.jsonl:1", "field 'answer'", "Extra inputs")),
    Case(
        "missing-field", "filter", filter_on(json.dumps({"src": "test", "question": "q?"})), ("records.jsonl:1", "field 'id'", "required")
    ),
    Case("not-an-object", "filter", filter_on(record(1), "[1, 2]"), ("records.jsonl:2", "object")),
    Case("non-utf8-byte", "filter", filter_on(record(1), NOT_UTF8), ("records.jsonl:2", "not UTF-8", "0xe9")),
    Case("utf16-file", "filter", filter_on(record(1).encode("utf-16")), ("records.jsonl:1", "not UTF-8")),
    Case(
        "unreadable-input",
        "filter",
        filter_unreadable,
        ("locked.jsonl", "cannot read"),
        skip="root reads through chmod 000" if AS_ROOT else None,
    ),
    # outputs that cannot be written
    Case(
        "read-only-output-folder",
        "filter",
        filter_read_only_outputs,
        ("outputs", "not writable"),
        skip="root writes through 0555" if AS_ROOT else None,
    ),
    Case("output-parent-is-a-file", "filter", filter_output_under_a_file, ("blocker", "not a folder")),
    Case("metrics-path-is-a-folder", "filter", filter_metrics_is_a_folder, ("filter.json", "exists as a folder")),
    Case("write-fails-disk-full", "filter", filter_disk_full, ("kept.jsonl", "File too large")),
    # regenerate
    Case("same-name-inputs", "regenerate", regenerate_same_names, ("x.jsonl", "two inputs")),
    Case("regenerate-truncated-line", "regenerate", regenerate_corrupt, ("entities.jsonl:2", "not valid JSON")),
    Case("regenerate-all-empty", "regenerate", regenerate_all_empty, ("sources.jsonl", "no records")),
    Case("regenerate-corrupt-llm-cache", "regenerate", regenerate_corrupt_cache, ("llm.sqlite", "delete it")),
    # generate
    Case("generate-fetched-not-utf8", "generate", generate_with([NOT_UTF8]), ("train.jsonl:1", "not UTF-8")),
    Case("generate-fetched-empty", "generate", generate_with([]), ("train.jsonl", "no records")),
    Case(
        "generate-document-latin1",
        "generate",
        generate_with([record()], docs=b"Water.\nIt evaporates from the sea \xe0 85%.\n"),
        ("notes.txt:2", "not UTF-8"),
    ),
    Case("generate-no-categories-file", "generate", generate_missing_categories, ("categories.txt", "not found")),
    Case("generate-corrupt-llm-cache", "generate", generate_corrupt_cache, ("llm.sqlite", "not a usable SQLite cache")),
    # retrieve
    Case("retrieve-no-fetched-folder", "retrieve", retrieve_no_folder, ("fetched", "not found")),
    Case(
        "retrieve-empty-eval-file",
        "retrieve",
        retrieve_with(eval_hotpotqa=[record()], eval_squad_v2=[]),
        ("eval_squad_v2.jsonl", "no records"),
    ),
    Case(
        "retrieve-wrong-field",
        "retrieve",
        retrieve_with(eval_hotpotqa=[record(1, multihop="often")]),
        ("eval_hotpotqa.jsonl:1", "field 'multihop'"),
    ),
    Case("retrieve-corrupt-embedding-cache", "retrieve", retrieve_corrupt_cache, (".sqlite", "delete it")),
    # train-retriever
    Case("train-retriever-no-records", "train-retriever", tune_with(None), ("kept.jsonl", "not found")),
    Case("train-retriever-wrong-field", "train-retriever", tune_with([record(1, multihop="often")]), ("kept.jsonl:1", "field 'multihop'")),
    Case(
        "train-retriever-no-pairs",
        "train-retriever",
        tune_with([record(1, sub_questions=[])]),
        ("kept.jsonl", "no (query, paragraph) pairs"),
    ),
    Case("train-retriever-no-eval-files", "train-retriever", tune_with([record()], {}), ("fetched", "no eval_*.jsonl")),
    # pack
    Case(
        "pack-bad-jinja-template",
        "pack",
        pack_with(the_base, pack={"chat_template": "{% for m in messages %}{{ m['content'] }"}),
        ("pack.chat_template", "jinja"),
    ),
    Case("pack-no-model-folder", "pack", pack_with(lambda c: c.tmp / "no-model"), ("no-model", "model folder not found")),
    Case(
        "pack-corrupt-tokenizer",
        "pack",
        pack_with(lambda c: base_copy(c, {"tokenizer.json": b'{"version": "1.0", "model": {'})),
        ("tokenizer.json:1", "not valid JSON"),
    ),
    Case(
        "pack-records-wrong-field", "pack", pack_with(the_base, record(1, sub_questions="none")), ("kept.jsonl:1", "field 'sub_questions'")
    ),
    # train
    Case(
        "train-rows-from-another-tokenizer",
        "train",
        train_with(the_base, packed_rows(json.dumps({"input_ids": [0, 5, 49151], "labels": [-100, 5, 49151], "position_ids": [0, 1, 2]}))),
        ("train.jsonl:1", "input_ids", "vocab_size 64"),
    ),
    Case(
        "train-rows-wrong-type",
        "train",
        train_with(the_base, packed_rows(json.dumps({"input_ids": "1 2 3", "labels": [1, 2, 3], "position_ids": [0, 1, 2]}))),
        ("train.jsonl:1", "field 'input_ids'"),
    ),
    Case("train-no-packed-folder", "train", train_with(the_base, lambda c: c.tmp / "none"), ("train.jsonl", "file not found")),
    Case(
        "train-truncated-safetensors",
        "train",
        train_with(lambda c: base_copy(c, {"model.safetensors": truncated(c.world.base / "model.safetensors")})),
        ("model.safetensors", "truncated", "not fully covered"),
    ),
    # merge
    Case(
        "merge-adapter-onto-wrong-base",
        "merge",
        merge_with(lambda c: c.world.other, adapter_copy),
        ("adapter", "does not fit the base", "size mismatch"),
    ),
    Case("merge-no-trained-folder", "merge", merge_with(the_base, lambda c: c.tmp / "untrained"), ("untrained", "not found")),
    Case(
        "merge-truncated-adapter",
        "merge",
        merge_with(the_base, lambda c: adapter_copy(c, truncate=True)),
        ("adapter_model.safetensors", "truncated"),
    ),
    Case("merge-no-base-folder", "merge", merge_with(lambda c: c.tmp / "nobase", adapter_copy), ("nobase", "model folder not found")),
    Case(
        "merge-base-config-not-json",
        "merge",
        merge_with(lambda c: base_copy(c, {"config.json": b"{\n  'vocab_size': 64\n}"}), adapter_copy),
        ("config.json:2", "not valid JSON"),
    ),
    # evaluate
    Case("evaluate-zero-record-set", "evaluate", evaluate_with([record()], []), ("eval_squad_v2.jsonl", "no records")),
    Case(
        "evaluate-second-set-corrupt",
        "evaluate",
        evaluate_with([record()], [record(1), "{oops"]),
        ("eval_squad_v2.jsonl:2", "not valid JSON"),
    ),
    Case(
        "evaluate-no-model-folder",
        "evaluate",
        evaluate_with([record()], [record()], model=lambda c: c.tmp / "gone"),
        ("gone", "model folder not found"),
    ),
    Case(
        "evaluate-model-without-weights",
        "evaluate",
        evaluate_with([record()], [record()], model=lambda c: base_copy(c, {"model.safetensors": None})),
        ("no weights",),
    ),
    Case(
        "evaluate-corrupt-safetensors",
        "evaluate",
        evaluate_with([record()], [record()], model=lambda c: base_copy(c, {"model.safetensors": b"\x00" * 64})),
        ("model.safetensors", "corrupt"),
    ),
    # compare
    Case(
        "compare-truncated-prediction",
        "compare",
        compare_with([GOOD_PRED], [GOOD_PRED, GOOD_PRED[:25]]),
        ("finetuned/hotpotqa.jsonl:2", "not valid JSON"),
    ),
    Case(
        "compare-prediction-missing-field",
        "compare",
        compare_with([json.dumps({"id": "q1", "question": "q", "gold": []})], [GOOD_PRED]),
        ("base/hotpotqa.jsonl:1", "field 'final_message'"),
    ),
    Case("compare-missing-predictions", "compare", compare_with([GOOD_PRED], None), ("finetuned/hotpotqa.jsonl", "file not found")),
    Case("compare-no-predictions", "compare", compare_with(None, None), ("base", "no predictions")),
    Case("compare-corrupt-judge-cache", "compare", compare_with([GOOD_PRED], [GOOD_PRED], cache=True), ("llm.sqlite", "delete it")),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.skip(reason=c.skip)] if c.skip else []) for c in CASES])
def test_bad_input_fails_clearly(case, tmp_path, world):
    run_case(case, tmp_path, world)


def test_cases_cover_every_stage_but_fetch():
    assert len(CASES) >= 40
    assert {c.stage for c in CASES} == set(OUTPUTS)


def test_a_bom_is_read_as_utf8(tmp_path):
    """A byte order mark (some Windows editors write one) is not bad input."""
    recs = write(tmp_path / "records.jsonl", b"\xef\xbb\xbf" + record().encode() + b"\n")
    params = write(tmp_path / "params.yaml", yaml.safe_dump({"filter": raw("filter")}))
    args = [str(recs), "--params", str(params), "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "filter.json")]
    proc = subprocess.run([sys.executable, "-m", "qa_forge", "filter", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "filter.json").read_text())["records"] == 1
