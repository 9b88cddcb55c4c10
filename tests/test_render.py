"""render: every assistant turn of a record's conversation parses back to the record's fields, as
text and through the tokens a model would learn; native `tool_calls`; bad replies give None."""

import pytest

from qa_forge.chat.render import FinalAnswer, ToolCall, end_of_turn_id, parse_reply, supports_tools, to_messages, tokenize_chat
from qa_forge.core.prompts import parse_fields
from tests.smollm2 import sample_records, tokenizer

FIELDS = ["Summary", "Thought", "Answer", "Short answer"]

# A small template that renders OpenAI-style tool calls (and the tool list), like Qwen / Llama 3.
NATIVE = (
    "{% if tools %}<|im_start|>system\nTools: {% for t in tools %}{{ t['function']['name'] }} {% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if m['tool_calls'] is defined %}{% for c in m['tool_calls'] %}"
    '<tool_call>{"name": "{{ c["function"]["name"] }}", "arguments": {{ c["function"]["arguments"] | tojson }}}</tool_call>'
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def records():
    recs = sample_records()
    assert len(recs) >= 20 and any(r.multihop for r in recs) and any(not r.multihop for r in recs)
    return recs


def hop_fields(sq) -> dict:
    out = {"Answer": sq.answer.strip()}
    if sq.thought:
        out["Thought"] = sq.thought.strip()
    if sq.short_answer:
        out["Short answer"] = sq.short_answer.strip()
    return out


def check_round_trip(r, replies: list[ToolCall | FinalAnswer | None]):
    """The parsed assistant turns give back the record: hop queries, hop answers, final answer."""
    subs = r.sub_questions
    calls, final = replies[:-1], replies[-1]
    assert len(calls) == len(subs) and all(isinstance(c, ToolCall) for c in calls), (r.id, replies)
    for k, (call, sq) in enumerate(zip(calls, subs)):
        assert call.query == sq.question, r.id
        if k:  # the turn that calls hop k first answers hop k-1
            assert parse_fields(call.content, FIELDS) == hop_fields(subs[k - 1]), r.id
        else:
            assert call.content == "", r.id
    assert isinstance(final, FinalAnswer), (r.id, final)
    if r.multihop:
        assert final.answer == r.final_answer.strip()
        assert final.summary == (r.summary.strip() or None)
        assert final.thought == (r.final_thought.strip() or None)
        last_hop = final.text[: final.text.rfind("Summary:")]
        assert parse_fields(last_hop, FIELDS) == hop_fields(subs[-1]), r.id
    else:
        assert final.answer == (r.final_answer or subs[0].answer).strip()
        assert final.thought == (subs[0].thought.strip() or None)
        assert final.summary is None
    assert final.short_answer == (r.short_answer.strip() if r.short_answer else None)


def labelled_spans(labels: list[int]) -> list[list[int]]:
    spans, cur = [], []
    for lab in labels + [-100]:
        if lab != -100:
            cur.append(lab)
        elif cur:
            spans.append(cur)
            cur = []
    return spans


def test_round_trip_text(records):
    for r in records:
        msgs = to_messages(r)
        check_round_trip(r, [parse_reply(m["content"], m.get("tool_calls")) for m in msgs if m["role"] == "assistant"])


def test_round_trip_through_learnt_tokens(records):
    """What the model learns to write (the labelled tokens, decoded) parses back to the record."""
    tok = tokenizer()
    eot = tok.convert_ids_to_tokens(end_of_turn_id(tok))
    for r in records:
        _, labels = tokenize_chat(tok, to_messages(r))
        texts = [tok.decode(span) for span in labelled_spans(labels)]
        assert all(t.endswith(eot) for t in texts), r.id
        check_round_trip(r, [parse_reply(t[: -len(eot)]) for t in texts])


def test_native_tool_calls(records):
    tok = tokenizer()
    tok.chat_template = NATIVE
    assert supports_tools(tok)
    eot = tok.convert_ids_to_tokens(end_of_turn_id(tok))
    for r in [r for r in records if r.multihop][:4] + [r for r in records if not r.multihop][:4]:
        msgs = to_messages(r, native_tools=True)
        calls = [m for m in msgs if m.get("tool_calls")]
        assert len(calls) == len(r.sub_questions)
        assert all("<tool_call>" not in m["content"] for m in msgs)  # the call is structured, not text
        tools = [m for m in msgs if m["role"] == "tool"]
        assert [t["tool_call_id"] for t in tools] == [c["tool_calls"][0]["id"] for c in calls]
        check_round_trip(r, [parse_reply(m["content"], m.get("tool_calls")) for m in msgs if m["role"] == "assistant"])
        # the template writes the tool list and the calls; the decoded labelled text parses back too
        ids, labels = tokenize_chat(tok, msgs)
        assert tok.decode(ids).startswith("<|im_start|>system\nTools: retrieve")
        texts = [tok.decode(span) for span in labelled_spans(labels)]
        check_round_trip(r, [parse_reply(t[: -len(eot)]) for t in texts])


def test_tool_calls_with_json_string_arguments():
    call = {"id": "c0", "type": "function", "function": {"name": "retrieve", "arguments": '{"query": "Who founded Rome?"}'}}
    assert parse_reply("", [call]) == ToolCall("Who founded Rome?", "")


@pytest.mark.parametrize(
    "text, tool_calls",
    [
        ("", None),
        ("I think it is Paris.", None),
        ("Thought: the paragraph says nothing.", None),  # no Answer
        ("Thought: x\nAnswer:", None),  # empty Answer
        ("<tool_call>{not json}</tool_call>", None),
        ('<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>', None),  # another tool
        ('<tool_call>{"name": "retrieve", "arguments": {}}</tool_call>', None),  # no query
        ('<tool_call>{"name": "retrieve", "arguments": {"query": ""}}</tool_call>', None),
        ('<tool_call>["retrieve", "x"]</tool_call>', None),  # not an object
        ("", [{"function": {"name": "search", "arguments": {"query": "x"}}}]),
        ("", [{"function": {"name": "retrieve", "arguments": {"query": ""}}}]),
    ],
)
def test_bad_replies_are_none(text, tool_calls):
    assert parse_reply(text, tool_calls) is None


def test_a_call_with_unescaped_quotes_in_its_query_is_still_a_call():
    # a cpu-real fine-tuned SmolLM2 reply (HotpotQA dev): the question's quotes copied into the JSON unescaped
    text = (
        'Thought: first the song.\n<tool_call>{"name": "retrieve", "arguments": {"query": "Which Canadian rock band '
        'released a song called "Counterparts" and had a drummer in the Hall of Fame?"}}</tool_call>'
    )
    assert parse_reply(text) == ToolCall(
        'Which Canadian rock band released a song called "Counterparts" and had a drummer in the Hall of Fame?', "Thought: first the song."
    )
    # escaped where some are, not where others are: the escapes are undone
    assert parse_reply('<tool_call>{"name": "retrieve", "arguments": {"query": "the \\"A\\" and "B" films"}}</tool_call>') == ToolCall(
        'the "A" and "B" films', ""
    )
    # another tool, or no query, is still no call
    assert parse_reply('<tool_call>{"name": "search", "arguments": {"query": "a "b" c"}}</tool_call>') is None
