"""Fine-tune the retriever's SentenceTransformer on (query, positive, negatives...) rows with
MultipleNegativesRankingLoss through SentenceTransformerTrainer, and save the model folder.

The texts are prefixed exactly as the Retriever does at search time (query_prefix + query;
passage_prefix + "title: text"), so the tuned model sees at training what it sees at retrieval; the
saved folder then serves as `retrieve.model` (a local folder: its content digest keys the cache).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qa_forge.retrieval.retriever import RetrieverParams, hub_revision, model_path, passage_text, resolve_device
from qa_forge.retrieval.tuning.mining import Negative
from qa_forge.retrieval.tuning.pairs import Pair, positives_by_query
from qa_forge.retrieval.tuning.params import TuneParams
from qa_forge.retrieval.tuning.sampler import Keys, row_keys, sampler_factory


@dataclass(frozen=True)
class Row:
    query: str
    positive: tuple[str, str]  # (title, text)
    negatives: tuple[tuple[str, str], ...]
    query_positives: tuple[str, ...]  # every positive paragraph text of the query (the sampler's keys)


@dataclass(frozen=True)
class TrainReport:
    rows: int
    steps: int
    losses: list[float]  # the training loss at each logged step


def interleave(negatives: Sequence[Negative], start: int = 0) -> list[Negative]:
    """BM25 and dense negatives alternated (best of each first), so a row with fewer columns than
    mined negatives still gets both kinds; `start` rotates which source comes first (rows take
    turns, so with one negative a row, half the rows get BM25's and half the dense one's)."""
    by_source: dict[str, list[Negative]] = {}
    for n in negatives:
        by_source.setdefault(n.source, []).append(n)
    groups = list(by_source.values())
    if groups:
        start %= len(groups)
        groups = groups[start:] + groups[:start]
    mixed = itertools.zip_longest(*groups)
    return [n for group in mixed for n in group if n is not None]


def training_rows(pairs: Sequence[Pair], negatives: Mapping[str, Sequence[Negative]], k: int) -> tuple[list[Row], int]:
    """One row per pair with exactly k negatives (the dataset's columns must be the same for every
    row): a query's mined negatives, interleaved (the i-th pair's starting with the (i mod sources)-th
    source), cycled when it has fewer than k. A pair whose query has none is dropped when k > 0 (counted)."""
    positives = {q: tuple(p.paragraph for p in ps) for q, ps in positives_by_query(pairs).items()}
    rows, dropped = [], 0
    for i, p in enumerate(pairs):
        mined = [(n.title, n.text) for n in interleave(negatives.get(p.query, ()), start=i)]
        if k and not mined:
            dropped += 1
            continue
        negs = tuple(itertools.islice(itertools.cycle(mined), k)) if k else ()
        rows.append(Row(p.query, (p.title, p.paragraph), negs, positives[p.query]))
    return rows, dropped


def row_texts(row: Row, retriever: RetrieverParams) -> list[str]:
    """A row's texts as the Retriever embeds them: encode_queries and Index.build's encode_passages."""
    passages = [row.positive, *row.negatives]
    return [retriever.query_prefix + row.query, *(retriever.passage_prefix + passage_text(t, x) for t, x in passages)]


def sampler_keys(rows: Sequence[Row]) -> list[Keys]:
    return [row_keys(r.query, [r.positive[1], *(x for _, x in r.negatives)], r.query_positives) for r in rows]


def rows_dataset(rows: Sequence[Row], retriever: RetrieverParams):
    """A datasets.Dataset with columns anchor, positive, negative_1..k: MNRL reads the first column as
    the query, the second as its positive, the rest as its hard negatives."""
    from datasets import Dataset

    k = len(rows[0].negatives)
    if any(len(r.negatives) != k for r in rows):
        raise ValueError("every row needs the same number of negatives")
    names = ["anchor", "positive", *(f"negative_{i}" for i in range(1, k + 1))]
    texts = [row_texts(r, retriever) for r in rows]
    return Dataset.from_dict({name: [t[j] for t in texts] for j, name in enumerate(names)})


def load_for_training(retriever: RetrieverParams):
    """A fresh SentenceTransformer: never the Retriever's process-wide cached one, which training
    would change under every other user of it in the process."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        model_path(retriever.model), revision=hub_revision(retriever.model, retriever.revision), device=resolve_device(retriever.device)
    )


def train_retriever(
    rows: Sequence[Row],
    retriever: RetrieverParams,
    params: TuneParams,
    out_dir: str | Path,
    teacher_scores: Sequence[Sequence[float]] | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainReport:
    """Fine-tune `retriever`'s model on `rows` and save it to out_dir (a SentenceTransformer folder).

    teacher_scores: the distillation hook (LLM-Embedder's teacher: the base LM's log-probability of
    the hop's answer given query and passage), one score per row for [positive, *negatives]. Not
    implemented: it would add a label column and a KL term (sentence-transformers' DistillKLDivLoss
    over the same texts) to the MNRL loss, which needs a combined loss module.

    progress(step, total steps, loss) is called at each logged step, in place of the trainer's own
    printout (a dict a line).
    """
    if teacher_scores is not None:
        raise NotImplementedError("retriever distillation from teacher scores is not implemented (MNRL only)")
    if not rows:
        raise ValueError("no training rows")
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    set_seed(params.seed)  # the model's dropout and anything seeded before the trainer's own seeding
    model = load_for_training(retriever)
    own_length = model.max_seq_length
    if params.max_seq_length:
        model.max_seq_length = min(params.max_seq_length, own_length)
    dataset = rows_dataset(rows, retriever)
    with tempfile.TemporaryDirectory(prefix="retriever-train-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,  # nothing is saved there (save_strategy "no"): the model is saved below
            num_train_epochs=params.epochs,
            max_steps=params.max_steps or -1,
            per_device_train_batch_size=params.batch_size,
            learning_rate=params.learning_rate,
            warmup_steps=params.warmup_ratio,  # a float < 1 is a ratio of the total steps
            seed=params.seed,
            data_seed=params.seed,
            batch_sampler=sampler_factory(sampler_keys(rows)),
            dataloader_drop_last=False,
            use_cpu=resolve_device(retriever.device) == "cpu",
            save_strategy="no",
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
        )
        loss = MultipleNegativesRankingLoss(model, scale=params.scale)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        if progress is not None:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(_progress_callback(progress))
        trainer.train()
        losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
        steps = trainer.state.global_step
    model.max_seq_length = own_length  # retrieval reads the whole text the untuned model would
    model.save(str(out_dir))
    return TrainReport(rows=len(rows), steps=steps, losses=losses)


def _progress_callback(progress: Callable[[int, int, float], None]):
    from transformers.trainer_callback import TrainerCallback

    class StepProgress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                progress(state.global_step, state.max_steps, float(logs["loss"]))

    return StepProgress()
