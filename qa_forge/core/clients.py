"""The one OpenAI client factory: the LLM layer and the evaluate engine both call OpenAI-compatible
servers (OpenAI, `vllm serve`)."""

from __future__ import annotations

import os

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def openai_client(base_url: str | None, api_key_env: str | None, timeout_s: float, max_retries: int):
    """An `openai.OpenAI` client. The key is read from the env var named `api_key_env` (never from
    params); a server that needs none (`vllm serve`) gets "EMPTY". `base_url` is always explicit,
    so OPENAI_BASE_URL in the environment cannot redirect a run."""
    import openai

    key = os.environ.get(api_key_env) if api_key_env else None
    return openai.OpenAI(base_url=base_url or DEFAULT_BASE_URL, api_key=key or "EMPTY", max_retries=max_retries, timeout=timeout_s)
