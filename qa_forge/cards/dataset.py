"""The dataset card of the filtered data (data/filtered): the hub's metadata through
huggingface_hub's DatasetCardData (licence, source datasets, size), and a body with each source and
its licence, the share-alike terms CC BY-SA sources carry to this data, the generator LLM and its
licence, counts, and the filter's rejection reasons with their counts."""

from __future__ import annotations

from huggingface_hub import DatasetCard, DatasetCardData

from qa_forge.cards import licenses
from qa_forge.cards.markdown import count, table
from qa_forge.cards.run import Run

# what the generator's own records are (generate's `src` names; any other name is described generically)
GENERATED = {
    "gen_entities": "multi-hop questions comparing two entities on one attribute",
    "gen_attributes": "multi-hop questions about two attributes of one entity",
    "gen_documents": "questions and answers about the `.txt` documents in `{folder}`",
}
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))


def size_category(n: int) -> str:
    return next((label for limit, label in SIZES if n < limit), "n>10M")


def share_alike(run: Run) -> str | None:
    """The licence this data must be shared under because of its share-alike sources, or None."""
    return licenses.share_alike_license(s.info.license for s in run.in_data)


def license_ids(run: Run) -> str | list[str]:
    """The metadata licence: the share-alike licence when a source carries one, else every
    licence the data is under (its sources' and the generator's)."""
    sa = share_alike(run)
    if sa:
        return sa
    ids = {s.info.license for s in run.in_data}
    if any(v.get("of") for v in run.generated.values()):
        ids.add(run.generator.license)
    ids = sorted(ids)
    return ids[0] if len(ids) == 1 else ids


def card_data(run: Run) -> DatasetCardData:
    kept = run.filter.get("kept") or 0
    sources = [f"extended|{s.hub}" for s in run.in_data if s.hub]
    if any(v.get("of") for v in run.generated.values()):
        sources.append("original")
    return DatasetCardData(
        language=[run.cards.language],
        license=license_ids(run),
        pretty_name=f"{run.cards.model_name} training data",
        size_categories=[size_category(int(kept))],
        source_datasets=sources or None,
        task_categories=["question-answering", "text-generation"],
        tags=["qa-forge", "multi-hop", "retrieval", "synthetic"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "kept.jsonl"}, {"split": "rejected", "path": "rejected.jsonl"}],
            }
        ],
    )


def _intro(run: Run) -> str:
    f = run.filter
    return "\n".join(
        [
            f"# {run.cards.model_name} training data",
            "",
            (
                f"The records qa-forge fine-tunes on: `data/filtered/kept.jsonl` ({count(f.get('kept'))} records) and the "
                f"ones the filter rejected, each with its reason, `data/filtered/rejected.jsonl` ({count(f.get('rejected'))}). "
                "One JSON object a line in the qa-forge record schema (`qa_forge/core/records.py`): the question, its "
                "sub-questions each with a paragraph, thought and answer, the summary and final answer, and where each "
                "answer came from (`answer_origin`, `final_origin`: the source, our samples, a rule, or a model). "
                "The `cards` stage writes this card from the run's params and metrics; to publish the data, put it beside "
                "the two files."
            ),
        ]
    )


def _sources(run: Run) -> str:
    rows = []
    for s in run.sources:
        rows.append(
            [
                s.info.name,
                s.origin,
                s.license_text,
                f"[{'checked' if s.info.verified else 'stated'} here]({s.info.checked})",
                count(s.fetched.get("records")),
                count(s.in_data),
                count(s.kept),
            ]
        )
    lines = [
        "## Sources and their licences",
        "",
        table(["source", "from", "licence", "licence source", "records fetched", "in this data", "kept"], rows),
    ]
    notes = [f"- {s.info.name}: {s.info.note}." for s in run.sources if s.info.note]
    if any(s.local for s in run.sources):
        notes.append(
            "- A source read from a local file is listed with its dataset's licence, assumed to apply to the file "
            "(the repo's `data/samples/` files are small samples in each dataset's format)."
        )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _generator(run: Run) -> str:
    folder = run.params["generate"]["documents"]["folder"]
    rows = [
        [src, GENERATED.get(src, "records the generator wrote").format(folder=folder), count(v.get("of")), count(v.get("kept"))]
        for src, v in run.generated.items()
    ]
    lines = [
        "## The generator LLM and its terms",
        "",
        (
            f"Generator: {run.generator.how}. Its licence: {run.generator.license_text}; the terms for using what it writes "
            "are that licence's (or, for a hosted model, its provider's terms of use)."
        ),
        "",
        _answers(run),
        "",
        table(["records", "what", "in this data", "kept"], rows),
    ]
    if "gen_documents" in run.generated:
        lines += [
            "",
            f"The document questions are derived from the `.txt` files in `{folder}`: those files' own licence applies to them too.",
        ]
    return "\n".join(lines)


def _answers(run: Run) -> str:
    """Which fetched records' answers the generator wrote: those of sources with neither our samples'
    answers nor rule traces (composed from the dataset's own annotations, no model involved)."""
    ruled = [s.info.name for s in run.in_data if s.spec.get("answers_from") == "rule"]
    written = [s.info.name for s in run.in_data if s.spec.get("answers_from") not in ("samples", "rule")]
    by_rule = (
        f"The answers of the {', '.join(ruled)} records are traces composed by rule (`answers_from: rule`): fixed templates "
        "around the datasets' own supporting sentences and answers, no model involved. "
        if ruled
        else ""
    )
    if not written:
        return by_rule + (
            f"Every {'other ' if ruled else ''}fetched record's answers came from our samples (`answers_from: samples`); "
            "the generator wrote these records of its own:"
        )
    return by_rule + (
        f"It wrote the complete answers (thought, answer, summary) of the {', '.join(written)} records (their "
        "datasets hold short answers or none), and these records of its own:"
    )


def _share_alike(run: Run) -> str:
    sa_license = share_alike(run)
    sa = [s for s in run.in_data if licenses.is_share_alike(s.info.license)]
    others = [s for s in run.in_data if not licenses.is_share_alike(s.info.license)]
    lines = ["## Licence and share-alike terms", ""]
    if sa_license:
        lines.append(
            "**Share-alike.** "
            + ", ".join(f"{s.info.name} ({licenses.name(s.info.license)})" for s in sa)
            + f" {'is' if len(sa) == 1 else 'are'} licensed CC BY-SA: data derived from "
            + ("it" if len(sa) == 1 else "them")
            + f", this dataset included (their passages and questions, and the answers the generator wrote for them), "
            f"must be shared under {licenses.link(sa_license)} (a later version of the same licence also works), with "
            "attribution to each source, a link to the licence, and a note that the data was changed. You cannot add "
            "terms that restrict what the licence allows."
        )
        if others:
            lines += [
                "",
                "The other sources' licences apply to their records too: "
                + ", ".join(f"{s.info.name}: {licenses.link(s.info.license)}" for s in others)
                + " (attribution; both can be included in CC BY-SA data).",
            ]
    else:
        lines.append(
            "No source of this data carries share-alike terms: each record keeps its source's licence (above), "
            "and the generator's terms apply to what it wrote."
        )
    lic = license_ids(run)
    lines += ["", f"Metadata licence: `{lic if isinstance(lic, str) else ', '.join(lic)}`."]
    return "\n".join(lines)


def _counts(run: Run) -> str:
    rows = []
    for s in run.sources:
        f = s.fetched
        dropped = f.get("dropped") or {}
        drops = ", ".join(f"{k}: {v}" for k, v in dropped.items()) or "none"
        rows.append(
            [
                s.info.name,
                count(f.get("read")),
                drops,
                count(f.get("kept")),
                count(f.get("records")),
                count(f.get("answerable")),
                count(f.get("unanswerable")),
            ]
        )
    f = run.filter
    reasons = f.get("reasons") or {}
    by_src = f.get("kept_by_src") or {}
    return "\n".join(
        [
            "## Counts",
            "",
            ("fetch (`metrics/fetch.json`): items read from each source, dropped on purpose (by reason), kept, and sampled into records:"),
            "",
            table(["source", "read", "dropped", "kept", "records", "answerable", "unanswerable"], rows),
            "",
            (
                f"filter (`metrics/filter.json`): {count(f.get('records'))} records in, {count(f.get('kept'))} kept, "
                f"{count(f.get('rejected'))} rejected."
            ),
            "",
            "### Rejection reasons",
            "",
            table(["reason", "records"], [[k, count(v)] for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])])
            if reasons
            else "None: the filter rejected no record.",
            "",
            "### Kept by source",
            "",
            table(["records", "kept", "of"], [[k, count(v.get("kept")), count(v.get("of"))] for k, v in by_src.items()]),
        ]
    )


def _limitations(run: Run) -> str:
    items = []
    kept = run.filter.get("kept")
    if isinstance(kept, int) and kept < 1000:
        items.append(f"{kept} kept records: enough to exercise the pipeline, not to train a useful model.")
    items.append(
        "Answers the generator wrote were checked by rules (format, length, facts against the paragraph, near-duplicates), not by people."
    )
    unverified = [s.info.name for s in run.in_data if not s.info.verified]
    if unverified:
        items.append(f"Licence unverified for {', '.join(unverified)}: see the notes under the sources table.")
    if run.generator.license == licenses.UNKNOWN:
        items.append(
            "The generator's licence is not listed in `cards.model_licenses`: check the model's own card before sharing this data."
        )
    return "\n".join(["## Limitations", "", *[f"- {i}" for i in items]])


def body(run: Run) -> str:
    return "\n\n".join([_intro(run), _sources(run), _generator(run), _share_alike(run), _counts(run), _limitations(run)]) + "\n"


def dataset_card(run: Run) -> DatasetCard:
    data = card_data(run)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body(run)}")
