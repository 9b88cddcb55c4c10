"""cards: the model card of models/merged and the dataset card of data/filtered, from the run's
params and metrics -> cards/model/README.md, cards/dataset/README.md (git-tracked)."""

from pathlib import Path

import typer

from qa_forge.cards.dataset import dataset_card
from qa_forge.cards.model import model_card
from qa_forge.cards.run import load
from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import atomic_path, check_outputs, load_yaml, read_json, read_text


def main(
    params: Path = PARAMS,
    fetch: Path = typer.Option(Path("metrics/fetch.json")),
    filter_: Path = typer.Option(Path("metrics/filter.json"), "--filter"),
    pack: Path = typer.Option(Path("metrics/pack.json")),
    summary: Path = typer.Option(Path("metrics/summary.json")),
    train_info: Path = typer.Option(Path("models/merged/train_info.json"), help="the released model's training record"),
    chat_template: Path = typer.Option(Path("models/merged/chat_template.jinja"), help="the released model's chat template"),
    base: Path = typer.Option(Path("models/base"), help="the base stage's folder: llm.model naming it means the base model (never read)"),
    model_card_path: Path = typer.Option(Path("cards/model/README.md"), "--model-card"),
    dataset_card_path: Path = typer.Option(Path("cards/dataset/README.md"), "--dataset-card"),
):
    """Write the model card and the dataset card."""
    check_outputs(files=[model_card_path, dataset_card_path])
    r = load(
        load_yaml(params),
        fetch=read_json(fetch),
        filtered=read_json(filter_),
        pack=read_json(pack),
        summary=read_json(summary),
        train_info=read_json(train_info),
        chat_template=read_text(chat_template),
        base_folder=base.as_posix(),
    )
    for card, path in ((model_card(r), model_card_path), (dataset_card(r), dataset_card_path)):
        with atomic_path(path) as tmp:
            card.save(tmp)
    used = ", ".join(f"{s.name} ({s.info.license})" for s in r.in_data)
    print(
        f"cards: {model_card_path} (base {r.base.hub_id}, licence {r.cards.license or r.base.license}), {dataset_card_path} (sources: {used})"
    )


if __name__ == "__main__":
    run(main)
