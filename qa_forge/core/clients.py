"""The one OpenAI client factory: the LLM layer and the evaluate engine both call OpenAI-compatible
servers (OpenAI, `vllm serve`)."""

from __future__ import annotations

import os

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def openai_client(base_url: str | None, api_key_env: str | None, timeout_s: float, max_retries: int):
    """An `openai.OpenAI` client. The key is read from the env var named `api_key_env` (never from
    params); `api_key_env: null` declares a server that needs none (`vllm serve`). `base_url` is
    always explicit, so OPENAI_BASE_URL in the environment cannot redirect a run."""
    import openai

    from qa_forge.core.io import UserError

    key = "EMPTY"
    if api_key_env:
        key = os.environ.get(api_key_env, "")
        if not key:
            raise UserError(
                f"param 'api_key_env': the environment variable {api_key_env} is not set: export it, "
                f"or set api_key_env: null for a local server that needs no key"
            )
    return openai.OpenAI(base_url=base_url or DEFAULT_BASE_URL, api_key=key, max_retries=max_retries, timeout=timeout_s)
