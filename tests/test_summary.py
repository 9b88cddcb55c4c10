"""The summary stage: base vs fine-tuned per eval set with paired intervals, and the side-by-side
plot tables, from prediction files whose per-question scores are known."""

import csv
import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

# 10 HotpotQA questions: the base contains the gold on q0-q2, the fine-tuned model on q0-q5
BASE_RIGHT, TUNED_RIGHT = {0, 1, 2}, {0, 1, 2, 3, 4, 5}


def hotpot_rows(right: set[int]) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "question": f"Q{i}?",
            "gold": [f"A{i}"],
            "final_message": "x",
            "type": "bridge" if i < 7 else "comparison",
            "status": "answered" if i != 9 else "hop_cap",
            "retrieve_calls": 1 if i < 5 else 2,
            "containing_message": float(i in right),
            "recall_message": 1.0 if i in right else 0.5,
            "em": float(i in right and i < 2),
            "f1": float(i in right and i < 2),
        }
        for i in range(10)
    ]


def squad_rows(em: list[float]) -> list[dict]:
    # questions 0 and 1 have no answer
    return [
        {"id": f"s{i}", "question": "?", "gold": [] if i < 2 else ["x"], "final_message": "x", "status": "answered",
         "em": e, "f1": e, "no_answer": i < 2}
        for i, e in enumerate(em)
    ]  # fmt: skip


def write(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_summary(tmp_path):
    """stages/summary.py as dvc runs it, every path under tmp_path."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"bootstrap": 200, "seed": 0, "other": 1}}))
    (tmp_path / "compare.json").write_text('{"enabled": false}\n')
    args = ["--base", tmp_path / "base", "--finetuned", tmp_path / "tuned", "--judge", tmp_path / "compare.json"]
    args += ["--params", tmp_path / "params.yaml", "--out", tmp_path / "summary.json", "--plots", tmp_path / "plots"]
    cmd = [sys.executable, "-m", "qa_forge", "summary", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_summary_pairs_the_models_question_by_question(tmp_path):
    write(tmp_path / "base", "hotpotqa", hotpot_rows(BASE_RIGHT))
    write(tmp_path / "tuned", "hotpotqa", list(reversed(hotpot_rows(TUNED_RIGHT))))  # another order: paired by id
    write(tmp_path / "base", "squad_v2", squad_rows([1, 0, 1, 1, 0]))
    write(tmp_path / "tuned", "squad_v2", squad_rows([1, 1, 1, 0, 0]))
    proc = run_summary(tmp_path)
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    h = s["hotpotqa"]["containing_accuracy"]
    assert s["hotpotqa"]["n"] == 10 and h["base"]["value"] == 0.3 and h["finetuned"]["value"] == 0.6
    d = h["difference"]
    # 3 questions only the fine-tuned model gets, none only the base: +0.3, an interval above 0
    assert d["value"] == pytest.approx(0.3) and d["n"] == 10 and 0 < d["ci95_lo"] < 0.3 < d["ci95_hi"] <= 1
    # Wilson 3 of 10 for the base: [0.1078, 0.6032]
    assert (h["base"]["ci95_lo"], h["base"]["ci95_hi"]) == (pytest.approx(0.1078, abs=1e-4), pytest.approx(0.6032, abs=1e-4))
    assert set(s["hotpotqa"]) == {"n", "containing_accuracy", "recall", "em", "f1", "retrieve_calls", "coverage"}
    # calls 1 on q0-q4, 2 on q5-q9: mean 1.5 for both models; no row has coverage fields: n 0
    assert s["hotpotqa"]["retrieve_calls"]["base"]["value"] == 1.5 and s["hotpotqa"]["retrieve_calls"]["difference"]["value"] == 0
    assert s["hotpotqa"]["coverage"]["base"]["n"] == 0 and s["hotpotqa"]["coverage"]["difference"]["value"] is None
    # recall is not 0/1: a bootstrap of the paired differences (each +0.5 on q3-q5): mean 0.15
    assert s["hotpotqa"]["recall"]["difference"]["value"] == pytest.approx(0.15)
    sq = s["squad_v2"]
    assert sq["exact_match"]["base"]["value"] == 0.6 and sq["exact_match"]["finetuned"]["value"] == 0.6
    # abstention: EM on the two no-answer questions only (base 1 of 2, fine-tuned 2 of 2)
    ab = sq["abstention"]
    assert ab["base"]["value"] == 0.5 and ab["finetuned"]["value"] == 1.0 and ab["difference"]["n"] == 2
    # has_answer_em: EM on the three questions with an answer (base 2 of 3, fine-tuned 1 of 3)
    ha = sq["has_answer_em"]
    assert ha["base"]["value"] == pytest.approx(2 / 3, abs=1e-4) and ha["finetuned"]["value"] == pytest.approx(1 / 3, abs=1e-4)
    assert ha["difference"]["n"] == 3
    assert s["judge"] == {"enabled": False}
    # every score is plain numbers: nothing `dvc metrics diff` cannot compare
    assert "[" not in (tmp_path / "summary.json").read_text()

    by_type = read_csv(tmp_path / "plots/by_type.csv")
    assert [(r["model"], r["type"], r["n"], r["containing_accuracy"]) for r in by_type] == [
        ("base", "bridge", "7", "0.4286"),
        ("base", "comparison", "3", "0.0"),
        ("finetuned", "bridge", "7", "0.8571"),
        ("finetuned", "comparison", "3", "0.0"),
    ]
    assert all(float(r["ci95_lo"]) <= float(r["containing_accuracy"]) <= float(r["ci95_hi"]) for r in by_type)
    calls = read_csv(tmp_path / "plots/by_retrieve_calls.csv")
    assert [(r["model"], r["retrieve_calls"], r["n"]) for r in calls] == [
        ("base", "1", "5"),
        ("base", "2", "5"),
        ("finetuned", "1", "5"),
        ("finetuned", "2", "5"),
    ]
    ended = {(r["model"], r["label"]): int(r["count"]) for r in read_csv(tmp_path / "plots/outcomes.csv")}
    assert ended[("base", "hotpotqa answered")] == 9 and ended[("finetuned", "hotpotqa hop_cap")] == 1
    assert ended[("base", "squad_v2 unparsable")] == 0 and len(ended) == 2 * 2 * 4


def test_questions_that_differ_between_the_models_fail_clearly(tmp_path):
    write(tmp_path / "base", "hotpotqa", hotpot_rows(BASE_RIGHT))
    write(tmp_path / "tuned", "hotpotqa", hotpot_rows(TUNED_RIGHT)[:9])
    (tmp_path / "summary.json").write_text('{"old": true}\n')
    proc = run_summary(tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not for the same questions" in proc.stderr and "hotpotqa.jsonl" in proc.stderr
    assert (tmp_path / "summary.json").read_text() == '{"old": true}\n'


def test_a_row_without_its_score_is_named(tmp_path):
    rows = hotpot_rows(BASE_RIGHT)
    del rows[4]["containing_message"]
    write(tmp_path / "base", "hotpotqa", rows)
    write(tmp_path / "tuned", "hotpotqa", hotpot_rows(TUNED_RIGHT))
    proc = run_summary(tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "record q4" in proc.stderr and "containing_message" in proc.stderr
