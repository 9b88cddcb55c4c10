"""The LLM layer shared by generate, regenerate and the judge: one `LLM` over three backends.

- `openai`: any OpenAI-compatible server (OpenAI, `vllm serve`): requests run in parallel threads
  (`concurrency`), retried with jittered exponential backoff on 429, 5xx, timeouts, lost
  connections and bodies that are not completions; other 4xx stop the run; an item whose retries
  are spent ends failed (`gave_up`, not cached) and the run goes on.
- `transformers`: a local Hugging Face folder (or hub id), batched `generate()` sorted by length.
- `vllm`: the offline vLLM engine (GPU hosts, with a vLLM that fits our torch and transformers pins).

With `serve_command`, the openai backend's server is started by the first request that misses the
cache and stopped by `close()` (`qa_forge.llm.serving`): a fully cached run starts none.

Every response is written to the sqlite cache (`qa_forge.llm.cache`) the moment it arrives, so a
killed run, re-run, pays only for the missing ones; an empty or cut-off completion is cached as a
failure (`Response.failure`, text ""), never used as an answer, sent again only with
`retry_failed`. Requests are journaled before they are sent: what a killed run left in flight,
or what timed out, is counted as `maybe_billed`. `cost_cap_usd` stops a run before a request
could take the spend past the cap: each attempt reserves its worst case (the prompt counted by
the model's tokenizer where there is one, else one token per UTF-8 byte; output = max_tokens),
and an attempt that may have been billed without an answer is charged that worst case. The API
key is read from the env var named by `api_key_env`; it is never logged or stored.
"""

from __future__ import annotations

import sys
import threading
from contextlib import ExitStack
from typing import Self

from qa_forge.core.io import UserError
from qa_forge.llm.backends import BACKENDS
from qa_forge.llm.cache import ResponseCache, cache_key
from qa_forge.llm.identity import legacy_identity, model_identity
from qa_forge.llm.params import LLMParams
from qa_forge.llm.request import SAMPLING, CostCapReached, Request, Response, _Item, prompt_token_bound
from qa_forge.llm.run import _Run
from qa_forge.llm.serving import serve_log_dir, served


class LLM:
    """Cached, cost-capped chat completions: `complete()` returns responses in request order."""

    def __init__(self, params: LLMParams):
        self.params = params
        self.stats = {
            "calls": 0,
            "cached": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "retries": 0,
            "failed": {},  # reason -> responses not usable as answers (cached failures included)
            "maybe_billed": 0,  # attempts a server may have billed without an answer reaching us
            "maybe_billed_earlier": 0,  # requests a stopped earlier run left in flight, sent again now
        }
        self._cache = ResponseCache(params.cache_dir)
        self._backend = BACKENDS[params.backend](params)
        self._identity: str | None = None
        self._lock = threading.Lock()
        self._server = ExitStack()  # the server serve_command started, stopped by close()
        self._serving = False

    @property
    def identity(self) -> str:
        """What the cache keys on (qa_forge.llm.identity); rows stored under the older, coarser
        identity of the same weights or endpoint are re-keyed to it once."""
        if self._identity is None:
            p, digests = self.params, self._cache.digests
            metadata = self._backend.metadata() if p.backend == "openai" and p.model_version is None else None
            identity = model_identity(p, digests, metadata)
            legacy = legacy_identity(p, digests)
            if legacy is not None and legacy != identity:
                self._cache.migrate(legacy, identity)
            self._identity = identity
        return self._identity

    def count_failure(self, reason: str) -> None:
        self.stats["failed"][reason] = self.stats["failed"].get(reason, 0) + 1

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        p = self.params
        return prompt_tokens * p.price_input_per_mtok / 1e6 + completion_tokens * p.price_output_per_mtok / 1e6

    def _item(self, r: Request) -> _Item:
        if not isinstance(r, Request):
            raise UserError(f"LLM.complete expects Request objects, got {type(r).__name__}")
        max_tokens = r.max_tokens if r.max_tokens is not None else self.params.max_new_tokens
        fields = {
            "messages": [list(m) for m in r.messages],
            "temperature": float(r.temperature),
            "max_tokens": max_tokens,
            "sample": r.sample,
            "sampling": SAMPLING,
        }
        bound = prompt_token_bound(r.messages)
        return _Item(cache_key(self.identity, fields), r, fields, max_tokens, bound, self.cost(bound, max_tokens))

    def _split(self, requests: list[Request]) -> tuple[list[_Item], dict, list[_Item]]:
        """(all items, cache hits by key, distinct misses in first-seen order). With `retry_failed`
        a cached failure is a miss."""
        items = [self._item(r) for r in requests]
        hits = self._cache.get_many(it.key for it in items)
        if self.params.retry_failed:
            hits = {k: row for k, row in hits.items() if row[3] is None}
        todo = list({it.key: it for it in items if it.key not in hits}.values())
        return items, hits, todo

    def estimate(self, requests: list[Request]) -> dict:
        """Dry run: what complete() would call and its worst-case cost (the prompt bound in,
        max_tokens out)."""
        items, hits, todo = self._split(requests)
        pt = sum(it.prompt_bound for it in todo)
        mo = sum(it.max_tokens for it in todo)
        return {
            "requests": len(items),
            "cached": sum(it.key in hits for it in items),
            "to_call": len(todo),
            "prompt_tokens": pt,
            "max_output_tokens": mo,
            "cost_usd": self.cost(pt, mo),
        }

    def complete(self, requests: list[Request], desc: str = "llm") -> list[Response]:
        """Cache hits first, then the misses through the backend; responses in request order."""
        items, hits, todo = self._split(requests)
        n_hit = sum(it.key in hits for it in items)
        self.stats["cached"] += n_hit
        results = {k: Response("" if failure else t, pt, ct, cached=True, failure=failure) for k, (t, pt, ct, failure) in hits.items()}
        for it in items:
            if it.key in hits and hits[it.key][3]:
                self.count_failure(hits[it.key][3])
        self._report_in_flight(todo)
        if todo:
            self._start_server()
            run = _Run(self, total=len(items), cached=n_hit, desc=desc)
            with run.progress:
                self._backend.run(todo, run)
            if not run.console.is_terminal:
                print(run.summary(), file=sys.stderr)
            if run.error is not None:
                raise run.error
            if run.last_give_up is not None:
                print(
                    f"{desc}: {self.stats['failed'].get('gave_up', 0)} requests failed after all retries; last: {run.last_give_up}",
                    file=sys.stderr,
                )
            if run.cap_hit:
                missing = len(todo) - len(run.results)
                raise CostCapReached(
                    f"cost cap ${self.params.cost_cap_usd:.4f} reached: spent ${self.stats['cost_usd']:.4f} on "
                    f"{self.stats['calls']} calls; {missing} of {len(todo)} requests not sent (answered ones are cached: "
                    f"raise cost_cap_usd and re-run to continue)"
                )
            results.update(run.results)
        return [results[it.key] for it in items]

    def _report_in_flight(self, todo: list[_Item]) -> None:
        """Requests an earlier run sent and never saw answered (killed, or gave up after a timeout):
        the server may have billed them; they are sent again now."""
        earlier = self._cache.pending(it.key for it in todo)
        if earlier:
            self.stats["maybe_billed_earlier"] += len(earlier)
            print(
                f"llm: {len(earlier)} requests were in flight when an earlier run stopped: the server may have billed them once already",
                file=sys.stderr,
            )

    def _start_server(self) -> None:
        """Start the server `serve_command` names, once: only a request that missed the cache needs
        it (a re-run does not pay for loading the model), and it stays up for the stage's later calls."""
        p = self.params
        if p.serve_command is None or self._serving:
            return
        log_dir = serve_log_dir(p.cache_dir)
        self._server.enter_context(served(p.serve_command, p.model, p.model, p.base_url, p.api_key_env, p.serve_timeout_s, log_dir))
        self._serving = True

    def close(self) -> None:
        """Stop the server this LLM started, if any, and close the cache."""
        try:
            self._server.close()
        finally:
            self._serving = False
            self._cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
