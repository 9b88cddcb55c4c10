import json

import pytest

from qa_forge.core.io import UserError, read_records, write_records
from qa_forge.core.records import Origin, Record, SubQuestion


def make() -> Record:
    return Record(
        id="x-1",
        src="musique",
        question="Where was the author of Dune born?",
        multihop=True,
        sub_questions=[
            SubQuestion(
                question="Who wrote Dune?",
                paragraph="Dune is a novel by Frank Herbert.",
                short_answer="Frank Herbert",
                thought="The paragraph names the author.",
                answer="Dune was written by Frank Herbert.",
                answer_origin=Origin(kind="samples"),
            ),
            SubQuestion(
                question="Where was Frank Herbert born?",
                paragraph="Frank Herbert was born in Tacoma.",
                short_answer="Tacoma",
                answer="He was born in Tacoma.",
                answer_origin=Origin(kind="model", model="m", temperature=0.9),
            ),
        ],
        final_answer="Tacoma.",
        short_answer="Tacoma",
    )


def test_roundtrip(tmp_path):
    path = tmp_path / "r.jsonl"
    assert write_records(path, [make(), make().model_copy(update={"id": "x-2"})]) == 2
    back = read_records(path)
    assert [r.id for r in back] == ["x-1", "x-2"]
    assert back[0] == make()
    assert back[0].sub_questions[1].answer_origin.is_hot()
    assert not back[0].sub_questions[0].answer_origin.is_hot()
    assert back[0].answerable


def test_bad_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "r.jsonl"
    good = make().model_dump()
    bad = dict(good, sub_questions=[{"question": 3}])
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=r"r\.jsonl:2: field 'sub_questions\.0\.question'"):
        read_records(path)


def test_unknown_field_rejected():
    with pytest.raises(Exception, match="extra"):
        Record.model_validate(dict(make().model_dump(), answer="x"))


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "r.jsonl"

    def records():
        yield make()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_records(path, records())
    assert list(tmp_path.iterdir()) == []
