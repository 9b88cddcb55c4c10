"""pack: labels cover exactly the assistant turns; best-fit-decreasing rows keep every conversation
whole and once; a packed batch gives the same logits and loss as each conversation alone (and the
traps that break that); the stage's outputs and metrics."""

import bisect
import csv
import json
import math
import random
import subprocess
import sys

import pytest
import torch
import yaml

from qa_forge.chat.render import CHATML, end_of_turn_id, to_messages, tokenize_chat
from qa_forge.core.io import UserError
from qa_forge.core.rows import IGNORE_INDEX as IGNORE
from qa_forge.core.rows import segments
from qa_forge.data.pack import (
    bfd_bins,
    encode,
    fit,
    greedy_bins,
    histogram,
    load_tokenizer,
    pack,
    pack_records,
    split,
)
from qa_forge.training.attention import register as register_varlen
from qa_forge.training.collate import Collator, collate, flattens
from tests.conftest import ROOT
from tests.params import merge, raw
from tests.params import params as section
from tests.smollm2 import sample_records, save_tokenizer, tokenizer


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


@pytest.fixture(scope="module")
def records():
    return sample_records()


@pytest.fixture(scope="module")
def examples(tok, records):
    return encode(records, tok)


def labelled_spans(labels):
    spans, cur = [], []
    for lab in list(labels) + [IGNORE]:
        if lab != IGNORE:
            cur.append(lab)
        elif cur:
            spans.append(cur)
            cur = []
    return spans


# --- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["model", "chatml"])
def test_labels_are_exactly_the_assistant_turns(tok, records, template):
    t = tokenizer()
    if template == "chatml":
        t.chat_template = CHATML
    eot = t.convert_ids_to_tokens(end_of_turn_id(t))
    for r in records:
        msgs = to_messages(r)
        ids, labels = tokenize_chat(t, msgs)
        assert len(ids) == len(labels)
        assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels))  # a label is the token itself or ignored
        want = [m["content"] + eot for m in msgs if m["role"] == "assistant"]
        got = [t.decode(span) for span in labelled_spans(labels)]
        assert got == want, r.id
        # so nothing from system / user / tool is learnt (the user's question may recur in a query)
        assert sum(lab != IGNORE for lab in labels) == sum(len(s) for s in labelled_spans(labels))
        for m in msgs:
            if m["role"] in ("system", "tool"):
                assert not any(m["content"][:60] in g for g in got)


# --- packing -----------------------------------------------------------------------------------------


def reference_bfd(lengths, max_len):
    """Textbook best-fit decreasing (sorted free spaces), to check the TRL-based binning against."""
    free, bins = [], 0
    for n in sorted(lengths, reverse=True):
        i = bisect.bisect_left(free, n)  # the smallest free space that fits
        if i < len(free):
            space = free.pop(i)
        else:
            space, bins = max_len, bins + 1
        if space > n:
            bisect.insort(free, space - n)
    return bins


@pytest.mark.parametrize("max_len, n", [(128, 400), (700, 400), (1024, 400), (2048, 400), (1024, 2500)])
def test_bfd_bins(max_len, n, examples):
    """n > 1000 too: datasets.map would otherwise hand TRL batches of 1,000 to pack separately."""
    rng = random.Random(max_len + n)
    lengths = [rng.randint(1, max_len) if rng.random() < 0.2 else rng.randint(1, max_len // 3) for _ in range(n)]
    if max_len >= 1024:  # and the real conversation lengths
        lengths += [len(ex["input_ids"]) for ex in examples]
    bins = bfd_bins(lengths, max_len)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # each exactly once
    assert all(sum(lengths[i] for i in b) <= max_len for b in bins)
    assert len(bins) <= reference_bfd(lengths, max_len)  # it IS best-fit decreasing (or better)
    assert len(bins) <= len(greedy_bins(lengths, max_len))
    assert len(bins) >= math.ceil(sum(lengths) / max_len)


def test_greedy_bins_is_in_order():
    assert greedy_bins([5, 3, 7, 2, 4, 6, 1], 8) == [[0, 1], [2], [3, 4], [5, 6]]
    assert len(bfd_bins([5, 3, 7, 2, 4, 6, 1], 8)) == 4  # 7+1, 6+2, 5+3, 4: BFD fills better on real data


def check_rows(rows, examples, max_len):
    by_ids = {}
    for ex in examples:
        by_ids.setdefault(tuple(ex["input_ids"]), []).append(ex)
    seen = []
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) <= max_len
        for a, b in segments(row["position_ids"]):
            assert row["position_ids"][a:b] == list(range(b - a))  # restart at 0 per segment
            assert row["labels"][a] == IGNORE  # never predicted from the previous segment
            ex = by_ids[tuple(row["input_ids"][a:b])][0]
            assert row["labels"][a + 1 : b] == ex["labels"][1:]
            seen.append(tuple(row["input_ids"][a:b]))
    assert sorted(seen) == sorted(tuple(ex["input_ids"]) for ex in examples)  # every conversation once, whole


@pytest.mark.parametrize("max_len", [800, 1024, 2048])
def test_pack_rows(examples, max_len):
    rows = pack(examples, max_len)
    check_rows(rows, examples, max_len)
    assert len(rows) <= len(greedy_bins([len(e["input_ids"]) for e in examples], max_len))
    assert pack(examples, max_len) == rows  # deterministic


def test_pack_disabled_is_one_conversation_per_row(examples):
    rows = pack(examples, 1024, enabled=False)
    assert len(rows) == len(examples)
    check_rows(rows, examples, 1024)
    batch = collate(rows[:4], pad_id=2)  # pads to the batch's longest
    assert batch["input_ids"].shape[1] == max(len(r["input_ids"]) for r in rows[:4])


def test_overlong_truncate_and_drop(examples):
    max_len = 400
    n_over = sum(len(e["input_ids"]) > max_len for e in examples)
    assert n_over > 0
    kept, rep = fit(examples, max_len, "truncate")
    assert rep["count"] == n_over == rep["truncated"] + rep["dropped_no_labels"] and len(kept) == len(examples) - rep["dropped_no_labels"]
    assert all(len(e["input_ids"]) <= max_len for e in kept)
    kept, rep = fit(examples, max_len, "drop")
    assert rep["dropped"] == n_over and len(kept) == len(examples) - n_over
    # a conversation whose first assistant token lies past max_len has nothing left to learn: dropped
    first_label = min(e["labels"].index(next(lab for lab in e["labels"] if lab != IGNORE)) for e in examples)
    kept, rep = fit(examples, first_label, "truncate")
    assert rep["dropped_no_labels"] == len(examples) and not kept


def test_split_is_seeded_and_stable():
    items = [{"id": f"r{i}"} for i in range(100)]
    train, valid = split(items, 0.1, seed=0)
    assert len(valid) == 10 and len(train) == 90 and not {x["id"] for x in train} & {x["id"] for x in valid}
    assert split(items, 0.1, seed=0) == (train, valid)
    assert split(items, 0.1, seed=1)[1] != valid
    _, more_valid = split(items + [{"id": f"new{i}"} for i in range(10)], 0.1, seed=0)
    assert len({x["id"] for x in valid} & {x["id"] for x in more_valid}) >= 8  # adding records moves few
    assert split(items[:1], 0.5, 0) == (items[:1], [])
    assert split(items[:3], 0.01, 0)[1] != []  # at least one valid record when asked for some


# --- packed batch == each conversation alone ---------------------------------------------------------------


def tiny_model(attn_implementation, vocab_size=512):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=2,
        bos_token_id=1,
        eos_token_id=2,
    )
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation).eval()


def random_conversations(n: int = 9) -> list[dict]:
    """Random conversations: a prompt (unlabelled), then an answer (labelled)."""
    rng = random.Random(0)
    exs = []
    for _ in range(n):
        prompt, answer = rng.randint(5, 40), rng.randint(3, 30)
        ids = [rng.randrange(3, 512) for _ in range(prompt + answer)]
        exs.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return exs


@pytest.fixture(scope="module")
def packed_batch():
    """Random conversations packed into rows of ≤ 128 by our pack(), collated (rows of unequal
    length: padding too)."""
    rows = pack(random_conversations(), 128)
    batch = collate(rows, pad_id=2)
    assert "attention_mask" not in batch  # we never pass a mask (a 4D one would be a trap on eager, below)
    assert len(rows) >= 2 and any(len(segments(r["position_ids"])) >= 3 for r in rows)
    return rows, batch


def alone(model, rows):
    """Per row, per segment: its logits, loss × labelled count and labelled count, run on its own."""
    out = []
    with torch.no_grad():
        for row in rows:
            for a, b in segments(row["position_ids"]):
                ids = torch.tensor([row["input_ids"][a:b]])
                labels = torch.tensor([row["labels"][a:b]])
                res = model(input_ids=ids, labels=labels, use_cache=False)
                n = int((labels[0, 1:] != IGNORE).sum())
                out.append((res.logits[0], res.loss.item() * n, n))
    return out


def packed_diff(model, rows, batch, reference=None, **kwargs):
    """(max |logit diff| over real tokens, |loss diff|) between the packed batch and each alone
    (alone through `reference`, a model with the same weights, when given)."""
    with torch.no_grad():
        res = model(**batch, **kwargs)
    singles = alone(reference or model, rows)
    k, worst = 0, 0.0
    for r, row in enumerate(rows):
        for a, b in segments(row["position_ids"]):
            worst = max(worst, (res.logits[r, a:b] - singles[k][0]).abs().max().item())
            k += 1
    loss_alone = sum(s[1] for s in singles) / sum(s[2] for s in singles)
    return worst, abs(res.loss.item() - loss_alone)


@pytest.mark.parametrize("impl", ["sdpa", "eager", "sdpa_varlen"])
def test_packed_equals_alone(packed_batch, impl):
    rows, batch = packed_batch
    if impl == "sdpa_varlen":
        register_varlen()
    logits, loss = packed_diff(tiny_model(impl), rows, batch, use_cache=False)
    assert logits < 1e-4 and loss < 1e-4, (impl, logits, loss)


# --- a micro-batch flattened into one row: what flash-attention needs -----------------------------------


def conversation_bounds(rows: list[dict], exs: list[dict]) -> list[int]:
    """Where each conversation starts and ends in the rows laid end to end, found by locating each
    conversation's own tokens (not from the position ids the collator reads)."""
    flat = [t for r in rows for t in r["input_ids"]]
    starts = sorted(next(i for i in range(len(flat)) if flat[i : i + len(e["input_ids"])] == e["input_ids"]) for e in exs)
    return [*starts, len(flat)]


def test_flash_attention_sees_every_conversation_boundary():
    """For flash-attention the collator hands transformers one row that its own packed-sequence
    check accepts, with explicit boundaries, and those are exactly the conversations'. The padded
    (B, N) layout fails transformers' check: each row would run as one causal sequence."""
    from transformers.modeling_flash_attention_utils import _is_packed_sequence, prepare_fa_kwargs_from_position_ids

    exs = random_conversations()
    rows = pack(exs, 128)
    assert len(rows) >= 2
    batch = Collator(pad_id=2, flatten=flattens("flash_attention_2"))(rows)
    expected = conversation_bounds(rows, exs)
    assert batch["input_ids"].shape == (1, expected[-1])  # one row, no padding
    assert _is_packed_sequence(batch["position_ids"], batch_size=1)
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == expected
    assert batch["max_length_q"] == batch["max_length_k"] == max(len(e["input_ids"]) for e in exs)
    (cu, _), _ = prepare_fa_kwargs_from_position_ids(batch["position_ids"])  # what flash infers without our kwargs
    assert cu.tolist() == expected
    padded = collate(rows, pad_id=2)
    assert not _is_packed_sequence(padded["position_ids"], batch_size=padded["input_ids"].shape[0])


@pytest.mark.parametrize("impl", ["sdpa", "eager", "sdpa_varlen"])
def test_flattened_batch_equals_each_conversation_alone(packed_batch, impl):
    rows, _ = packed_batch
    if impl == "sdpa_varlen":
        register_varlen()
    model = tiny_model(impl)
    batch = Collator(pad_id=2, flatten=True)(rows)
    with torch.no_grad():
        res = model(**batch, use_cache=False)
    singles = alone(model, rows)
    bounds = [(a, b) for a, b in zip(batch["cu_seq_lens_q"].tolist(), batch["cu_seq_lens_q"].tolist()[1:], strict=False)]
    assert len(bounds) == len(singles)
    worst = max((res.logits[0, a:b] - s[0]).abs().max().item() for (a, b), s in zip(bounds, singles, strict=True))
    loss_alone = sum(s[1] for s in singles) / sum(s[2] for s in singles)
    assert worst < 1e-4 and abs(res.loss.item() - loss_alone) < 1e-4, (impl, worst, res.loss.item(), loss_alone)


def test_sdpa_varlen_refuses_a_row_without_position_ids():
    from qa_forge.training.attention import sdpa_varlen_forward

    q = torch.zeros(1, 4, 6, 8)
    kv = torch.zeros(1, 2, 6, 8)
    with pytest.raises(ValueError, match="position_ids"):
        sdpa_varlen_forward(torch.nn.Module(), q, kv, kv, position_ids=None)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_traps_break_packing(packed_batch, impl):
    """The same packed batch through the wrong paths: attention crosses segments."""
    rows, batch = packed_batch
    model = tiny_model(impl)
    # a cache: transformers only reads segments from position ids when there is none
    assert packed_diff(model, rows, batch, use_cache=True)[0] > 1e-2
    # a naive all-ones 2D mask: likewise, the mask wins over the position ids
    assert packed_diff(model, rows, batch, use_cache=False, attention_mask=torch.ones_like(batch["input_ids"]))[0] > 1e-2


def block_causal_bool_mask(batch):
    pos = batch["position_ids"]
    seg = (pos == 0).cumsum(-1)
    n = pos.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return (causal & (seg[:, :, None] == seg[:, None, :]))[:, None]  # (B, 1, N, N), True = attend


def test_boolean_4d_mask_is_right_on_sdpa_wrong_on_eager(packed_batch):
    """A correct block-causal boolean 4D mask is passed through as-is: sdpa reads True as 'attend',
    eager adds it to the scores (+1 / +0, nothing masked). We pass none (see packed_batch)."""
    rows, batch = packed_batch
    mask = block_causal_bool_mask(batch)
    assert packed_diff(tiny_model("sdpa"), rows, batch, use_cache=False, attention_mask=mask)[0] < 1e-4
    assert packed_diff(tiny_model("eager"), rows, batch, use_cache=False, attention_mask=mask)[0] > 1e-2


def test_flex_attention_cpu(packed_batch):
    """flex_attention (a block-sparse BlockMask from the position ids); compiles on first use (~40 s cold)."""
    rows, batch = packed_batch
    try:
        model = tiny_model("flex_attention")
        # the singles through sdpa (same weights): each new length would recompile flex
        logits, loss = packed_diff(model, rows, batch, reference=tiny_model("sdpa"), use_cache=False)
    except Exception as e:  # noqa: BLE001 - no C++ compiler for inductor, an unsupported torch, ...
        pytest.skip(f"flex_attention does not run on this CPU setup: {type(e).__name__}: {str(e)[:200]}")
    assert logits < 1e-4 and loss < 1e-4, (logits, loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (flash-attention varlen, sdpa on GPU)")
@pytest.mark.parametrize("impl", ["sdpa", "flash_attention_2"])
def test_packed_equals_alone_gpu(packed_batch, impl):
    if impl == "flash_attention_2":
        pytest.importorskip("flash_attn", reason="flash-attn not installed (pip install -e .[gpu])")
    rows, _ = packed_batch
    dtype = torch.bfloat16 if impl == "flash_attention_2" else torch.float32
    model = tiny_model(impl).to("cuda", dtype)
    batch = Collator(pad_id=2, flatten=flattens(impl))(rows)
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    starts = [a for a, _ in segments(batch["position_ids"][0].tolist())] if flattens(impl) else None

    class OnCuda:  # run the singles on the GPU as well
        def __call__(self, input_ids, labels, use_cache):
            return model(input_ids=input_ids.cuda(), labels=labels.cuda(), use_cache=use_cache)

    with torch.no_grad():
        res = model(**batch, use_cache=False)
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-4
    k = 0
    singles = alone(OnCuda(), rows)
    for r, row in enumerate(rows):
        for a, b in segments(row["position_ids"]):
            if starts is not None:  # one flattened row: segment k sits at its offset in it
                r, a, b = 0, starts[k], starts[k] + (b - a)
            assert (res.logits[r, a:b].float() - singles[k][0].float()).abs().max().item() < tol
            k += 1


# --- the stage -------------------------------------------------------------------------------------------------


def test_stage_outputs_and_metrics(tmp_path, records):
    model = save_tokenizer(tmp_path / "model")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"pack": merge(raw("pack"), {"max_seq_length": 512, "valid_fraction": 0.2})}))
    recs = tmp_path / "kept.jsonl"
    recs.write_text("".join(r.model_dump_json() + "\n" for r in records))
    out, metrics, plot = tmp_path / "packed", tmp_path / "pack.json", tmp_path / "lengths.csv"
    args = [str(recs), "--model", str(model), "--params", str(params), "--out", str(out), "--metrics", str(metrics), "--plot", str(plot)]
    proc = subprocess.run([sys.executable, "-m", "qa_forge", "pack", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(metrics.read_text())
    rows = {name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()] for name in ("train", "valid")}
    assert set(rows["train"][0]) == {"input_ids", "labels", "position_ids"}
    assert m["conversations"] == len(records) and m["conversations_valid"] == round(0.2 * len(records))
    assert m["rows_train"] == len(rows["train"]) and m["rows_valid"] == len(rows["valid"])
    assert m["overlong"]["action"] == "truncate" and m["overlong"]["count"] > 0  # some sample conversations pass 512
    assert m["overlong"]["count"] == m["overlong"]["truncated"] + m["overlong"]["dropped_no_labels"]
    tokens = sum(len(r["input_ids"]) for rs in rows.values() for r in rs)
    assert m["tokens"] == tokens and m["tokens_before"] == tokens + m["overlong"]["tokens_cut"]
    assert m["packing_efficiency"] == round(tokens / (m["rows"] * 512), 4)
    assert 0 < m["labelled_fraction"] < 1 and m["length"]["p50"] <= m["length"]["p90"] <= m["length"]["p99"] <= m["length"]["max"]
    assert all(len(r["input_ids"]) <= 512 for rs in rows.values() for r in rs)
    hist = list(csv.DictReader(plot.open()))
    assert sum(int(h["conversations"]) for h in hist) == len(records)
    assert [h["tokens"] for h in hist] == sorted(h["tokens"] for h in hist)  # labels sort in order for the bar plot
    assert (out / "chat_template.jinja").read_text() == tokenizer().chat_template


def test_template_fallback_and_override(tmp_path, records):
    model = save_tokenizer(tmp_path / "base", chat_template=None)
    tok, source = load_tokenizer(model)
    assert source == "chatml_fallback" and tok.chat_template == CHATML
    tok, source = load_tokenizer(model, "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    assert source == "params"
    _, m, _ = pack_records(records[:6], tok, section("pack", max_seq_length=2048, valid_fraction=0.0), source)
    assert m["chat_template"] == "params" and m["rows_valid"] == 0 and m["rows_train"] >= 1


def test_no_training_conversation_left_is_an_error(tok, records):
    with pytest.raises(UserError, match="no training conversation left"):
        pack_records(records[:4], tok, section("pack", max_seq_length=64, overlong="drop"))


def test_histogram_buckets():
    h = histogram([1, 64, 65, 1024, 1025, 5000], 1024)
    assert h[0] == {"tokens": "0001-0064", "conversations": 2} and h[1]["conversations"] == 1
    assert h[-2] == {"tokens": "0961-1024", "conversations": 1} and h[-1] == {"tokens": "1025+", "conversations": 2}
