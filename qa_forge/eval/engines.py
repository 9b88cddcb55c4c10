"""Engines that write the next assistant turn of a batch of conversations (see `agent`).

- `TransformersEngine`: batched `generate`; with `reuse_cache` each conversation's KV cache is
  kept between steps and only the new tokens (tool result + generation prompt) are encoded.
  `reuse_cache=False, batch_size=1` is the seeds' way: one question at a time, re-encoding the
  whole conversation at every step.
- `VLLMEngine`: vLLM's offline engine with automatic prefix caching.
- `OpenAIEngine`: an OpenAI-compatible server's completions endpoint (e.g. `vllm serve`), prompts
  rendered here with the model's chat template.
"""

from __future__ import annotations

from qa_forge.chat import render
from qa_forge.core.clients import openai_client
from qa_forge.core.io import UserError
from qa_forge.eval.agent import Conversation


class TransformersEngine:
    """Batched greedy decoding with transformers; optionally reusing each conversation's KV cache."""

    def __init__(
        self,
        model,
        tokenizer,
        max_new_tokens: int = 256,
        batch_size: int = 8,
        reuse_cache: bool = True,
        max_length: int = 4096,
        fixed_length: bool = False,
    ):
        import torch

        self.torch = torch
        self.model, self.tok = model, tokenizer
        self.max_new_tokens, self.batch_size, self.reuse_cache, self.max_length = max_new_tokens, batch_size, reuse_cache, max_length
        self.fixed_length = fixed_length  # scripted benchmarks: every reply is exactly max_new_tokens long
        self.eot = render.end_of_turn_id(tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eot
        self.state = None

    # -- batch lifecycle --
    def begin(self, convs: list[Conversation]) -> None:
        self.state = None  # (conversations, sequences, attention mask, cache)

    def end(self) -> None:
        self.state = None

    def step(self, convs: list[Conversation]) -> list[str | None]:
        if self.reuse_cache and self.state is not None:
            return self._continue(convs)
        prompts = [render.render_ids(self.tok, c.messages, add_generation_prompt=True) for c in convs]
        width = max(map(len, prompts))
        ids = self.torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        mask = self.torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return self._generate(convs, ids, mask, None)

    def _generate(self, convs, ids, mask, cache) -> list[str | None]:
        torch = self.torch
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=self.max_new_tokens if self.fixed_length else None,
                do_sample=False,
                eos_token_id=None if self.fixed_length else self.eot,
                pad_token_id=self.pad,
                return_dict_in_generate=True,
                use_cache=True,
            )
        new = out.sequences[:, ids.shape[1] :].tolist()
        texts, gen_mask = [], []
        closed = [self.eot in row for row in new]  # did the reply end its turn (else: fixed-length mode)
        for row in new:
            k = row.index(self.eot) + 1 if self.eot in row else (len(row) if self.fixed_length else None)
            texts.append(self.tok.decode(row[:k], skip_special_tokens=True) if k else None)
            gen_mask.append([1] * (k or len(row)) + [0] * (len(row) - (k or len(row))))
        if self.reuse_cache:
            mask = torch.cat([mask, torch.tensor(gen_mask, dtype=mask.dtype)], 1)
            self.state = (list(convs), out.sequences, mask, out.past_key_values, closed)
        return texts

    def _continue(self, convs: list[Conversation]) -> list[str | None]:
        """Encode only what follows each conversation's last reply: the tool turn and the generation prompt."""
        torch = self.torch
        prev, seqs, mask, cache, closed = self.state
        keep = [prev.index(c) for c in convs]
        if len(keep) < len(prev):
            cache.batch_select_indices(torch.tensor(keep))
            seqs, mask = seqs[keep], mask[keep]
        suffixes = []
        for c, i in zip(convs, keep):
            # the template's rendering through the reply ends with end-of-turn + whatever follows it
            through = render.render_ids(self.tok, c.messages[:-1])
            after = render.render_ids(self.tok, c.messages, add_generation_prompt=True)
            if after[: len(through)] != through:
                raise ValueError(f"{c.qid}: chat template does not render a stable prefix")
            tail = through[len(through) - through[::-1].index(self.eot) :] if self.eot in through else []
            suffixes.append(([] if closed[i] else [self.eot]) + tail + after[len(through) :])
        width = max(map(len, suffixes))
        new = torch.tensor([[self.pad] * (width - len(s)) + s for s in suffixes])
        new_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], dtype=mask.dtype)
        ids, mask = torch.cat([seqs, new], 1), torch.cat([mask, new_mask], 1)
        if ids.shape[1] + self.max_new_tokens > self.max_length:
            return [None] * len(convs)
        return self._generate(convs, ids, mask, cache)


class VLLMEngine:
    """vLLM's offline engine (the `vllm` extra, GPU hosts): prefix caching reuses what each
    conversation already encoded; all active conversations go in one call."""

    def __init__(self, model_dir: str, tokenizer, max_new_tokens: int, dtype: str = "bfloat16", batch_size: int = 256):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise UserError(
                "evaluate.backend 'vllm' needs vLLM: pip install -e .[vllm] (or serve the model and use backend 'openai')"
            ) from None
        self.tok, self.batch_size = tokenizer, batch_size
        self.llm = LLM(model=model_dir, dtype=dtype, enable_prefix_caching=True)
        self.sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=[render.end_of_turn_id(tokenizer)])

    def begin(self, convs) -> None: ...

    def end(self) -> None: ...

    def step(self, convs: list[Conversation]) -> list[str | None]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=render.render_ids(self.tok, c.messages, add_generation_prompt=True)) for c in convs]
        outs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        return [o.outputs[0].text if o.outputs[0].finish_reason == "stop" else None for o in outs]


class OpenAIEngine:
    """An OpenAI-compatible server's completions endpoint (e.g. `vllm serve models/merged`, whose
    prefix cache reuses encoded conversations); prompts are rendered here, requests run concurrently."""

    def __init__(
        self,
        base_url: str | None,
        model: str,
        tokenizer,
        max_new_tokens: int,
        api_key_env: str | None,
        batch_size: int,
        timeout_s: float,
        max_retries: int,
    ):
        if not base_url:
            raise UserError("param 'evaluate.base_url': required for backend 'openai'")
        self.client = openai_client(base_url, api_key_env, timeout_s, max_retries)  # the SDK retries 429 / 5xx / timeouts
        self.model, self.tok, self.max_new_tokens, self.batch_size = model, tokenizer, max_new_tokens, batch_size
        self.stop = self.tok.convert_ids_to_tokens(render.end_of_turn_id(tokenizer))

    def begin(self, convs) -> None: ...

    def end(self) -> None: ...

    def _one(self, conv: Conversation) -> str | None:
        prompt = self.tok.apply_chat_template(conv.messages, tokenize=False, add_generation_prompt=True)
        out = self.client.completions.create(
            model=self.model, prompt=prompt, max_tokens=self.max_new_tokens, temperature=0.0, stop=[self.stop]
        )
        choice = out.choices[0]
        return choice.text if choice.finish_reason == "stop" else None

    def step(self, convs: list[Conversation]) -> list[str | None]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(len(convs), self.batch_size))) as pool:
            return list(pool.map(self._one, convs))
