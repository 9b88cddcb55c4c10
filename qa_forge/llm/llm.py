"""The LLM layer shared by generate, regenerate and the judge: one `LLM` over three backends.

- `openai`: any OpenAI-compatible server (OpenAI, `vllm serve`): requests run in parallel threads
  (`concurrency`), retried with jittered exponential backoff on 429, 5xx, timeouts and lost
  connections; other 4xx stop the run.
- `transformers`: a local Hugging Face folder (or hub id), batched `generate()` sorted by length.
- `vllm`: the offline vLLM engine (GPU hosts; `pip install -e .[vllm]`).

Every response is written to the sqlite cache (`qa_forge.llm.cache`) the moment it arrives, so a
killed run, re-run, pays only for the missing ones. `cost_cap_usd` stops a run before a request
could take the spend past the cap (upper bound: prompt ~ len/4 tokens, output = max_tokens).
The API key is read from the env var named by `api_key_env`; it is never logged or stored.
"""

from __future__ import annotations

import sys
import threading
from typing import Self

from qa_forge.core.io import UserError
from qa_forge.llm.backends import BACKENDS
from qa_forge.llm.cache import ResponseCache, cache_key
from qa_forge.llm.identity import model_identity
from qa_forge.llm.params import LLMParams
from qa_forge.llm.request import SAMPLING, CostCapReached, Request, Response, _Item, estimate_prompt_tokens
from qa_forge.llm.run import _Run


class LLM:
    """Cached, cost-capped chat completions: `complete()` returns responses in request order."""

    def __init__(self, params: LLMParams):
        self.params = params
        self.stats = {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "retries": 0}
        self._cache = ResponseCache(params.cache_dir)
        self._backend = BACKENDS[params.backend](params)
        self._identity: str | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """What the cache keys on: API endpoint + model name, or a hash of local weights."""
        if self._identity is None:
            self._identity = model_identity(self.params, self._cache.digests)
        return self._identity

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
        pe = estimate_prompt_tokens(r.messages)
        return _Item(cache_key(self.identity, fields), r, fields, max_tokens, pe, self.cost(pe, max_tokens))

    def _split(self, requests: list[Request]) -> tuple[list[_Item], dict, list[_Item]]:
        """(all items, cache hits by key, distinct misses in first-seen order)."""
        items = [self._item(r) for r in requests]
        hits = self._cache.get_many(it.key for it in items)
        todo = list({it.key: it for it in items if it.key not in hits}.values())
        return items, hits, todo

    def estimate(self, requests: list[Request]) -> dict:
        """Dry run: what complete() would call and its cost upper bound (max_tokens as output)."""
        items, hits, todo = self._split(requests)
        pt = sum(it.prompt_estimate for it in todo)
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
        results = {k: Response(t, pt, ct, cached=True) for k, (t, pt, ct) in hits.items()}
        if todo:
            run = _Run(self, total=len(items), cached=n_hit, desc=desc)
            with run.progress:
                self._backend.run(todo, run)
            if not run.console.is_terminal:
                print(run.summary(), file=sys.stderr)
            if run.error is not None:
                raise run.error
            if run.cap_hit:
                missing = len(todo) - len(run.results)
                raise CostCapReached(
                    f"cost cap ${self.params.cost_cap_usd:.4f} reached: spent ${self.stats['cost_usd']:.4f} on "
                    f"{self.stats['calls']} calls; {missing} of {len(todo)} requests not sent (answered ones are cached: "
                    f"raise cost_cap_usd and re-run to continue)"
                )
            results.update(run.results)
        return [results[it.key] for it in items]

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
