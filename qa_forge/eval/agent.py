"""The agentic answer loop: the model calls `retrieve` as often as it needs (up to a cap), each call
answered with the top-k paragraphs of that question's index, until it gives a final answer.

An engine (`qa_forge.eval.engines`) produces the next assistant turn for a batch of conversations:
`begin(group)`, `step(active) -> replies`, `end()`. A reply is None when that conversation ran past its own
length limit (max_new_tokens, or the engine's max_length against its own tokens) without ending its turn.
Batching must not change a conversation's course: `step` gets only the conversations still running, and
each reply is the one that conversation would get alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from qa_forge.chat import render

Search = Callable[[str], list[tuple[str | None, str]]]  # query -> [(title, text)] top-k
PENDING = "<pending>"  # an engine's reply for a turn it has not finished yet (it goes on at the next step)


@dataclass
class Conversation:
    qid: str
    question: str
    search: Search
    messages: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    calls: int = 0
    status: str = "running"  # answered | unparsable | hop_cap | length
    final: render.FinalAnswer | None = None

    def __post_init__(self):
        if not self.messages:
            self.messages = render.start(self.question)

    @property
    def done(self) -> bool:
        return self.status != "running"


def advance(conv: Conversation, reply: str, max_calls: int, native_tools: bool = False, forced_calls: int = 0) -> None:
    """Apply one assistant reply: run its retrieve call, or take it as the final answer.
    Scripted mode (benchmarks, tests): the first `forced_calls` replies count as retrieve(question)."""
    parsed = render.parse_reply(reply)
    if conv.calls < forced_calls:
        parsed = render.ToolCall(conv.question, reply)
    step = {"reply": reply}
    conv.steps.append(step)
    if isinstance(parsed, render.ToolCall):
        if conv.calls >= max_calls:
            conv.status = "hop_cap"
            return
        hits = conv.search(parsed.query)
        conv.calls += 1
        step.update(query=parsed.query, retrieved=[t for t, _ in hits])
        # keep the model's own text (what the cache holds); native templates get the structured call
        call = (
            render.call_message(parsed.query, True, conv.calls - 1, content=parsed.content)
            if native_tools
            else {"role": "assistant", "content": reply}
        )
        conv.messages.append(call)
        conv.messages.append(render.tool_message(hits, native_tools, conv.calls - 1))
    elif isinstance(parsed, render.FinalAnswer):
        conv.messages.append({"role": "assistant", "content": reply})
        conv.final, conv.status = parsed, "answered"
    else:
        conv.status = "unparsable"


def run(engine, convs: list[Conversation], max_calls: int, progress: Callable[[int], None] | None = None, forced_calls: int = 0) -> None:
    """Drive every conversation to an end, at most `engine.batch_size` at a time. A slot freed by a
    conversation that ends is refilled with the next one at once (continuous batching), so a batch
    never waits on its longest conversation with idle rows (measured on the embedded default's
    predictions, fixed groups of 8 decoded 1.2-4.3x the tokens the conversations needed)."""
    size = max(1, engine.batch_size)
    waiting = list(reversed(convs))  # popped from the end: file order
    active: list[Conversation] = []
    engine.begin(convs[:size])
    while waiting or active:
        while len(active) < size and waiting:
            active.append(waiting.pop())  # new conversations join at the end of the batch
        replies = engine.step(active)
        for conv, reply in zip(active, replies):
            if reply is PENDING:
                continue
            if reply is None:  # ran past its max_new_tokens or its context limit
                conv.steps.append({"reply": None})
                conv.status = "length"
            else:
                advance(conv, reply, max_calls, forced_calls=forced_calls)
        ended = sum(c.done for c in active)
        active = [c for c in active if not c.done]
        if progress and ended:
            progress(ended)
    engine.end()
