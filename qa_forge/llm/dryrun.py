"""`--dry-run`: walk a stage's whole flow without calling the model, and print what it would cost.

Each request is costed by `LLM.estimate` (cached ones are free; output counted at max_tokens, an
upper bound); the reply is a synthetic one that fills the prompt's `Label: <...>` lines, so later
steps of a flow are planned too.
"""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

from qa_forge.llm.llm import LLM, Request, Response

_REPLY_LINE = re.compile(r"^([A-Z][\w -]*?):\s*<[^>]*>\s*$", re.MULTILINE)


def synthetic_reply(req: Request) -> str:
    prompt = req.messages[-1][1]
    labels = _REPLY_LINE.findall(prompt)
    return "\n".join(f"{label}: example {label.lower()} for a dry run" for label in labels)


class DryRunLLM:
    def __init__(self, llm: LLM):
        self.llm = llm
        self.params = llm.params
        self.stats = {"calls": 0, "cached": 0, "prompt_tokens": 0, "max_output_tokens": 0, "cost_usd": 0.0}
        self.rows: list[tuple[str, dict]] = []

    def complete(self, requests: list[Request], desc: str = "llm") -> list[Response]:
        est = self.llm.estimate(requests)
        self.rows.append((desc, est))
        self.stats["calls"] += est["to_call"]
        self.stats["cached"] += est["cached"]
        self.stats["prompt_tokens"] += est["prompt_tokens"]
        self.stats["max_output_tokens"] += est["max_output_tokens"]
        self.stats["cost_usd"] += est["cost_usd"]
        return [Response(text=synthetic_reply(r), prompt_tokens=0, completion_tokens=0, cached=False) for r in requests]

    def report(self) -> None:
        table = Table(title=f"dry run: {self.params.backend} {self.params.model} (no calls made)")
        for col in ("step", "requests", "cached", "to call", "prompt tok", "max output tok", "cost ≤ USD"):
            table.add_column(col, justify="right" if col != "step" else "left")
        for desc, e in self.rows:
            table.add_row(
                desc,
                str(e["requests"]),
                str(e["cached"]),
                str(e["to_call"]),
                str(e["prompt_tokens"]),
                str(e["max_output_tokens"]),
                f"{e['cost_usd']:.4f}",
            )
        s = self.stats
        table.add_row(
            "total", "", str(s["cached"]), str(s["calls"]), str(s["prompt_tokens"]), str(s["max_output_tokens"]), f"{s['cost_usd']:.4f}"
        )
        Console().print(table)
        if self.params.cost_cap_usd is not None and s["cost_usd"] > self.params.cost_cap_usd:
            Console().print(f"[yellow]the estimate passes the cost cap (${self.params.cost_cap_usd}): the run would stop there[/yellow]")
