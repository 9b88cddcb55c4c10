"""Writing answers with an LLM: sub-questions for bare paragraphs, hop answers, and the multi-hop
summary / thought / final answer. Shared by generate (generator 3, grounded on gold answers)
and regenerate (temperature 0 over answers written hot)."""

from __future__ import annotations

from collections.abc import Callable

from qa_forge.core.prompts import fill, parse_fields, require, short_or_none, user
from qa_forge.core.records import Origin, Record, SubQuestion
from qa_forge.llm.llm import LLM, Request

# Which prompt answers a hop: (record, hop) -> prompt name.
PromptPicker = Callable[[Record, SubQuestion], str]


def gold_prompt(r: Record, sq: SubQuestion) -> str:
    """Generator 3: prompts grounded on the source's short answer."""
    if sq.unanswerable:
        return "answer_unanswerable"
    if r.src == "boolq":
        return "answer_boolq"
    if r.src == "drop":
        return "answer_drop"
    return "answer_gold" if sq.short_answer else "answer"


def plain_prompt(r: Record, sq: SubQuestion) -> str:
    """Regenerate: answer from the paragraph alone, no gold answer."""
    return "answer"


def note_error(r: Record, message: str) -> None:
    r.meta.setdefault("errors", []).append(message)


def write_sub_questions(llm: LLM, records: list[Record], max_tokens: int, desc: str) -> None:
    """Hops with a paragraph but no question (HotpotQA, 2Wiki): ask which simple question it answers."""
    todo = [(r, sq) for r in records for sq in r.sub_questions if not sq.question.strip()]
    reqs = [
        Request.chat(
            user(fill("sub_question", question=r.question, short_answer=r.short_answer or "", paragraph=sq.paragraph)), 0.0, max_tokens
        )
        for r, sq in todo
    ]
    for (r, sq), resp in zip(todo, llm.complete(reqs, desc=desc)):
        fields = parse_fields(resp.text, ["Question"])
        if fields.get("Question"):
            sq.question = fields["Question"]
        else:
            note_error(r, "sub_question: " + ", ".join(resp.problems() or ["missing 'Question'"]))


def answer_hops(
    llm: LLM, records: list[Record], needs: Callable[[SubQuestion], bool], pick: PromptPicker, origin: Origin, max_tokens: int, desc: str
) -> None:
    """Answer every hop for which `needs(hop)` holds, with the prompt `pick` chooses, at origin.temperature."""
    todo = [(r, k, sq) for r in records for k, sq in enumerate(r.sub_questions) if sq.question.strip() and needs(sq)]
    reqs = []
    for r, _, sq in todo:
        prompt = fill(pick(r, sq), paragraph=sq.paragraph, question=sq.question, short_answer=sq.short_answer or "")
        reqs.append(Request.chat(user(prompt), origin.temperature or 0.0, max_tokens))
    for (r, k, sq), resp in zip(todo, llm.complete(reqs, desc=desc)):
        fields = parse_fields(resp.text, ["Thought", "Answer", "Short answer"])
        errors = resp.problems() or require(fields, ["Answer"])
        if errors:
            note_error(r, f"sub_questions[{k}]: " + ", ".join(errors))
            continue
        sq.thought, sq.answer, sq.answer_origin = fields.get("Thought", ""), fields["Answer"], origin
        if pick(r, sq) == "answer":  # no gold: the model's own short answer, or an abstention
            sq.short_answer = short_or_none(fields.get("Short answer"))
            sq.unanswerable = sq.short_answer is None


def steps_text(r: Record) -> str:
    return "\n".join(f"Question {k}: {sq.question}\nAnswer {k}: {sq.answer}" for k, sq in enumerate(r.sub_questions, 1))


def write_finals(llm: LLM, records: list[Record], needs: Callable[[Record], bool], origin: Origin, max_tokens: int, desc: str) -> None:
    """Summary, thought and final answer of multi-hop records from their hop answers; single-hop
    records take their hop's answer. A gold short answer (records with meta.answers) is kept."""
    todo = []
    for r in records:
        if not needs(r) or any(not sq.answer for sq in r.sub_questions):
            continue
        if not r.multihop:
            sq = r.sub_questions[0]
            r.final_answer, r.final_origin = sq.answer, sq.answer_origin
            if "answers" not in r.meta:
                r.short_answer = sq.short_answer
            continue
        todo.append(r)
    reqs = [
        Request.chat(user(fill("final_answer", question=r.question, steps=steps_text(r))), origin.temperature or 0.0, max_tokens)
        for r in todo
    ]
    for r, resp in zip(todo, llm.complete(reqs, desc=desc)):
        fields = parse_fields(resp.text, ["Summary", "Thought", "Answer", "Short answer"])
        errors = resp.problems() or require(fields, ["Summary", "Answer"])
        if errors:
            note_error(r, "final: " + ", ".join(errors))
            continue
        r.summary, r.final_thought, r.final_answer, r.final_origin = fields["Summary"], fields.get("Thought", ""), fields["Answer"], origin
        if "answers" not in r.meta:
            r.short_answer = short_or_none(fields.get("Short answer"))
