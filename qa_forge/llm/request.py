"""A chat request, its response, and a request resolved against the params (cache key, cost bound)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qa_forge.core.io import UserError

CHARS_PER_TOKEN = 4  # prompt-size estimate for the cost cap and estimate()
MESSAGE_OVERHEAD = 4  # tokens per chat message (role, separators), plus 3 to prime the reply
SAMPLING = {"top_p": 1.0}  # fixed sampling settings every backend uses; part of the cache key


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
            raise UserError("a chat message needs 'role' and 'content'") from None
        return cls(pairs, float(temperature), max_tokens, sample)

    def as_dicts(self) -> list[dict]:
        return [{"role": role, "content": content} for role, content in self.messages]


@dataclass
class Response:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool


class CostCapReached(UserError):
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
