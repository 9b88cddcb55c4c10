"""The three backends behind `LLM`: an OpenAI-compatible server (threads, retries), local
transformers (batched generate) and offline vLLM. Each sends `_Item`s and reports through `_Run`."""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from qa_forge.core.clients import openai_client
from qa_forge.core.io import UserError
from qa_forge.llm.params import LLMParams
from qa_forge.llm.request import CHARS_PER_TOKEN, SAMPLING, _Item
from qa_forge.llm.run import _Run

BACKOFF_BASE = 0.5  # seconds: retry n waits ~BACKOFF_BASE * 2**n (jittered); tests shrink it
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 30.0  # a server's Retry-After is honoured up to this many seconds


def backoff(attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    d = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return d / 2 + random.uniform(0, d / 2)


class _OpenAIBackend:
    def __init__(self, p: LLMParams):
        self.p = p
        self._client = None

    def client(self):
        if self._client is None:  # our own retry loop (budget-aware): the SDK's is off
            self._client = openai_client(self.p.base_url, self.p.api_key_env, self.p.timeout_s, max_retries=0)
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
                    model=self.p.model,
                    messages=it.request.as_dicts(),
                    temperature=it.request.temperature,
                    max_tokens=it.max_tokens,
                    top_p=SAMPLING["top_p"],
                    seed=it.seed,
                )
                break
            except openai.APIStatusError as e:
                if not (e.status_code >= 500 or e.status_code in (408, 409, 429)):
                    hint = f" (API key from env var {self.p.api_key_env})" if e.status_code in (401, 403) else ""
                    raise UserError(f"{where}: HTTP {e.status_code}{hint}: {str(e.message)[:300]}") from None
                err, wait = e, _retry_after(e.response)
            except openai.APIConnectionError as e:  # includes APITimeoutError
                err, wait = e, None
            if attempt == self.p.max_retries or run.aborted:
                raise UserError(f"{where}: gave up after {attempt} retries: {type(err).__name__}: {str(err)[:300]}")
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
            raise UserError(f"param 'model': cannot load '{self.p.model}' with transformers: {e}") from None
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
            raise UserError(f"param 'model': '{self.p.model}' cannot render a chat: {e}") from None

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
            raise UserError(
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
                self.vllm.SamplingParams(
                    temperature=it.request.temperature, top_p=SAMPLING["top_p"], max_tokens=it.max_tokens, seed=it.seed
                )
                for it in batch
            ]
            outs = self.engine.chat([it.request.as_dicts() for it in batch], sps, use_tqdm=False)
            for it, o in zip(batch, outs):
                c = o.outputs[0]
                run.done(it, c.text, len(o.prompt_token_ids or []), len(c.token_ids))
            if run.stopped:
                return


BACKENDS = {"openai": _OpenAIBackend, "transformers": _TransformersBackend, "vllm": _VLLMBackend}
