"""One `LLM.complete()` call in flight: the cost budget, cache writes as responses arrive, stats
and the progress bar (rich on a terminal, a summary line otherwise)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from qa_forge.llm.request import GAVE_UP, Response, _Item, failure_of

if TYPE_CHECKING:
    from qa_forge.llm.llm import LLM


def _fmt_tok(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "-/s", style="progress.data.speed")


class _Run:
    """State shared by the backend's threads during one complete() call."""

    def __init__(self, llm: LLM, total: int, cached: int, desc: str):
        self.llm, self.desc = llm, desc
        self.results: dict[str, Response] = {}
        self.reserved = 0.0  # upper-bound cost of requests in flight
        self.cap_hit = False
        self.error: BaseException | None = None
        self.interrupted = False
        self.last_give_up: str | None = None
        self.tok_in = self.tok_out = 0
        self.cost = 0.0
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not self.console.is_terminal,
        )
        self.task = self.progress.add_task(desc, total=total, completed=cached, info=self.info())

    @property
    def stopped(self) -> bool:
        """Send nothing new (cap reached, a fatal error, or Ctrl-C)."""
        return self.cap_hit or self.aborted

    @property
    def aborted(self) -> bool:
        """Stop retrying too: requests still in flight give up (the cap lets them finish)."""
        return self.error is not None or self.interrupted

    def info(self) -> str:
        return f"{_fmt_tok(self.tok_in)} tok in · {_fmt_tok(self.tok_out)} out · ${self.cost:.4f}"

    def admit(self, it: _Item) -> bool:
        """Reserve `it`'s upper-bound cost; False (and stop) if that could pass the cap."""
        cap = self.llm.params.cost_cap_usd
        with self.llm._lock:
            if self.stopped:
                return False
            if cap is not None and self.llm.stats["cost_usd"] + self.reserved + it.upper_usd > cap + 1e-12:
                self.cap_hit = True
                return False
            self.reserved += it.upper_usd
            return True

    def admit_prefix(self, items: list[_Item]) -> list[_Item]:
        out = []
        for it in items:
            if not self.admit(it):
                break
            out.append(it)
        return out

    def release(self, it: _Item) -> None:
        with self.llm._lock:
            self.reserved -= it.upper_usd

    def bound_prompt(self, it: _Item, tokens: int) -> None:
        """The backend counted the prompt with the model's tokenizer: a tighter worst case."""
        it.prompt_bound = tokens
        it.upper_usd = self.llm.cost(tokens, it.max_tokens)

    def _spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        cost = self.llm.cost(prompt_tokens, completion_tokens)
        s = self.llm.stats
        s["prompt_tokens"] += prompt_tokens
        s["completion_tokens"] += completion_tokens
        s["cost_usd"] += cost
        self.tok_in += prompt_tokens
        self.tok_out += completion_tokens
        self.cost += cost

    def charge_worst_case(self, it: _Item) -> None:
        """An attempt that may have been billed without an answer (timeout, lost connection, bad
        body): its reservation is spent at the worst case, so the cap holds whatever was billed."""
        with self.llm._lock:
            self.reserved -= it.upper_usd
            self.llm.stats["maybe_billed"] += 1
            self._spend(it.prompt_bound, it.max_tokens)

    def done(self, it: _Item, text: str, prompt_tokens: int, completion_tokens: int, finish_reason: str | None) -> None:
        """A response arrived: cache it first (an empty or cut-off one as a failure), then count it."""
        llm = self.llm
        failure = failure_of(text, finish_reason)
        llm._cache.put(it.key, llm.identity, it.fields, text, prompt_tokens, completion_tokens, failure)
        with llm._lock:
            self.reserved -= it.upper_usd
            self.results[it.key] = Response("" if failure else text, prompt_tokens, completion_tokens, cached=False, failure=failure)
            llm.stats["calls"] += 1
            if failure:
                llm.count_failure(failure)
            self._spend(prompt_tokens, completion_tokens)
            info = self.info()
        self.progress.update(self.task, advance=1, info=info)

    def gave_up(self, it: _Item, message: str) -> None:
        """Retries spent: the item ends failed for this run (not cached: the next run tries again)."""
        with self.llm._lock:
            self.results[it.key] = Response("", 0, 0, cached=False, failure=GAVE_UP)
            self.llm.count_failure(GAVE_UP)
            self.last_give_up = message
        self.progress.update(self.task, advance=1)

    def retried(self) -> None:
        with self.llm._lock:
            self.llm.stats["retries"] += 1

    def fail(self, e: BaseException) -> None:
        with self.llm._lock:
            if self.error is None:
                self.error = e

    def summary(self) -> str:
        t = self.progress.tasks[0]
        return f"{self.desc}: {int(t.completed)}/{int(t.total or 0)} · {self.info()}"
