"""Metrics as pure functions: the seeds' HotpotQA metrics, official HotpotQA / SQuAD v2 EM and F1,
retrieval recall@k / MRR, confidence intervals (Wilson, bootstrap, Newcombe's paired) and grouping.

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


# --- confidence intervals -----------------------------------------------------------------------
# Every score is stored as {"value", "n", "ci95_lo", "ci95_hi"}: plain numbers that `dvc metrics
# diff` compares (it never diffs lists). Scores of 0/1 outcomes get a Wilson interval, which keeps a
# width at 0 and 1 (0 of 20 correct: [0, 0.16]) where a percentile bootstrap collapses to [0, 0];
# other scores a percentile bootstrap. The base vs fine-tuned difference is paired by question.

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion. scipy has it only for integer counts
    (`binomtest(k, n).proportion_ci("wilson")`), and every caller here has its counts in hand."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_ci(values: Sequence[float], n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and a percentile-bootstrap (1 - alpha) interval over `n` resamples
    with replacement, deterministic for a seed. Empty input: (nan, nan, nan). scipy.stats.bootstrap
    refuses a sample whose resamples all agree (degenerate), which small eval sets hit; this returns
    the degenerate interval and leaves 0/1 outcomes to `wilson`."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # a percentile interval can miss the mean by float noise when all resamples agree
    return mean, float(min(lo, mean)), float(max(hi, mean))


def interval(value: float | None, n: int, lo: float | None, hi: float | None, digits: int = 4) -> dict[str, Any]:
    """The stored form of a score."""

    def r(x: float | None) -> float | None:
        return None if x is None or np.isnan(x) else round(float(x), digits)

    return {"value": r(value), "n": n, "ci95_lo": r(lo), "ci95_hi": r(hi)}


def summarize(values: Sequence[float], n: int = 1000, seed: int = 0, digits: int = 4, binary: bool | None = None) -> dict[str, Any]:
    """A score with its N and 95 % interval: Wilson for 0/1 outcomes, else a percentile bootstrap
    of `n` resamples. `binary=False`: a bootstrap even when every value is 0 or 1 (a count, whose
    values can all happen to be). Empty: value and interval None."""
    if len(values) == 0:
        return interval(None, 0, None, None)
    if binary is not False and is_binary(values):
        lo, hi = wilson(sum(values), len(values))
        return interval(float(np.mean(values)), len(values), lo, hi, digits)
    mean, lo, hi = bootstrap_ci(values, n=n, seed=seed)
    return interval(mean, len(values), lo, hi, digits)


def newcombe_paired(after: Sequence[float], before: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(difference, lo, hi) of two paired proportions (each question scored 0/1 by both models):
    Newcombe's hybrid score interval for paired data (Newcombe 1998, method 10: Wilson intervals
    of both marginals, joined through the phi correlation of the 2x2 table). It keeps a width when
    both models agree on every question, where a paired bootstrap gives [0, 0]."""
    a = sum(1 for x, y in zip(after, before) if x and y)
    b = sum(1 for x, y in zip(after, before) if x and not y)
    c = sum(1 for x, y in zip(after, before) if not x and y)
    d = len(after) - a - b - c
    n = len(after)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    denominator = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / np.sqrt(denominator) if denominator else 0.0
    delta = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    theta = p1 - p2
    return theta, max(-1.0, theta - delta), min(1.0, theta + eps)


def paired_difference(
    after: Sequence[float], before: Sequence[float], n: int = 1000, seed: int = 0, binary: bool | None = None
) -> dict[str, Any]:
    """after - before, scored on the same questions in the same order, with a paired 95 % interval:
    Newcombe's for 0/1 outcomes, else (or with `binary=False`) a bootstrap of the per-question
    differences."""
    if len(after) != len(before):
        raise ValueError(f"paired scores need the same questions: {len(after)} vs {len(before)}")
    if not after:
        return interval(None, 0, None, None)
    if binary is not False and is_binary(after) and is_binary(before):
        theta, lo, hi = newcombe_paired(after, before)
        return interval(theta, len(after), lo, hi)
    mean, lo, hi = bootstrap_ci([x - y for x, y in zip(after, before)], n=n, seed=seed)
    return interval(mean, len(after), lo, hi)


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
