"""pack: records rendered into the training chat, labels only on assistant tokens, whole
conversations packed into rows (best-fit decreasing) -> data/packed/{train,valid}.jsonl,
metrics/pack.json, metrics/pack_lengths.csv."""

from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import check_outputs, load_section, read_records, write_json
from qa_forge.data.pack import PackParams, histogram, load_tokenizer, pack_records, write_histogram, write_outputs


def main(
    records: Path = typer.Argument(Path("data/filtered/kept.jsonl"), help="JSONL records (the filter stage's kept.jsonl)"),
    model: Path = typer.Option(Path("models/base"), help="the base model folder (its tokenizer and chat template)"),
    params: Path = PARAMS,
    out: Path = typer.Option(Path("data/packed")),
    metrics: Path = typer.Option(Path("metrics/pack.json")),
    plot: Path = typer.Option(Path("metrics/pack_lengths.csv"), help="conversation-length histogram (CSV) for dvc plots"),
):
    """Tokenise conversations (labels on assistant turns) and pack them into rows of ≤ max_seq_length."""
    p = load_section(params, "pack", PackParams)
    check_outputs(files=[metrics, plot], folders=[out])
    recs = read_records(records)
    tok, template_from = load_tokenizer(model, p.chat_template)
    rows, info, lengths = pack_records(recs, tok, p, template_from)
    write_outputs(out, rows, tok.chat_template)
    write_json(metrics, info)
    write_histogram(plot, histogram(lengths, p.max_seq_length))
    print(
        f"pack: {info['conversations']} conversations, {info['tokens']} tokens -> {info['rows_train']} train + {info['rows_valid']} valid rows "
        f"(≤{p.max_seq_length}, efficiency {info['packing_efficiency']:.1%}, labelled {info['labelled_fraction']:.1%}); overlong: {info['overlong']}"
    )


if __name__ == "__main__":
    run(main)
