"""ask: answer questions typed at a prompt over a folder of .txt files, showing each step.

qa-forge ask --docs data/documents --model models/merged
"""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.console import Console
from rich.prompt import Prompt

from qa_forge.chat import render
from qa_forge.core.cli import PARAMS
from qa_forge.core.io import UserError, load_section
from qa_forge.eval import agent
from qa_forge.eval.evaluate import EvaluateParams, make_engine
from qa_forge.llm.serving import serve_log_dir
from qa_forge.retrieval.index import Index
from qa_forge.retrieval.retriever import Retriever, RetrieverParams


def paragraphs(folder: Path) -> list[tuple[str, str]]:
    """(file name, paragraph) for every blank-line-separated paragraph of every .txt file."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise UserError(f"{folder}: no .txt files")
    return [(f.stem, p.strip()) for f in files for p in re.split(r"\n\s*\n", f.read_text(encoding="utf-8")) if p.strip()]


def show(console: Console, conv: agent.Conversation) -> None:
    for step in conv.steps:
        if "query" in step:
            parsed = render.parse_reply(step["reply"])
            if parsed and parsed.content:
                console.print(f"[green]{parsed.content}[/green]")
            console.print(
                f"[bold cyan]retrieve[/bold cyan]([cyan]{step['query']}[/cyan]) → [dim]{', '.join(t or '?' for t in step['retrieved'])}[/dim]"
            )
            for title, text in step["hits"]:
                console.print(f"  [dim]{title}: {text[:300]}{'…' if len(text) > 300 else ''}[/dim]")
    if conv.final:
        f = conv.final
        if f.summary:
            console.print(f"[magenta]Summary:[/magenta] {f.summary}")
        if f.thought:
            console.print(f"[yellow]Thought:[/yellow] {f.thought}")
        console.print(f"[bold green]Answer:[/bold green] {f.answer}")
    else:
        console.print(f"[red]no final answer ({conv.status})[/red]: {conv.steps[-1]['reply'] if conv.steps else ''}")


def logged_search(index: Index, retriever: Retriever, top_k: int, log: list):
    """The retrieve tool over `index`, appending each call's hits to `log` (shown after the answer)."""

    def search(query: str):
        hits = [(h.title, h.text) for h in index.query(retriever, [query], top_k)[0]]
        log.append(hits)
        return hits

    return search


def main(
    docs: Path = typer.Option(..., help="a folder of .txt files"),
    model: Path = typer.Option(Path("models/merged"), help="a Hugging Face model folder"),
    params: Path = PARAMS,
    question: list[str] = typer.Option(None, help="answer these and exit (else read questions at a prompt)"),
    like: str = typer.Option("hotpotqa", help="the eval set (evaluate.sets) whose top_k the retrieve tool uses"),
):
    """Ask questions over your own documents; every retrieve call and step is shown."""
    p = load_section(params, "evaluate", EvaluateParams).model_copy(update={"batch_size": 1})
    rp = load_section(params, "retrieve", RetrieverParams, keys=RetrieverParams.model_fields)
    if like not in p.sets:
        raise UserError(f"--like {like}: not an eval set in {params} (evaluate.sets: {', '.join(p.sets)})")
    top_k = p.sets[like].top_k
    console = Console()
    retriever = Retriever(rp)
    index = Index.build(paragraphs(docs), retriever)
    with make_engine(p, str(model), serve_log_dir(rp.cache_dir)) as engine:  # a server serve_command started runs until we quit
        console.print(f"[dim]{len(index)} paragraphs from {docs}; model {model}. Empty line to quit.[/dim]")
        for q in question or iter(lambda: Prompt.ask("[bold]question[/bold]", default="", show_default=False), ""):
            hits_log: list = []
            conv = agent.Conversation("ask", q, logged_search(index, retriever, top_k, hits_log))
            agent.run(engine, [conv], p.max_calls)
            for step, hits in zip([s for s in conv.steps if "query" in s], hits_log):
                step["hits"] = hits
            show(console, conv)
