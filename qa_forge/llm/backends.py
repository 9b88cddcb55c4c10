"""The three backends behind `LLM`: an OpenAI-compatible server (threads, retries), local
transformers (batched generate) and offline vLLM. Each sends `_Item`s and reports through `_Run`."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from qa_forge.core.clients import openai_client
from qa_forge.core.io import UserError
from qa_forge.llm.identity import VOLATILE_METADATA, public_url
from qa_forge.llm.params import LLMParams
from qa_forge.llm.request import SAMPLING, _Item
from qa_forge.llm.run import _Run

BACKOFF_BASE = 0.5  # seconds: retry n waits ~BACKOFF_BASE * 2**n (jittered); tests shrink it
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 30.0  # a server's Retry-After is honoured up to this many seconds


def backoff(attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    d = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    return d / 2 + random.uniform(0, d / 2)


class _Refused(Exception):
    """The server answered with a retryable status (429, 5xx): it did not run the request."""

    def __init__(self, error: Exception, wait: float | None):
        super().__init__(str(error))
        self.error, self.wait = error, wait


class _Unknown(Exception):
    """No usable answer, but the server may have run the request and billed it: a timeout, a lost
    connection, or a body that is not a completion."""


def retryable(status: int) -> bool:
    return status >= 500 or status in (408, 409, 429)


def parse_completion(r) -> tuple[str, str | None, object]:
    """(text, finish_reason, usage) of a chat completion; _Unknown when the body is not one (the
    SDK hands back a str for a non-JSON body and leaves fields unset on a partial one)."""
    choices = getattr(r, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise _Unknown(f"the body is not a chat completion: {str(r)[:200]}")
    return choices[0].message.content or "", choices[0].finish_reason, getattr(r, "usage", None)


class _OpenAIBackend:
    def __init__(self, p: LLMParams):
        self.p = p
        self._client = None
        self.where = f"model '{p.model}' at {public_url(p.base_url)}"

    def client(self):
        # Our own retry loop, not the SDK's: it also retries bodies that are not completions, stops
        # when the run stops, re-reserves the cost cap before each attempt and counts what may have
        # been billed. The SDK's retries would do none of that, so they are off.
        if self._client is None:
            self._client = openai_client(self.p.base_url, self.p.api_key_env, self.p.timeout_s, max_retries=0)
        return self._client

    def metadata(self) -> dict | None:
        """The server's description of the model, minus fields it stamps per request; None when it
        has no models endpoint (then `model_version` is the only way to tell two models apart)."""
        import openai

        try:
            m = self.client().models.retrieve(self.p.model)
        except openai.NotFoundError:
            return None
        except openai.APIError as e:
            raise UserError(
                f"{self.where}: cannot read the model's metadata ({type(e).__name__}); set llm.model_version to name it"
            ) from None
        return {k: v for k, v in m.model_dump().items() if k not in VOLATILE_METADATA}

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
        """Send `it` until it is answered, its retries are spent or the run stops. Each attempt
        reserves its worst-case cost first; one that may have been billed is charged that."""
        err: Exception | None = None
        for attempt in range(self.p.max_retries + 1):
            if attempt:
                run.retried()
            if not run.admit(it):
                return
            try:
                text, pt, ct, finish = self._send(client, it, run)
            except _Refused as e:
                run.release(it)
                err, wait = e.error, e.wait
            except _Unknown as e:
                run.charge_worst_case(it)
                err, wait = e, None
            except Exception as e:  # noqa: BLE001 - fatal (e.g. 401): complete() raises it in the caller's thread
                run.release(it)
                run.fail(e)
                return
            else:
                run.done(it, text, pt, ct, finish)
                return
            if run.aborted or attempt == self.p.max_retries:
                break
            time.sleep(wait if wait is not None else backoff(attempt))
        run.gave_up(it, f"{self.where}: gave up after {attempt} retries: {type(err).__name__}: {str(err)[:300]}")

    def _send(self, client, it: _Item, run: _Run) -> tuple[str, int, int, str | None]:
        import openai

        run.llm._cache.sending(it.key, run.llm.identity)  # journaled: a kill from here on may leave a billed call
        try:
            r = client.chat.completions.create(
                model=self.p.model,
                messages=it.request.as_dicts(),
                temperature=it.request.temperature,
                max_tokens=it.max_tokens,
                top_p=SAMPLING["top_p"],
                seed=it.seed,
            )
        except openai.APIStatusError as e:
            run.llm._cache.unanswered(it.key)
            if not retryable(e.status_code):
                hint = f" (API key from env var {self.p.api_key_env})" if e.status_code in (401, 403) else ""
                raise UserError(f"{self.where}: HTTP {e.status_code}{hint}: {str(e.message)[:300]}") from None
            raise _Refused(e, _retry_after(e.response)) from None
        except (openai.APIConnectionError, openai.APIResponseValidationError, ValueError) as e:  # timeouts, lost connections, bad JSON
            raise _Unknown(f"{type(e).__name__}: {e}") from None
        text, finish, usage = parse_completion(r)
        if usage is None:  # some servers omit usage: cost it at the worst case, never under it
            return text, it.prompt_bound, it.max_tokens, finish
        return text, usage.prompt_tokens, usage.completion_tokens, finish


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
        for it in items:  # the model's own tokenizer: the exact prompt size for the cost cap
            run.bound_prompt(it, lengths[it.key])
        for batch in _batches(items, self.p.batch_size, lambda it: lengths[it.key]):
            batch = run.admit_prefix(batch)
            if not batch:
                return
            for it, (text, pt, ct, finish) in zip(batch, self.generate([texts[it.key] for it in batch], batch)):
                run.done(it, text, pt, ct, finish)
            if run.stopped:
                return

    def generate(self, prompts: list[str], batch: list[_Item]) -> list[tuple[str, int, int, str]]:
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
        return [(t, pt, *self._n_generated(row.tolist())) for t, pt, row in zip(texts, prompt_tokens, gen)]

    def _n_generated(self, ids: list[int]) -> tuple[int, str]:
        """Tokens up to and including the first stop token (padding after it excluded), and the
        finish reason: "length" when the model never stopped within max_new_tokens."""
        for i, t in enumerate(ids):
            if t in self.stop_ids:
                return i + 1, "stop"
            if t == self.tok.pad_token_id:
                return i, "stop"
        return len(ids), "length"


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
                "backend 'vllm' needs vLLM in this environment, and no vLLM release fits our torch and transformers pins: "
                "use backend 'openai' with vLLM in its own environment (`make vllm-env`), base_url http://127.0.0.1:8000/v1 "
                "and serve_command '.venv-vllm/bin/vllm serve' (README: Profiles and the GPU host)"
            ) from None
        self.vllm = vllm
        self.engine = vllm.LLM(model=self.p.model, tensor_parallel_size=self.p.tensor_parallel_size)

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
                run.done(it, c.text, len(o.prompt_token_ids or []), len(c.token_ids), c.finish_reason)
            if run.stopped:
                return


BACKENDS = {"openai": _OpenAIBackend, "transformers": _TransformersBackend, "vllm": _VLLMBackend}
