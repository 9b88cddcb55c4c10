"""The LLM layer: cached, cost-capped chat completions over openai / transformers / vllm backends."""

from qa_forge.llm.llm import LLM
from qa_forge.llm.params import LLMParams
from qa_forge.llm.request import CostCapReached, Request, Response

__all__ = ["LLM", "CostCapReached", "LLMParams", "Request", "Response"]
