"""One renderer for training and inference: a record's structured fields become the chat, and
the model's replies are parsed back. pack tokenises what `to_messages` builds; evaluate and ask
build the same messages step by step, so the two cannot drift.

A conversation: system (describes `retrieve`) · user question · assistant calls
`retrieve(query 1)` · tool returns paragraph 1 · assistant answers hop 1 ("Thought / Answer /
Short answer") and, in the same turn, calls retrieve for hop 2 · ... · the last assistant turn
answers the last hop and, for multi-hop, ends with "Summary / Thought / Answer / Short answer".
So at inference a turn with a retrieve call means "go on", a turn without one is the final answer.

Tool calls use the OpenAI `tool_calls` shape where the chat template renders tools; otherwise they
are written as text: <tool_call>{"name": "retrieve", "arguments": {"query": ...}}</tool_call>.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from qa_forge.core.prompts import parse_fields, template
from qa_forge.core.records import Record
from qa_forge.core.rows import IGNORE_INDEX

RETRIEVE_TOOL = {
    "type": "function",
    "function": {
        "name": "retrieve",
        "description": "Search the knowledge base and return the paragraphs most relevant to the query.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "what to look up"}},
            "required": ["query"],
        },
    },
}
# For base models without a chat template (e.g. Mistral-7B-v0.1): ChatML-style role markers, but
# each turn ends with the model's own end-of-sequence token, so a model that has no <|im_end|>
# token still learns to stop (the markers are ordinary text to it).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
# the call's own shape when its JSON does not parse: a small model copies a question's quotes into the
# query unescaped ("a song called "Counterparts" and ..."), 18 of 277 cpu-real HotpotQA replies
_LOOSE_CALL = re.compile(r'\{\s*"name"\s*:\s*"retrieve"\s*,\s*"arguments"\s*:\s*\{\s*"query"\s*:\s*"(.*)"\s*\}\s*\}', re.DOTALL)


@lru_cache
def system_prompt() -> str:
    return template("system").strip()


def answer_text(thought: str, answer: str, short_answer: str | None, summary: str | None = None) -> str:
    lines = [f"Summary: {summary}"] if summary else []
    if thought:
        lines.append(f"Thought: {thought}")
    lines.append(f"Answer: {answer}")
    if short_answer:
        lines.append(f"Short answer: {short_answer}")
    return "\n".join(lines)


def call_message(query: str, native_tools: bool, k: int = 0, content: str = "") -> dict:
    """An assistant turn that calls retrieve, after `content` (the previous hop's answer, if any)."""
    if native_tools:
        return {
            "role": "assistant",
            "content": content,
            "tool_calls": [{"id": f"call_{k}", "type": "function", "function": {"name": "retrieve", "arguments": {"query": query}}}],
        }
    payload = json.dumps({"name": "retrieve", "arguments": {"query": query}}, ensure_ascii=False)
    return {"role": "assistant", "content": (content + "\n" if content else "") + f"<tool_call>{payload}</tool_call>"}


def tool_message(paragraphs: list[tuple[str | None, str]], native_tools: bool, k: int = 0) -> dict:
    """The tool turn: retrieved paragraphs, each with its title when it has one."""
    text = "\n\n".join(f"{title}: {body}" if title else body for title, body in paragraphs)
    msg = {"role": "tool", "content": text}
    if native_tools:
        msg["tool_call_id"] = f"call_{k}"
        msg["name"] = "retrieve"
    return msg


def start(question: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": question}]


def to_messages(r: Record, native_tools: bool = False) -> list[dict]:
    """The full training conversation of a record."""
    msgs = start(r.question)
    subs = r.sub_questions
    for k, sq in enumerate(subs):
        previous = answer_text(subs[k - 1].thought, subs[k - 1].answer, subs[k - 1].short_answer) if k else ""
        msgs.append(call_message(sq.question, native_tools, k, content=previous))
        msgs.append(tool_message([(sq.title, sq.paragraph)], native_tools, k))
    last = subs[-1]
    if r.multihop:
        hop = answer_text(last.thought, last.answer, last.short_answer)
        final = hop + "\n\n" + answer_text(r.final_thought, r.final_answer, r.short_answer, summary=r.summary or "-")
    else:
        final = answer_text(last.thought, r.final_answer or last.answer, r.short_answer)
    msgs.append({"role": "assistant", "content": final})
    return msgs


# --- parsing the model's replies -----------------------------------------------------------------


@dataclass
class ToolCall:
    query: str
    content: str = ""  # the previous hop's answer written before the call


@dataclass
class FinalAnswer:
    text: str  # the whole final message
    answer: str  # the text after the final "Answer:" (up to "Short answer:")
    short_answer: str | None
    summary: str | None
    thought: str | None


def parse_reply(text: str, tool_calls: list | None = None) -> ToolCall | FinalAnswer | None:
    """A retrieve call, a final answer, or None when the reply is neither."""
    for call in tool_calls or []:
        fn = call.get("function", call)
        args = fn.get("arguments", {})
        args = json.loads(args) if isinstance(args, str) else args
        if fn.get("name") == "retrieve" and args.get("query"):
            return ToolCall(str(args["query"]), text.strip())
    m = _CALL.search(text)
    if m:
        try:
            obj = json.loads(m.group(1))
            query = obj.get("arguments", {}).get("query")
            if obj.get("name") == "retrieve" and query:
                return ToolCall(str(query), text[: m.start()].strip())
        except (json.JSONDecodeError, AttributeError):
            loose = _LOOSE_CALL.fullmatch(m.group(1).strip())
            if loose and loose.group(1).strip():
                return ToolCall(loose.group(1).replace('\\"', '"'), text[: m.start()].strip())
        return None
    # a multi-hop final turn: the last hop's answer, then the summary block; read the block
    at = text.rfind("Summary:")
    fields = _fields(text[at:] if at >= 0 else text)
    if "Answer" not in fields:
        return None
    summary = fields.get("Summary")
    return FinalAnswer(
        text=text.strip(),
        answer=fields["Answer"],
        short_answer=fields.get("Short answer"),
        summary=None if summary in (None, "-") else summary,
        thought=fields.get("Thought"),
    )


def _fields(text: str) -> dict[str, str]:
    return parse_fields(text, ["Summary", "Thought", "Answer", "Short answer"])


# --- templates and tokens ------------------------------------------------------------------------


def supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders OpenAI-style tool calls."""
    t = tokenizer.chat_template or ""
    return "tool_calls" in t


def ensure_template(tokenizer, fallback: str | None = CHATML) -> None:
    """Give a template-less base model the fallback template (params: render.chat_template)."""
    if not tokenizer.chat_template and fallback:
        tokenizer.chat_template = fallback


def render_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    kwargs = {"tools": [RETRIEVE_TOOL]} if supports_tools(tokenizer) else {}
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=True, **kwargs)
    return list(out["input_ids"])


def end_of_turn_id(tokenizer) -> int:
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>"):
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i != tokenizer.unk_token_id and i is not None:
            return i
    return tokenizer.eos_token_id


def tokenize_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """input_ids and labels: assistant tokens (through their end-of-turn token) labelled, all else IGNORE_INDEX.

    Each assistant span is the difference between the chat rendered through that turn and the chat
    rendered up to it with the generation prompt; the template must render prefixes stably.
    """
    eot = end_of_turn_id(tokenizer)
    ids: list[int] = []
    labels: list[int] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = render_ids(tokenizer, messages[:i], add_generation_prompt=True)
        through = render_ids(tokenizer, messages[: i + 1])
        if through[: len(before)] != before or before[: len(ids)] != ids:
            raise ValueError(f"chat template does not render message {i} as a stable prefix; cannot mask labels")
        labels += [IGNORE_INDEX] * (len(before) - len(ids))
        span = through[len(before) :]
        # label through the end-of-turn token; what the template adds after it (a newline) is not learnt
        cut = len(span) - span[::-1].index(eot) if eot in span else len(span)
        labels += span[:cut] + [IGNORE_INDEX] * (len(span) - cut)
        ids = through
    full = render_ids(tokenizer, messages)
    if full[: len(ids)] != ids:
        raise ValueError("chat template does not render the whole chat as a stable prefix")
    labels += [IGNORE_INDEX] * (len(full) - len(ids))
    return full, labels
