"""served-name: the name to serve a model folder under, so that evaluate and ask can tell from the
server's model list that it runs exactly this build (qa_forge.llm.identity.served_name).

    vllm serve models/merged --served-model-name "$(qa-forge served-name models/merged)"
"""

from __future__ import annotations

from pathlib import Path

import typer

from qa_forge.core.io import check_model_folder
from qa_forge.llm.identity import served_name


def main(folder: Path = typer.Argument(..., help="a Hugging Face model folder, e.g. models/merged")):
    """Print the name to serve FOLDER under: its content hash (weights, tokenizer, chat template, config)."""
    check_model_folder(folder, config=None)
    print(served_name(folder))
