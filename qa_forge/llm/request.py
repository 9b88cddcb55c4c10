"""A chat request, its response, and a request resolved against the params (cache key, cost bound)."""

from __future__ import annotations

from dataclasses import dataclass

from qa_forge.core.io import UserError

MESSAGE_OVERHEAD = 4  # tokens per chat message (role, separators), plus 3 to prime the reply
SAMPLING = {"top_p": 1.0}  # fixed sampling settings every backend uses; part of the cache key
# Why an answer is not used: an empty completion, or one the server cut off at max_tokens. Cached
# as failures, so a deterministic cut-off is not paid for again on every run (`llm.retry_failed`).
EMPTY, CUT_OFF, GAVE_UP = "empty", "cut_off", "gave_up"


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
    text: str  # "" when the request failed
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    failure: str | None = None  # EMPTY, CUT_OFF, or GAVE_UP (retries spent: not cached)

    def problems(self) -> list[str]:
        """Why this response is no answer, as a record's error; [] when it is one."""
        return [f"llm: completion {self.failure}"] if self.failure else []


def failure_of(text: str, finish_reason: str | None) -> str | None:
    """Why a completion cannot be an answer, or None when it can."""
    if finish_reason == "length":
        return CUT_OFF
    return EMPTY if not text.strip() else None


class CostCapReached(UserError):
    """The next request could take the spend past `cost_cap_usd`; what was answered is cached."""


@dataclass
class _Item:
    """A request resolved against the params: its cache key, output limit and cost upper bound."""

    key: str
    request: Request
    fields: dict  # what the key hashes (minus identity); stored with the row
    max_tokens: int
    prompt_bound: int  # prompt tokens, at most
    upper_usd: float  # the worst case: prompt_bound in, max_tokens out

    @property
    def seed(self) -> int:
        return int(self.key[:8], 16)


def prompt_token_bound(messages: tuple) -> int:
    """At most this many prompt tokens whatever the tokenizer: no tokenizer makes more than one
    token of a UTF-8 byte (byte-level BPE falls back to single bytes), plus the chat overhead."""
    return sum(len(role.encode()) + len(content.encode()) + MESSAGE_OVERHEAD for role, content in messages) + 3
