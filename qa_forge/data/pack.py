"""pack: tokenise the filtered records and pack whole conversations into training rows.

Each record becomes one conversation (`render.to_messages`), tokenised by `render.tokenize_chat`:
labels only on assistant tokens (each turn through its end-of-turn token), -100 on system / user /
tool tokens. Records are split train/valid (`pack.valid_fraction`, seeded, by record id), over-long
conversations are truncated or dropped (`pack.overlong`), and whole conversations are packed into
rows of at most `pack.max_seq_length` tokens by best-fit decreasing (TRL's `pack_dataset`, strategy
"bfd"); `pack.enabled: false` writes one conversation per row (the collator pads to the batch's
longest). A packed row follows `qa_forge.training.collate`: position ids restart at 0 per segment and the first
label of every segment is -100 (transformers' `DataCollatorWithFlattening` builds each row), so no
segment is predicted from the one before it and attention never crosses a segment.

Writes data/packed/{train,valid}.jsonl (+ the chat template used), metrics/pack.json and
metrics/pack_lengths.csv (conversation-length histogram for `dvc plots`).
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from qa_forge.chat.render import CHATML, ensure_template, to_messages, tokenize_chat
from qa_forge.core.io import UserError, atomic_dir, atomic_path, check_model_folder, model_errors, write_jsonl
from qa_forge.core.records import Record
from qa_forge.core.rows import IGNORE_INDEX, ROW_KEYS, segments


class PackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool  # false: one conversation per row
    max_seq_length: PositiveInt
    overlong: Literal["drop", "truncate"]  # conversations longer than max_seq_length
    valid_fraction: float = Field(ge=0.0, lt=1.0)
    seed: int
    chat_template: str | None  # null: the model's own (ChatML if it has none); or a jinja string


# --- tokenising ----------------------------------------------------------------------------------

# where the chat template came from (`load_tokenizer`), as an error names it
TEMPLATE_FROM = {
    "params": "param 'pack.chat_template'",
    "model": "the model's chat template",
    "chatml_fallback": "the ChatML fallback template",
}


def load_tokenizer(model: str | Path, chat_template: str | None = None):
    """The tokenizer of a model folder, and where its chat template comes from: "params", "model" or
    "chatml_fallback"."""
    check_model_folder(model, config=None, weights=False)  # its JSON files checked: an error names the file
    from transformers import AutoTokenizer

    with model_errors(model, "tokenizer"):
        tok = AutoTokenizer.from_pretrained(str(model))
    if chat_template:
        tok.chat_template = chat_template
        return tok, "params"
    source = "model" if tok.chat_template else "chatml_fallback"
    ensure_template(tok, CHATML)
    return tok, source


def encode(records: list[Record], tokenizer, template_from: str = "model") -> list[dict]:
    """One example per record: {"id", "input_ids", "labels"}."""
    from jinja2 import TemplateError

    out = []
    for r in records:
        try:
            ids, labels = tokenize_chat(tokenizer, to_messages(r))
        except TemplateError as e:  # the template itself is broken: name where it came from
            raise UserError(f"{TEMPLATE_FROM[template_from]}: jinja error rendering record {r.id}: {type(e).__name__}: {e}") from None
        except (ValueError, IndexError) as e:
            raise UserError(f"record {r.id}: cannot render its conversation ({e})") from None
        out.append({"id": r.id, "input_ids": ids, "labels": labels})
    return out


def split(items: list, fraction: float, seed: int, key=lambda x: x["id"]) -> tuple[list, list]:
    """(train, valid): the `round(n * fraction)` items whose seeded hash of the id is smallest.

    Hash ranks, not a shuffle: adding records moves few others between train and valid. At least one
    valid item when fraction > 0 and there are two or more items; never all of them.
    """
    if fraction <= 0 or len(items) < 2:
        return list(items), []
    k = min(len(items) - 1, max(1, round(len(items) * fraction)))
    rank = sorted(range(len(items)), key=lambda i: hashlib.sha256(f"{seed}:{key(items[i])}".encode()).hexdigest())
    valid = set(rank[:k])
    return [x for i, x in enumerate(items) if i not in valid], [x for i, x in enumerate(items) if i in valid]


def fit(examples: list[dict], max_len: int, overlong: str) -> tuple[list[dict], dict]:
    """Apply `overlong` to conversations longer than max_len; count what was done."""
    kept, report = [], {"count": 0, "action": overlong, "truncated": 0, "dropped": 0, "dropped_no_labels": 0, "tokens_cut": 0}
    for ex in examples:
        n = len(ex["input_ids"])
        if n <= max_len:
            kept.append(ex)
            continue
        report["count"] += 1
        if overlong == "drop":
            report["dropped"] += 1
            continue
        cut = {**ex, "input_ids": ex["input_ids"][:max_len], "labels": ex["labels"][:max_len]}
        if all(lab == IGNORE_INDEX for lab in cut["labels"][1:]):  # nothing left to learn
            report["dropped_no_labels"] += 1
            continue
        report["truncated"] += 1
        report["tokens_cut"] += n - max_len
        kept.append(cut)
    return kept, report


# --- rows ----------------------------------------------------------------------------------------


def flatten(convs: list[dict]) -> dict:
    """One row from whole conversations: transformers' DataCollatorWithFlattening (position ids
    restart at 0, the first label of each segment becomes -100)."""
    from transformers import DataCollatorWithFlattening

    batch = DataCollatorWithFlattening(return_tensors="np", separator_id=IGNORE_INDEX)(
        [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in convs]
    )
    return {k: batch[k][0].tolist() for k in ("input_ids", "labels", "position_ids")}


def bfd_bins(lengths: list[int], max_len: int) -> list[list[int]]:
    """Best-fit decreasing: bins of indices into `lengths`, each bin's total ≤ max_len.

    TRL's `pack_dataset(strategy="bfd")` (a segment tree over the free space) does the binning. Two
    things we guard: `datasets.map` hands it batches of 1,000 by default, which would pack each
    batch on its own, so we pass the whole list as one batch; and it truncates (never splits)
    sequences over `seq_length`, which `fit` has already handled, and drops empty ones (we have none).
    It reorders (longest first): fine, conversations are independent.
    """
    if not lengths:
        return []
    if max(lengths) > max_len or min(lengths) < 1:
        raise ValueError("bfd_bins: every length must be in [1, max_len]")
    import datasets
    from trl import pack_dataset

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"input_ids": [[i] * n for i, n in enumerate(lengths)]})
    packed = pack_dataset(ds, max_len, strategy="bfd", map_kwargs={"batch_size": None})
    bins = []
    for row, seq_lengths in zip(packed["input_ids"], packed["seq_lengths"]):
        bin, at = [], 0
        for n in seq_lengths:
            bin.append(row[at])  # every token of a segment carries its index
            at += n
        bins.append(bin)
    return bins


def greedy_bins(lengths: list[int], max_len: int) -> list[list[int]]:
    """In-order greedy packing (the seeds' method): append until the next one does not fit."""
    bins, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        if cur and used + n > max_len:
            bins.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        bins.append(cur)
    return bins


def pack(examples: list[dict], max_len: int, enabled: bool = True, seed: int = 0) -> list[dict]:
    """Rows {"input_ids", "labels", "position_ids"}; every example in exactly one row, whole."""
    if enabled:
        bins = bfd_bins([len(ex["input_ids"]) for ex in examples], max_len)
    else:
        bins = [[i] for i in range(len(examples))]
    rows = [flatten([examples[i] for i in b]) for b in bins]
    check_rows(rows, examples, max_len)
    random.Random(seed).shuffle(rows)  # BFD emits longest-first; a reader that does not shuffle sees a mix
    return rows


def check_rows(rows: list[dict], examples: list[dict], max_len: int) -> None:
    """The row contract (qa_forge.training.collate); a violation is a bug here or in a library we call."""
    got = sorted(tuple(r["input_ids"][a:b]) for r in rows for a, b in segments(r["position_ids"]))
    want = sorted(tuple(ex["input_ids"]) for ex in examples)
    problems = []
    if got != want:
        problems.append("conversations lost, duplicated or split")
    for k, r in enumerate(rows):
        if len(r["input_ids"]) > max_len:
            problems.append(f"row {k} has {len(r['input_ids'])} tokens > {max_len}")
        if any(r["labels"][a] != IGNORE_INDEX for a, _ in segments(r["position_ids"])):
            problems.append(f"row {k}: a segment's first label is not -100")
    if problems:
        raise UserError("pack: " + "; ".join(problems[:3]))


# --- metrics -------------------------------------------------------------------------------------


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def histogram(lengths: list[int], max_len: int, buckets: int = 16) -> list[dict]:
    """Rows {"tokens": "0001-0064", "conversations": n}, zero-padded so the labels sort; the last
    bucket holds everything over max_len."""
    width = max(1, math.ceil(max_len / buckets))
    digits = len(str(max_len + 1))
    rows = []
    for lo in range(0, max_len, width):
        hi = min(lo + width, max_len)
        rows.append({"tokens": f"{lo + 1:0{digits}d}-{hi:0{digits}d}", "conversations": sum(lo < n <= hi for n in lengths)})
    rows.append({"tokens": f"{max_len + 1}+", "conversations": sum(n > max_len for n in lengths)})
    return rows


def row_stats(rows: list[dict], max_len: int) -> dict:
    tokens = sum(len(r["input_ids"]) for r in rows)
    labelled = sum(lab != IGNORE_INDEX for r in rows for lab in r["labels"])
    return {
        "rows": len(rows),
        "tokens": tokens,
        "labelled_tokens": labelled,
        "efficiency": round(tokens / (len(rows) * max_len), 4) if rows else 0.0,
    }


def report(
    p: PackParams, template_from: str, lengths: list[int], overlong: dict, train: list[dict], valid: list[dict], n_train: int, n_valid: int
) -> dict:
    s = sorted(lengths)
    both = row_stats(train + valid, p.max_seq_length)
    return {
        "enabled": p.enabled,
        "max_seq_length": p.max_seq_length,
        "chat_template": template_from,
        "conversations": len(lengths),
        "conversations_train": n_train,
        "conversations_valid": n_valid,
        "tokens": both["tokens"],  # after overlong handling: what the rows hold
        "tokens_before": sum(lengths),
        "length": {
            "p50": percentile(s, 50),
            "p90": percentile(s, 90),
            "p99": percentile(s, 99),
            "max": s[-1] if s else 0,
            "mean": round(sum(s) / len(s), 1) if s else 0.0,
        },
        "overlong": overlong,
        "rows": both["rows"],
        "rows_train": len(train),
        "rows_valid": len(valid),
        "packing_efficiency": both["efficiency"],  # real tokens / (rows × max_seq_length)
        "labelled_fraction": round(both["labelled_tokens"] / both["tokens"], 4) if both["tokens"] else 0.0,
        "labelled_tokens": both["labelled_tokens"],
        "train": row_stats(train, p.max_seq_length),
        "valid": row_stats(valid, p.max_seq_length),
    }


# --- stage ---------------------------------------------------------------------------------------


def pack_records(
    records: list[Record], tokenizer, p: PackParams, template_from: str = "model"
) -> tuple[dict[str, list[dict]], dict, list[int]]:
    """({"train": rows, "valid": rows}, metrics, conversation lengths before overlong handling)."""
    examples = encode(records, tokenizer, template_from)
    lengths = [len(ex["input_ids"]) for ex in examples]
    train_ex, valid_ex = split(examples, p.valid_fraction, p.seed)
    train_fit, over_t = fit(train_ex, p.max_seq_length, p.overlong)
    valid_fit, over_v = fit(valid_ex, p.max_seq_length, p.overlong)
    overlong = {k: over_t[k] + over_v[k] if isinstance(over_t[k], int) else over_t[k] for k in over_t}
    if not train_fit:
        raise UserError(
            f"pack: no training conversation left (records: {len(records)}, overlong: {overlong}); raise pack.max_seq_length or use pack.overlong: truncate"
        )
    rows = {"train": pack(train_fit, p.max_seq_length, p.enabled, p.seed), "valid": pack(valid_fit, p.max_seq_length, p.enabled, p.seed)}
    return rows, report(p, template_from, lengths, overlong, rows["train"], rows["valid"], len(train_fit), len(valid_fit)), lengths


def write_outputs(out: Path, rows: dict[str, list[dict]], chat_template: str) -> None:
    """{name}.jsonl rows and the chat template train / merge must render with, swapped in as one folder."""
    with atomic_dir(out) as tmp:
        for name, rs in rows.items():
            write_jsonl(tmp / f"{name}.jsonl", ({k: r[k] for k in ROW_KEYS} for r in rs), compact=True)
        (tmp / "chat_template.jinja").write_text(chat_template, encoding="utf-8")


def write_histogram(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["tokens", "conversations"])
        w.writeheader()
        w.writerows(rows)
