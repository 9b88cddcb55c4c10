"""The LLM layer shared by generate, regenerate and the judge: one `LLM` over three backends.

- `openai`: any OpenAI-compatible server (OpenAI, `vllm serve`): requests run in parallel threads
  (`concurrency`), retried with jittered exponential backoff on 429, 5xx, timeouts and lost
  connections; other 4xx stop the run.
- `transformers`: a local Hugging Face folder (or hub id), batched `generate()` sorted by length.
- `vllm`: the offline vLLM engine (GPU hosts; `pip install -e .[vllm]`).

Every response is written to the sqlite cache (`stages.llm_cache`) the moment it arrives, so a
killed run, re-run, pays only for the missing ones. `cost_cap_usd` stops a run before a request
could take the spend past the cap (upper bound: prompt ~ len/4 tokens, output = max_tokens).
The API key is read from the env var named by `api_key_env`; it is never logged or stored.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from stages.io import StageError
from stages.llm_cache import ResponseCache, cache_key

BACKOFF_BASE = 0.5  # seconds: retry n waits ~BACKOFF_BASE * 2**n (jittered); tests shrink it
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 30.0  # a server's Retry-After is honoured up to this many seconds
CHARS_PER_TOKEN = 4  # prompt-size estimate for the cost cap and estimate()
MESSAGE_OVERHEAD = 4  # tokens per chat message (role, separators), plus 3 to prime the reply
SAMPLING = {"top_p": 1.0}  # fixed sampling settings every backend uses; part of the cache key
WEIGHT_GLOBS = ("*.safetensors", "*.bin")
NOT_WEIGHTS = {"training_args.bin"}


class LLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "vllm", "transformers"] = "transformers"
    model: str = "models/base"  # hub/API model name, or a local HF folder for transformers/vllm
    base_url: str | None = None  # openai backend; e.g. http://127.0.0.1:8000/v1 for `vllm serve`
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the env var holding the key; unset -> "EMPTY"
    concurrency: PositiveInt = 8  # openai: max requests in flight
    max_retries: NonNegativeInt = 8
    timeout_s: PositiveFloat = 60.0
    batch_size: PositiveInt = 8  # transformers: prompts per generate(); vllm: prompts per chat()
    max_new_tokens: PositiveInt = 512
    price_input_per_mtok: NonNegativeFloat = 0.0  # USD per million prompt tokens
    price_output_per_mtok: NonNegativeFloat = 0.0
    cost_cap_usd: NonNegativeFloat | None = None
    cache_dir: str = ".cache/llm"  # outside DVC outputs


@dataclass(frozen=True)
class Request:
    messages: tuple  # ((role, content), ...)
    temperature: float
    max_tokens: int | None = None  # None -> params.max_new_tokens
    sample: int = 0  # sample index: the same prompt sampled k times gets k cache entries

    @classmethod
    def chat(cls, messages: list[dict], temperature: float, max_tokens: int | None = None, sample: int = 0) -> Request:
        try:
            pairs = tuple((str(m["role"]), str(m["content"])) for m in messages)
        except (KeyError, TypeError):
            raise StageError("a chat message needs 'role' and 'content'") from None
        return cls(pairs, float(temperature), max_tokens, sample)

    def as_dicts(self) -> list[dict]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class Response:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool


class CostCapReached(StageError):
    """The next request could take the spend past `cost_cap_usd`; what was answered is cached."""


@dataclass
class _Item:
    """A request resolved against the params: its cache key, output limit and cost upper bound."""

    key: str
    request: Request
    fields: dict  # what the key hashes (minus identity); stored with the row
    max_tokens: int
    prompt_estimate: int
    upper_usd: float

    @property
    def seed(self) -> int:
        return int(self.key[:8], 16)


def estimate_prompt_tokens(messages: tuple) -> int:
    return sum(math.ceil(len(content) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD for _, content in messages) + 3


def backoff(attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    d = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return d / 2 + random.uniform(0, d / 2)


# --- model identity -------------------------------------------------------------------------

_digests: dict[str, str] = {}  # memo "path|mtime_ns|size|inode" -> sha256 of the file, this process


def _file_digest(path: Path, cache: ResponseCache | None = None) -> str:
    """sha256 of a file in 1 MiB chunks; memoised per path+mtime+size (+inode), also in the cache db."""
    st = path.stat()
    memo = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{st.st_ino}"
    if memo not in _digests:
        digest = cache.get_digest(memo) if cache is not None else None
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            digest = h.hexdigest()
            if cache is not None:
                cache.put_digest(memo, digest)
        _digests[memo] = digest
    return _digests[memo]


def weights_digest(folder: Path, cache: ResponseCache | None = None) -> str:
    """sha256 over a folder's weight files (name + content digest, sorted by name)."""
    files = sorted({p for g in WEIGHT_GLOBS for p in folder.glob(g) if p.is_file() and p.name not in NOT_WEIGHTS})
    if not files:
        raise StageError(f"param 'model': {folder} has no weight files ({', '.join(WEIGHT_GLOBS)})")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{_file_digest(f, cache)}\n".encode())
    return h.hexdigest()


def model_identity(p: LLMParams, cache: ResponseCache | None = None) -> str:
    if p.backend == "openai":
        return f"openai:{p.base_url or 'api.openai.com'}:{p.model}"
    if Path(p.model).is_dir():
        return f"local:{weights_digest(Path(p.model), cache)}"
    return f"hub:{p.model}"


# --- one complete() call: budget, cache writes, stats, progress --------------------------------


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
        self.tok_in = self.tok_out = 0
        self.cost = 0.0
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, disable=not self.console.is_terminal,
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

    def done(self, it: _Item, text: str, prompt_tokens: int, completion_tokens: int) -> None:
        """A response arrived: cache it first, then count it."""
        llm = self.llm
        llm._cache.put(it.key, llm.identity, it.fields, text, prompt_tokens, completion_tokens)
        cost = llm.cost(prompt_tokens, completion_tokens)
        with llm._lock:
            self.reserved -= it.upper_usd
            self.results[it.key] = Response(text, prompt_tokens, completion_tokens, cached=False)
            s = llm.stats
            s["calls"] += 1
            s["prompt_tokens"] += prompt_tokens
            s["completion_tokens"] += completion_tokens
            s["cost_usd"] += cost
            self.tok_in += prompt_tokens
            self.tok_out += completion_tokens
            self.cost += cost
            info = self.info()
        self.progress.update(self.task, advance=1, info=info)

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


# --- backends ---------------------------------------------------------------------------------


class _OpenAIBackend:
    def __init__(self, p: LLMParams):
        self.p = p
        self._client = None

    def client(self):
        if self._client is None:
            import openai

            key = os.environ.get(self.p.api_key_env) if self.p.api_key_env else None
            base_url = self.p.base_url or "https://api.openai.com/v1"  # explicit: OPENAI_BASE_URL must not change the identity
            self._client = openai.OpenAI(base_url=base_url, api_key=key or "EMPTY", max_retries=0, timeout=self.p.timeout_s)
        return self._client

    def run(self, items: list[_Item], run: _Run) -> None:
        client = self.client()
        pool = ThreadPoolExecutor(max_workers=min(self.p.concurrency, len(items)), thread_name_prefix="llm")
        try:
            for f in [pool.submit(self._one, client, it, run) for it in items]:
                f.result()
        except BaseException:  # Ctrl-C: requests in flight finish and are cached; the queue is dropped
            run.interrupted = True
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, client, it: _Item, run: _Run) -> None:
        if not run.admit(it):
            return
        try:
            text, pt, ct = self._call(client, it, run)
        except Exception as e:  # noqa: BLE001 - kept for complete() to raise in the caller's thread
            run.release(it)
            run.fail(e)
            return
        run.done(it, text, pt, ct)

    def _call(self, client, it: _Item, run: _Run) -> tuple[str, int, int]:
        import openai

        where = f"model '{self.p.model}' at {self.p.base_url or 'api.openai.com'}"
        for attempt in range(self.p.max_retries + 1):
            try:
                r = client.chat.completions.create(
                    model=self.p.model, messages=it.request.as_dicts(), temperature=it.request.temperature,
                    max_tokens=it.max_tokens, top_p=SAMPLING["top_p"], seed=it.seed,
                )
                break
            except openai.APIStatusError as e:
                if not (e.status_code >= 500 or e.status_code in (408, 409, 429)):
                    hint = f" (API key from env var {self.p.api_key_env})" if e.status_code in (401, 403) else ""
                    raise StageError(f"{where}: HTTP {e.status_code}{hint}: {str(e.message)[:300]}") from None
                err, wait = e, _retry_after(e.response)
            except openai.APIConnectionError as e:  # includes APITimeoutError
                err, wait = e, None
            if attempt == self.p.max_retries or run.aborted:
                raise StageError(f"{where}: gave up after {attempt} retries: {type(err).__name__}: {str(err)[:300]}")
            run.retried()
            time.sleep(wait if wait is not None else backoff(attempt))
        choice = r.choices[0] if r.choices else None
        text = (choice.message.content if choice else None) or ""
        if r.usage is None:  # some servers omit usage: fall back to estimates
            return text, it.prompt_estimate, math.ceil(len(text) / CHARS_PER_TOKEN)
        return text, r.usage.prompt_tokens, r.usage.completion_tokens


def _retry_after(response) -> float | None:
    """Seconds from Retry-After(-ms), capped; None when absent or an HTTP date."""
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(max(float(headers[name]) * scale, 0.0), RETRY_AFTER_CAP)
        except (KeyError, ValueError, TypeError):
            continue
    return None


def _batches(items: list[_Item], size: int, length: Callable[[_Item], int]) -> list[list[_Item]]:
    """Groups of equal (temperature, max_tokens), each sorted by prompt length, cut into `size`."""
    groups: dict[tuple, list[_Item]] = {}
    for it in items:
        groups.setdefault((it.request.temperature, it.max_tokens), []).append(it)
    out = []
    for g in sorted(groups):
        ordered = sorted(groups[g], key=lambda it: (length(it), it.key))
        out += [ordered[i : i + size] for i in range(0, len(ordered), size)]
    return out


class _TransformersBackend:
    def __init__(self, p: LLMParams):
        self.p = p
        self.model = self.tok = None

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(self.p.model, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(self.p.model, dtype="auto")
        except (OSError, ValueError) as e:
            raise StageError(f"param 'model': cannot load '{self.p.model}' with transformers: {e}") from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        eos = model.generation_config.eos_token_id
        self.stop_ids = {*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id} - {None}
        self.model, self.tok = model, tok

    def prompt(self, it: _Item) -> str:
        try:
            return self.tok.apply_chat_template(it.request.as_dicts(), tokenize=False, add_generation_prompt=True)
        except ValueError as e:  # no chat template
            raise StageError(f"param 'model': '{self.p.model}' cannot render a chat: {e}") from None

    def run(self, items: list[_Item], run: _Run) -> None:
        self.load()
        texts = {it.key: self.prompt(it) for it in items}
        lengths = {k: len(self.tok(t, add_special_tokens=False).input_ids) for k, t in texts.items()}
        for batch in _batches(items, self.p.batch_size, lambda it: lengths[it.key]):
            batch = run.admit_prefix(batch)
            if not batch:
                return
            for it, (text, pt, ct) in zip(batch, self.generate([texts[it.key] for it in batch], batch)):
                run.done(it, text, pt, ct)
            if run.stopped:
                return

    def generate(self, prompts: list[str], batch: list[_Item]) -> list[tuple[str, int, int]]:
        import torch

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        temp = batch[0].request.temperature
        if temp > 0:
            kw = {"do_sample": True, "temperature": temp, "top_p": SAMPLING["top_p"], "top_k": 0}
        else:
            kw = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        # the seed comes from the batch's cache keys: the same requests sample the same texts
        torch.manual_seed(int(hashlib.sha256("".join(it.key for it in batch).encode()).hexdigest()[:8], 16))
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=batch[0].max_tokens, pad_token_id=self.tok.pad_token_id, **kw)
        gen = out[:, enc["input_ids"].shape[1] :]
        texts = self.tok.batch_decode(gen, skip_special_tokens=True)
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        return [(t, pt, self._n_generated(row.tolist())) for t, pt, row in zip(texts, prompt_tokens, gen)]

    def _n_generated(self, ids: list[int]) -> int:
        """Tokens up to and including the first stop token (padding after it excluded)."""
        for i, t in enumerate(ids):
            if t in self.stop_ids:
                return i + 1
            if t == self.tok.pad_token_id:
                return i
        return len(ids)


class _VLLMBackend:
    def __init__(self, p: LLMParams):
        self.p = p
        self.engine = None

    def load(self) -> None:
        if self.engine is not None:
            return
        try:
            import vllm
        except ImportError:
            raise StageError(
                "backend 'vllm' needs vLLM: `pip install -e .[vllm]` on a GPU host, or run `vllm serve MODEL` "
                "in its own environment and use backend 'openai' with base_url http://127.0.0.1:8000/v1"
            ) from None
        self.vllm = vllm
        self.engine = vllm.LLM(model=self.p.model)

    def run(self, items: list[_Item], run: _Run) -> None:
        self.load()
        for i in range(0, len(items), self.p.batch_size):
            batch = run.admit_prefix(items[i : i + self.p.batch_size])
            if not batch:
                return
            sps = [
                self.vllm.SamplingParams(temperature=it.request.temperature, top_p=SAMPLING["top_p"], max_tokens=it.max_tokens, seed=it.seed)
                for it in batch
            ]
            outs = self.engine.chat([it.request.as_dicts() for it in batch], sps, use_tqdm=False)
            for it, o in zip(batch, outs):
                c = o.outputs[0]
                run.done(it, c.text, len(o.prompt_token_ids or []), len(c.token_ids))
            if run.stopped:
                return


_BACKENDS = {"openai": _OpenAIBackend, "transformers": _TransformersBackend, "vllm": _VLLMBackend}


# --- the public class -------------------------------------------------------------------------


class LLM:
    """Cached, cost-capped chat completions: `complete()` returns responses in request order."""

    def __init__(self, params: LLMParams):
        self.params = params
        self.stats = {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "retries": 0}
        self._cache = ResponseCache(params.cache_dir)
        self._backend = _BACKENDS[params.backend](params)
        self._identity: str | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """What the cache keys on: API endpoint + model name, or a hash of local weights."""
        if self._identity is None:
            self._identity = model_identity(self.params, self._cache)
        return self._identity

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        p = self.params
        return prompt_tokens * p.price_input_per_mtok / 1e6 + completion_tokens * p.price_output_per_mtok / 1e6

    def _item(self, r: Request) -> _Item:
        if not isinstance(r, Request):
            raise StageError(f"LLM.complete expects Request objects, got {type(r).__name__}")
        max_tokens = r.max_tokens if r.max_tokens is not None else self.params.max_new_tokens
        fields = {"messages": [list(m) for m in r.messages], "temperature": float(r.temperature), "max_tokens": max_tokens,
                  "sample": r.sample, "sampling": SAMPLING}
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
        return {"requests": len(items), "cached": sum(it.key in hits for it in items), "to_call": len(todo),
                "prompt_tokens": pt, "max_output_tokens": mo, "cost_usd": self.cost(pt, mo)}

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
