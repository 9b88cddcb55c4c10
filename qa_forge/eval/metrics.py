"""Metrics as pure functions: the seeds' HotpotQA metrics, official HotpotQA / SQuAD v2 EM and F1,
the llama_squad table, retrieval recall@k / MRR, bootstrap confidence intervals and grouping.

Every answer comparison goes through `normalize_answer` (the official SQuAD/HotpotQA rule: lower
case, no punctuation, no articles a/an/the, single spaces).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qa_forge.core.groups import group_rows
from qa_forge.core.textnorm import normalize_answer

# --- the seeds' HotpotQA metrics (qa-expert) ----------------------------------------------------


def word_recall(prediction: str, gold: str) -> float:
    """The seeds' "Recall": distinct gold words (normalised) present in the prediction, divided by
    the number of gold words. As the seeds compute it, the numerator counts distinct shared words
    and the denominator every gold word, so a gold answer with a repeated word ("New York, New
    York") cannot reach 1. When either side normalises to nothing: 1 if both do, else 0."""
    pred, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not gold_tokens:
        return float(pred == gold_tokens)
    return len(set(pred) & set(gold_tokens)) / len(gold_tokens)


def answer_containing(prediction: str, gold: str, whole_words: bool = False) -> float:
    """The seeds' "Accuracy of containing ground-truth": 1 if the normalised gold answer occurs in
    the normalised prediction, else 0. The seeds test a plain substring (gold "art" is found in
    "party"); `whole_words=True` requires it to start and end on word boundaries. A gold that
    normalises to nothing is contained in anything (substring) / in nothing (whole words)."""
    g, p = normalize_answer(gold), normalize_answer(prediction)
    if whole_words:
        return float(bool(g) and f" {g} " in f" {p} ")
    return float(g in p)


_ANSWER = re.compile(r"(?<![A-Za-z])(?<!Short )(?<!short )Answer:")  # never the one in "Short answer:"
_SHORT = re.compile(r"Short answer:", re.IGNORECASE)


def extract_answer(message: str) -> str:
    """The text after the last "Answer:" of a final message, up to "Short answer:" (or the end);
    the whole message when it has no "Answer:"."""
    found = list(_ANSWER.finditer(message))
    if not found:
        return message.strip()
    rest = message[found[-1].end() :]
    m = _SHORT.search(rest)
    return (rest[: m.start()] if m else rest).strip()


def extract_short_answer(message: str) -> str | None:
    """The first line after the last "Short answer:", or None when there is none."""
    found = list(_SHORT.finditer(message))
    if not found:
        return None
    rest = message[found[-1].end() :].strip()
    return rest.splitlines()[0].strip() if rest else ""


def seed_scores(message: str, gold: str, answer: str | None = None) -> dict[str, float]:
    """The seeds' two metrics on the whole final message (summary included, as the seeds' script
    scores it) and on the extracted answer alone (`answer`, or the text after "Answer:")."""
    answer = extract_answer(message) if answer is None else answer
    return {
        "recall_message": word_recall(message, gold),
        "containing_message": answer_containing(message, gold),
        "recall_answer": word_recall(answer, gold),
        "containing_answer": answer_containing(answer, gold),
    }


# --- official HotpotQA answer EM / F1 -----------------------------------------------------------

_SPECIAL = {"yes", "no", "noanswer"}


def hotpot_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def hotpot_prf(prediction: str, gold: str) -> tuple[float, float, float]:
    """(F1, precision, recall) as the official HotpotQA script: when either normalised side is
    yes / no / noanswer and they differ, all three are 0; otherwise token-multiset overlap."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if (p in _SPECIAL or g in _SPECIAL) and p != g:
        return 0.0, 0.0, 0.0
    pt, gt = p.split(), g.split()
    same = sum((Counter(pt) & Counter(gt)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall), precision, recall


def hotpot_f1(prediction: str, gold: str) -> float:
    return hotpot_prf(prediction, gold)[0]


# --- SQuAD v2 -----------------------------------------------------------------------------------


def _squad_golds(golds: Sequence[str]) -> list[str]:
    """Gold answers that normalise to something; [""] for an unanswerable question."""
    return [a for a in golds if normalize_answer(a)] or [""]


def _squad_f1_one(prediction: str, gold: str) -> float:
    pt, gt = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pt or not gt:  # no-answer on either side: 1 if both are no-answer
        return float(pt == gt)
    same = sum((Counter(pt) & Counter(gt)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, golds: Sequence[str]) -> float:
    """Official SQuAD v2 EM: max over gold answers; golds [] (unanswerable) match only ""."""
    p = normalize_answer(prediction)
    return max(float(p == normalize_answer(g)) for g in _squad_golds(golds))


def squad_f1(prediction: str, golds: Sequence[str]) -> float:
    """Official SQuAD v2 F1: max over gold answers; golds [] score 1 for "" and 0 otherwise."""
    return max(_squad_f1_one(prediction, g) for g in _squad_golds(golds))


def squad_v2_table(predictions: Sequence[str | None], golds: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The llama_squad results columns (as fractions) plus F1. A prediction is the answer string
    ("" = the model abstained) or None when the reply could not be parsed; an unparseable reply
    scores 0 everywhere. Columns: parseable (llama_squad's "% Valid JSON"), exact_match,
    exact_match_parseable, correct_no_answer (EM among gold-unanswerable), correct_has_answer
    (EM among answerable), f1."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    em = [0.0 if p is None else squad_exact_match(p, g) for p, g in zip(predictions, golds)]
    f1 = [0.0 if p is None else squad_f1(p, g) for p, g in zip(predictions, golds)]
    ok = [p is not None for p in predictions]
    no_answer = [not any(normalize_answer(a) for a in g) for g in golds]

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "n": len(predictions),
        "n_no_answer": sum(no_answer),
        "n_has_answer": len(golds) - sum(no_answer),
        "parseable": mean([float(x) for x in ok]),
        "exact_match": mean(em),
        "exact_match_parseable": mean([e for e, o in zip(em, ok) if o]),
        "correct_no_answer": mean([e for e, na in zip(em, no_answer) if na]),
        "correct_has_answer": mean([e for e, na in zip(em, no_answer) if not na]),
        "f1": mean(f1),
    }


# --- confidence intervals -----------------------------------------------------------------------


def bootstrap_ci(values: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and a percentile-bootstrap (1 - alpha) interval over `n` resamples
    with replacement, deterministic for a seed. Empty input: (nan, nan, nan)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # a percentile interval can miss the mean by float noise when all resamples agree
    return mean, float(min(lo, mean)), float(max(hi, mean))


def summarize(values: Sequence[float], n: int = 1000, seed: int = 0, digits: int = 4) -> dict[str, Any]:
    """{"value": mean, "n": count, "ci95": [lo, hi]} for metrics JSON; value/ci95 None when empty."""
    if len(values) == 0:
        return {"value": None, "n": 0, "ci95": None}
    mean, lo, hi = bootstrap_ci(values, n=n, seed=seed, alpha=0.05)
    return {"value": round(mean, digits), "n": len(values), "ci95": [round(lo, digits), round(hi, digits)]}


# --- grouping -----------------------------------------------------------------------------------


def summarize_groups(
    groups: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str], n: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """{group: {"n": rows, metric: summarize(values of the rows that have it)}}."""
    return {
        g: {"n": len(rs), **{m: summarize([r[m] for r in rs if r.get(m) is not None], n=n, seed=seed) for m in metrics}}
        for g, rs in sorted(groups.items())
    }


def by_question_type(rows: Iterable[Mapping[str, Any]], metrics: Sequence[str], field: str = "type", **kw) -> dict[str, dict[str, Any]]:
    """Metrics per HotpotQA question type (bridge / comparison; rows without one: "None")."""
    return summarize_groups(group_rows(rows, field), metrics, **kw)


def retrieve_calls_bucket(calls: int, cap: int = 4) -> str:
    """ "0", "1", ... "cap-1", then "cap+" for cap or more calls."""
    return f"{cap}+" if calls >= cap else str(calls)


def by_retrieve_calls(
    rows: Iterable[Mapping[str, Any]], metrics: Sequence[str], field: str = "retrieve_calls", cap: int = 4, **kw
) -> dict[str, dict[str, Any]]:
    """Metrics per number of retrieve calls the model made (cap or more pooled as "cap+")."""
    return summarize_groups(group_rows(rows, lambda r: retrieve_calls_bucket(int(r.get(field) or 0), cap)), metrics, **kw)
