"""The `llm` params section: which model writes, through which backend, at what cost."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from qa_forge.llm.serving import check_serve_command


class LLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "vllm", "transformers"]
    model: str  # hub/API model name, or a local HF folder for transformers/vllm
    base_url: str | None  # openai backend; e.g. http://127.0.0.1:8000/v1 for `vllm serve`
    api_key_env: str | None  # NAME of the env var holding the key; null: a local server that needs none
    model_version: str | None  # openai backend: what identifies the served weights (null: the server's metadata)
    # openai: the command that starts the server for `model` (`vllm serve ...`), run only when a request
    # misses the cache and stopped when the stage ends (qa_forge.llm.serving); null: a server that runs already
    serve_command: str | None
    serve_timeout_s: PositiveFloat  # serve_command: how long the server may take to list the model (loading a 7B: minutes)
    concurrency: PositiveInt  # openai: max requests in flight
    max_retries: NonNegativeInt
    timeout_s: PositiveFloat
    batch_size: PositiveInt  # transformers: prompts per generate(); vllm: prompts per chat()
    tensor_parallel_size: PositiveInt  # vllm: GPUs one copy of the model is split over (more copies: `vllm serve --data-parallel-size`)
    max_new_tokens: PositiveInt
    price_input_per_mtok: NonNegativeFloat  # USD per million prompt tokens
    price_output_per_mtok: NonNegativeFloat
    cost_cap_usd: NonNegativeFloat | None
    retry_failed: bool  # send again requests whose cached completion was empty or cut off
    cache_dir: str  # outside DVC outputs: relative to the cache root (qa_forge.core.paths), or absolute

    @model_validator(mode="after")
    def _serve_command_fits(self):
        check_serve_command(self.serve_command, self.backend, self.base_url)
        if self.serve_command is not None and self.model_version is None:
            # the cache keys on the model's identity; without a declared version it is the server's
            # metadata, and asking for it would start the server on a run that needs no call
            raise ValueError("serve_command needs model_version (e.g. the revision it serves): a fully cached run starts no server")
        return self
