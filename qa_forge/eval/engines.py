"""Engines that write the next assistant turn of a batch of conversations (see `agent`).

- `TransformersEngine`: batched greedy `generate`; with `reuse_cache` each conversation's KV cache is
  kept between steps and only what it does not already hold (tool result + generation prompt) is
  encoded. `reuse_cache=False, batch_size=1` is the seeds' way: one question at a time, re-encoding
  the whole conversation at every step. Both run the same loop: each conversation stops at its own
  end-of-turn, under its own length limit, and sees exactly the tokens the one-at-a-time renderer gives it.
- `VLLMEngine`: vLLM's offline engine with automatic prefix caching (one model split over
  `tensor_parallel_size` GPUs).
- `OpenAIEngine`: an OpenAI-compatible server's completions endpoint (e.g. `vllm serve`, whose
  `--data-parallel-size` spreads the requests over model copies behind one endpoint), sent the
  token ids rendered here; it first checks that the server serves the model asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from qa_forge.chat import render
from qa_forge.core.clients import openai_client
from qa_forge.core.io import UserError
from qa_forge.eval.agent import PENDING, Conversation
from qa_forge.eval.kvcache import add_empty_rows, compact, growing_cache, prefill_rows
from qa_forge.llm.identity import public_url


@cache
def _hooks():
    """transformers' per-row hooks into `generate`, built on first use (importing transformers is slow)."""
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    class RowBudget(StoppingCriteria):
        """Each row stops after its own number of new tokens. transformers' MaxLengthCriteria has one
        length for the whole batch; `generate` itself supports per-row stops (it pads finished rows)."""

        def __init__(self, start: int, budgets):
            self.start, self.budgets = start, budgets

        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - self.start) >= self.budgets

    class TopTwoGap(LogitsProcessor):
        """Records, per decoding step and row, the gap between the two largest logits (parity checks)."""

        def __init__(self):
            self.gaps: list[list[float]] = []

        def __call__(self, input_ids, scores):
            top = scores.topk(2, dim=-1).values
            self.gaps.append((top[:, 0] - top[:, 1]).tolist())
            return scores

    return RowBudget, TopTwoGap, StoppingCriteriaList, LogitsProcessorList


def reply_budget(max_new_tokens: int, max_length: int, prompt_len: int) -> int:
    """New tokens a conversation of `prompt_len` tokens may write: its own length against max_length
    (0: no room, the conversation ends "length"). The local and the served engine both cut replies here."""
    return max(0, min(max_new_tokens, max_length - prompt_len))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Batch:
    """What the cache holds between steps: row i is convs[i]; `held[i]` its own tokens (the columns of
    `ids` where `mask` is 1, in order); the other columns are padding or discarded tokens."""

    convs: list[Conversation]
    held: list[list[int]]
    ids: object  # LongTensor [rows, columns]
    mask: object  # LongTensor [rows, columns]
    cache: object  # transformers DynamicCache over ids[:, :cache length]


class TransformersEngine:
    """Batched greedy decoding with transformers; optionally reusing each conversation's KV cache.

    The same loop as one conversation at a time, only batched:
    - a conversation's input is always `render_ids(messages, add_generation_prompt=True)`, the one-at-a-time
      prompt. With `reuse_cache` the cached tokens are compared with it: the common prefix is kept, cached
      tokens past it are masked out (e.g. a reply the template re-tokenizes differently), and the rest is encoded;
    - positions come from the attention mask (`generate` numbers tokens by the mask's cumulative sum), so
      left padding and masked holes leave each conversation at positions 0..n-1, as alone;
    - each conversation stops at its own end-of-turn token or its own budget,
      min(max_new_tokens, max_length - its own prompt length): never the padded batch's width;
    - a conversation that ends leaves the batch (its cache row is dropped); the others are not touched.

    Why not transformers' continuous batching (`generate_batch`, paged cache with block sharing): its prefix
    sharing reuses only complete blocks and needs the paged-attention kernels, and a turn here is a
    synchronous step (retrieve runs between turns), which `generate` with a `DynamicCache` and per-row
    stopping criteria already covers on CPU and GPU alike.
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        reuse_cache: bool = True,
        max_length: int = 4096,
        fixed_length: bool = False,
        trace: bool = False,
        chunk_tokens: int | None = None,
    ):
        import torch

        self.torch = torch
        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.batch_size, self.reuse_cache, self.max_length = max_new_tokens, batch_size, reuse_cache, max_length
        self.fixed_length = fixed_length  # scripted benchmarks: every reply is exactly max_new_tokens long
        self.eot = render.end_of_turn_id(tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eot
        # a sliding window counts cache columns, padding and masked holes included: keep the cache within it
        cfg = model.config
        self.window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        # trace: qid -> per reply {"tokens": generated ids, "gaps": top-2 logit gap at each} (parity checks)
        self.trace: dict[str, list[dict]] | None = {} if trace else None
        self.state: _Batch | None = None
        self.joined = 0  # conversations that joined a running batch beside cached ones (parity checks count them)
        self.continued = self.compacted = self.prefilled_apart = 0  # chunked replies, compactions, split prefills (same)
        # chunk_tokens (reused cache only): a step decodes at most this many tokens; a row that has not ended
        # its turn answers PENDING and goes on at the next step, so a row that ends early frees its slot for a
        # waiting conversation instead of idling until the batch's longest reply ends
        self.chunk = chunk_tokens if reuse_cache and chunk_tokens and not fixed_length else None
        self.partial: dict[int, list[int]] = {}  # id(conv) -> tokens of its unfinished reply
        self.partial_gaps: dict[int, list[float]] = {}

    # -- batch lifecycle --
    def begin(self, convs: list[Conversation]) -> None:
        self.state = None

    def end(self) -> None:
        self.state = None

    def budget(self, prompt_len: int) -> int:
        """New tokens a conversation of `prompt_len` tokens may write: its own length against max_length."""
        if self.fixed_length:
            return self.max_new_tokens if self.max_length - prompt_len >= self.max_new_tokens else 0
        return reply_budget(self.max_new_tokens, self.max_length, prompt_len)

    def step(self, convs: list[Conversation]) -> list[str | None]:
        """The next reply of each conversation; None where it would run past its budget without ending its
        turn; PENDING (chunk_tokens) where it has not ended its turn yet."""
        prompts = [render.render_ids(self.tok, c.messages, add_generation_prompt=True) for c in convs]
        written = [self.partial.get(id(c), []) for c in convs]
        targets = [p + w for p, w in zip(prompts, written)]  # a continued reply: its tokens so far are input
        budgets = [self.budget(len(p)) - len(w) for p, w in zip(prompts, written)]
        go = [i for i, b in enumerate(budgets) if b > 0]  # the rest end here ("length") and leave the batch
        replies: list[str | None] = [None] * len(convs)
        for i in set(range(len(convs))) - set(go):
            self._forget(convs[i])
        if not go:
            self.state = None
            return replies
        convs, targets, budgets = [convs[i] for i in go], [targets[i] for i in go], [budgets[i] for i in go]
        now = [min(b, self.chunk) if self.chunk else b for b in budgets]
        ids, mask, cache = self._inputs(convs, targets, max(now))
        texts = self._generate(convs, targets, budgets, now, ids, mask, cache)
        for i, text in zip(go, texts):
            replies[i] = text
        return replies

    def _forget(self, conv) -> None:
        self.partial.pop(id(conv), None)
        self.partial_gaps.pop(id(conv), None)

    def _pad_left(self, rows: list[list[int]]):
        width = max(map(len, rows))
        ids = self.torch.tensor([[self.pad] * (width - len(r)) + r for r in rows])
        mask = self.torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    def _inputs(self, convs, targets, longest_budget):
        """Input ids, attention mask and cache for this step."""
        torch, st = self.torch, self.state
        where = {id(c): i for i, c in enumerate(st.convs)} if self.reuse_cache and st is not None else {}
        cached = 0  # the batch is the cached conversations, then the ones that just joined (agent.run refills at the end)
        while cached < len(convs) and id(convs[cached]) in where:
            cached += 1
        if cached == 0 or any(id(c) in where for c in convs[cached:]):
            ids, mask = self._pad_left(targets)
            return ids, mask, None
        rows = [where[id(c)] for c in convs[:cached]]
        ids, mask, held, cache = st.ids, st.mask.clone(), [st.held[r] for r in rows], st.cache
        if rows != list(range(len(st.convs))):  # conversations that ended leave the batch
            cache.batch_select_indices(torch.tensor(rows))
            ids, mask = ids[rows], mask[rows]
        width = ids.shape[1]
        ids, mask = compact(ids, mask, cache)  # drop the columns no row holds any more (kvcache)
        self.compacted += ids.shape[1] < width
        if joined := len(convs) - cached:
            # a conversation that joins gets an empty cache row (masked out, like padding): its whole prompt
            # is encoded below as its suffix, while the others keep what they hold
            if not add_empty_rows(cache, joined):
                ids, mask = self._pad_left(targets)
                return ids, mask, None
            ids = torch.cat([ids, ids.new_full((joined, ids.shape[1]), self.pad)])
            mask = torch.cat([mask, mask.new_zeros((joined, mask.shape[1]))])
            held = held + [[] for _ in range(joined)]
            self.joined += joined
        suffixes = []
        for j, (h, t) in enumerate(zip(held, targets)):
            keep = min(common_prefix(h, t), len(t) - 1)  # at least one token to encode: the next logits come from it
            # cached tokens the renderer does not produce are masked out, like padding (DynamicCache.crop cuts
            # every row at one length; a per-row cut is a mask)
            if keep < len(h):
                mask[j, mask[j].nonzero().squeeze(1)[keep:]] = 0
            suffixes.append(t[keep:])
        new_ids, new_mask = self._pad_left(suffixes)
        ids, mask = torch.cat([ids, new_ids], 1), torch.cat([mask, new_mask.to(mask.dtype)], 1)
        if self.window is not None and ids.shape[1] + longest_budget > self.window:
            ids, mask = self._pad_left(targets)  # re-encode: the padded cache would outgrow the window
            return ids, mask, None
        # rows with more than one new token encode them first, alone: in one forward of the whole batch, rows
        # continuing a reply (one new token) would be padded to the longest tool result
        self.prefilled_apart += prefill_rows(self.model, ids, mask, cache, [len(x) for x in suffixes])
        return ids, mask, cache

    def _generate(self, convs, targets, budgets, now, ids, mask, cache) -> list:
        """Decode up to `now[j]` tokens for row j (its whole remaining `budgets[j]` without chunking)."""
        torch = self.torch
        row_budget, top_two_gap, stopping, processors = _hooks()
        width = ids.shape[1]
        gaps = top_two_gap() if self.trace is not None else None
        if cache is None:
            cache = growing_cache(self.model)  # appends in place (kvcache); None: generate's own
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                max_new_tokens=max(now),
                min_new_tokens=self.max_new_tokens if self.fixed_length else None,
                stopping_criteria=stopping([row_budget(width, torch.tensor(now))]),
                logits_processor=processors([gaps] if gaps is not None else []),
                do_sample=False,
                eos_token_id=None if self.fixed_length else self.eot,
                pad_token_id=self.pad,
                return_dict_in_generate=True,
                use_cache=True,
            )
        new = out.sequences[:, width:].tolist()
        texts, gen_mask, now_held = [], [], []
        for j, (row, n_now, budget) in enumerate(zip(new, now, budgets)):
            conv = convs[j]
            mine = row[:n_now]  # past its budget a row holds padding (which may be the end-of-turn id itself)
            if self.fixed_length:
                k = len(mine)
            else:
                k = mine.index(self.eot) + 1 if self.eot in mine else None
            n = k or len(mine)
            reply = self.partial.get(id(conv), []) + mine[:n]
            row_gaps = self.partial_gaps.get(id(conv), []) + ([g[j] for g in gaps.gaps[:n]] if gaps is not None else [])
            if k is None and n < budget:  # chunk_tokens: not ended, budget left
                texts.append(PENDING)
                self.continued += 1
                self.partial[id(conv)], self.partial_gaps[id(conv)] = reply, row_gaps
            else:
                texts.append(self.tok.decode(reply, skip_special_tokens=True) if k else None)
                self._forget(conv)
                if gaps is not None:
                    self.trace.setdefault(conv.qid, []).append({"tokens": reply, "gaps": row_gaps})
            gen_mask.append([1] * n + [0] * (len(row) - n))
            now_held.append(targets[j] + mine[:n])
        if self.reuse_cache:
            mask = torch.cat([mask, torch.tensor(gen_mask, dtype=mask.dtype)], 1)
            self.state = _Batch(list(convs), now_held, out.sequences, mask, out.past_key_values)
        return texts


class VLLMEngine:
    """vLLM's offline engine (GPU hosts, with a vLLM that fits our pins: none today): prefix caching reuses what each
    conversation already encoded; all active conversations go in one call."""

    def __init__(
        self, model_dir: str, tokenizer, max_new_tokens: int, dtype: str = "bfloat16", batch_size: int = 256, tensor_parallel_size: int = 1
    ):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise UserError(
                "evaluate.backend 'vllm' needs vLLM in this environment, and no vLLM release fits our torch and transformers "
                "pins: use backend 'openai' with serve_command '.venv-vllm/bin/vllm serve' (`make vllm-env`; README: Serving the trained model)"
            ) from None
        self.tok, self.batch_size = tokenizer, batch_size
        self.llm = LLM(model=model_dir, dtype=dtype, enable_prefix_caching=True, tensor_parallel_size=tensor_parallel_size)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=[render.end_of_turn_id(tokenizer)])

    def begin(self, convs) -> None: ...

    def end(self) -> None: ...

    def step(self, convs: list[Conversation]) -> list[str | None]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=render.render_ids(self.tok, c.messages, add_generation_prompt=True)) for c in convs]
        outs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        return [o.outputs[0].text if o.outputs[0].finish_reason == "stop" else None for o in outs]


def require_served(client, name: str, where: str, folder: str | None) -> None:
    """Refuse a server that does not serve `name` (GET /v1/models), before any question is asked: a
    name that is `folder`'s content hash is served only by a server running exactly that build, so
    metrics are never recorded against another model (an older build, the base, another project's)."""
    import openai

    try:
        served = sorted(m.id for m in client.models.list())
    except openai.APIError as e:
        raise UserError(
            f"param 'evaluate.base_url': cannot list the models served at {where} ({type(e).__name__}: {str(e)[:200]}): is the server up?"
        ) from None
    if name in served:
        return
    if folder is None:
        raise UserError(f"param 'evaluate.served_model': {where} serves {', '.join(served) or 'no model'}, not {name}")
    raise UserError(
        f"{where} serves {', '.join(served) or 'no model'}, not {name}, the content hash of {folder} (weights, tokenizer, "
        f"chat template, config): it runs another model or another build of it. Serve this one: "
        f"vllm serve {folder} --served-model-name {name}"
    )


class OpenAIEngine:
    """An OpenAI-compatible server's completions endpoint (e.g. `vllm serve models/merged`, whose
    prefix cache reuses encoded conversations); requests run concurrently.

    The prompt is sent as the token ids `render.render_ids` gives: the ids TransformersEngine feeds its
    model and pack trained on, so one renderer builds the conversation for training and inference.
    Not chat completions: the server would render with its own copy of the template (no ChatML
    fallback for a base model without one, no `tools` argument, its own tool-call parsing), a second
    renderer that can drift. Not the rendered text either: the server would tokenize it again (a BOS
    in front of the one the template wrote, another split at a message boundary)."""

    def __init__(
        self,
        base_url: str | None,
        model: str,
        tokenizer,
        max_new_tokens: int,
        max_length: int,
        api_key_env: str | None,
        batch_size: int,
        timeout_s: float,
        max_retries: int,
        folder: str | None = None,
    ):
        """`model`: the served name; `folder`: the local model folder whose content hash it is (None: no local weights)."""
        if not base_url:
            raise UserError("param 'evaluate.base_url': required for backend 'openai'")
        self.client = openai_client(base_url, api_key_env, timeout_s, max_retries)  # the SDK retries 429 / 5xx / timeouts
        self.where = public_url(base_url)
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.max_new_tokens, self.max_length = max_new_tokens, max_length
        self.eot = render.end_of_turn_id(tokenizer)
        self.stop = self.tok.convert_ids_to_tokens(self.eot)
        require_served(self.client, model, self.where, folder)

    def begin(self, convs) -> None: ...

    def end(self) -> None: ...

    def _one(self, conv: Conversation) -> str | None:
        import openai

        ids = render.render_ids(self.tok, conv.messages, add_generation_prompt=True)
        budget = reply_budget(self.max_new_tokens, self.max_length, len(ids))
        if budget == 0:
            return None
        try:
            out = self.client.completions.create(
                model=self.model,
                prompt=ids,
                max_tokens=budget,
                temperature=0.0,
                stop=[self.stop],  # servers that keep special tokens in the text
                # vLLM: stop at the end-of-turn token itself, as TransformersEngine does (it skips special
                # tokens in the text, so the stop string never shows there)
                extra_body={"stop_token_ids": [self.eot]},
            )
        except openai.APIError as e:
            raise UserError(f"{self.where}: model {self.model}: {type(e).__name__}: {str(e)[:300]}") from None
        choice = out.choices[0]
        return choice.text if choice.finish_reason == "stop" else None

    def step(self, convs: list[Conversation]) -> list[str | None]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(len(convs), self.batch_size))) as pool:
            return list(pool.map(self._one, convs))
