"""`qa-forge report`: the pure pieces against hand-worked examples, the git layer in a throwaway
repo, and (slow) the report on two real runs of the tiny pipeline in a clone of the DAG run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qa_forge.core.io import UserError
from qa_forge.report import diff, git, mermaid, plots, render
from qa_forge.report.diff import MISSING, Change
from qa_forge.report.render import Side
from tests import dag as pipeline

BIN = Path(sys.executable).parent


def I(value, lo, hi, n=20):
    return {"value": value, "n": n, "ci95_lo": lo, "ci95_hi": hi}


def summary(ft_acc=None, judge=None):
    ft_acc = ft_acc or I(0.5, 0.3, 0.7)
    return {
        "hotpotqa": {
            "n": 20,
            "containing_accuracy": {"base": I(0.35, 0.18, 0.57), "finetuned": ft_acc, "difference": I(0.15, -0.05, 0.35)},
            "f1": {"base": I(0.1, 0.05, 0.2), "finetuned": I(0.3, 0.2, 0.4), "difference": I(0.2, 0.1, 0.3)},
        },
        "squad_v2": {"n": 20, "abstention": {"base": I(0.8, 0.6, 0.9), "finetuned": I(0.4, 0.2, 0.6), "difference": I(-0.4, -0.6, -0.2)}},
        "judge": judge or {"enabled": False},
    }


# --- params diff -------------------------------------------------------------------------------


def test_flatten_dotted_keys_lists_are_leaves():
    tree = {"train": {"lr": 1e-4, "lora": {"r": 8, "targets": ["q", "v"]}}, "pack": {}, "seed": 0}
    assert diff.flatten(tree) == {"train.lr": 1e-4, "train.lora.r": 8, "train.lora.targets": ["q", "v"], "pack": {}, "seed": 0}


def test_params_diff_changed_added_removed_only():
    old = {"train": {"learning_rate": 1e-4, "epochs": 1, "bf16": True}, "llm": {"model": "m", "n": 2}, "pack": {"max_length": 512}}
    new = {"train": {"learning_rate": 5e-4, "epochs": 1.0, "bf16": 1, "shuffle": True}, "llm": {"model": "m", "n": 2}}
    assert diff.params_diff(old, new) == [
        Change("train.learning_rate", 1e-4, 5e-4),
        Change("train.bf16", True, 1),  # a bool turned number is a change; 1 -> 1.0 is not
        Change("train.shuffle", MISSING, True),
        Change("pack.max_length", 512, MISSING),
    ]
    assert diff.params_diff(new, new) == []
    assert diff.params_diff(None, {"a": {"b": 1}}) == [Change("a.b", MISSING, 1)]


def test_numbers_diff_numbers_only_like_dvc_metrics_diff():
    old = {"metrics/a.json": {"n": 20, "acc": {"value": 0.5, "ci95_lo": 0.3}, "ks": [1, 2], "name": "x", "ok": True}}
    new = {
        "metrics/a.json": {"n": 20, "acc": {"value": 0.55, "ci95_lo": 0.3}, "ks": [1, 5], "name": "y", "ok": False},
        "metrics/b.json": {"seconds": 3},
    }
    assert diff.numbers_diff(old, new) == [
        diff.NumberChange("metrics/a.json", "acc.value", 0.5, 0.55),
        diff.NumberChange("metrics/b.json", "seconds", MISSING, 3),
    ]


# --- summary.json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "new, expected",
    [
        (I(0.45, 0.25, 0.65), ""),  # inside REV's [0.3, 0.7]
        (I(0.3, 0.12, 0.5), ""),  # on REV's lower bound: not below it
        (I(0.25, 0.1, 0.45), diff.DROP),  # 0.25 < 0.3, but this run's interval reaches 0.45 > 0.3
        (I(0.1, 0.02, 0.28), diff.DROP_DISJOINT),  # this run's whole interval [0.02, 0.28] is below 0.3
        (I(0.75, 0.55, 0.9), diff.RISE),
        (I(0.95, 0.76, 0.99), diff.RISE_DISJOINT),
        (I(None, None, None, n=0), ""),
    ],
)
def test_flag_against_revs_interval(new, expected):
    assert diff.flag(I(0.5, 0.3, 0.7), new) == expected


def test_flag_needs_both_sides():
    assert diff.flag(None, I(0.1, 0.0, 0.2)) == ""
    assert diff.flag(I(0.5, None, None), I(0.1, 0.0, 0.2)) == ""


@pytest.mark.parametrize(
    "lo, hi, expected",
    [(0.05, 0.3, diff.BETTER), (-0.3, -0.01, diff.WORSE), (-0.1, 0.2, diff.UNCLEAR), (0.0, 0.2, diff.UNCLEAR), (None, None, "")],
)
def test_verdict_whether_the_paired_interval_excludes_zero(lo, hi, expected):
    assert diff.verdict(I(0.1, lo, hi)) == expected


def test_groups_are_data_and_the_judge_off_is_kept():
    gs = diff.groups(summary())
    assert [(g.name, g.n, g.enabled, list(g.scores)) for g in gs] == [
        ("hotpotqa", 20, None, ["containing_accuracy", "f1"]),
        ("squad_v2", 20, None, ["abstention"]),
        ("judge", None, False, []),
    ]


def test_groups_judge_on_flat_or_per_set():
    flat = {"enabled": True, "accuracy": {"base": I(0.4, 0.2, 0.6), "finetuned": I(0.6, 0.4, 0.8)}, "win_rate": I(0.7, 0.5, 0.85)}
    nested = {"enabled": True, "hotpotqa": {"accuracy": flat["accuracy"], "win_rate": flat["win_rate"]}}
    assert [(g.name, list(g.scores)) for g in diff.groups({"judge": flat})] == [("judge", ["accuracy", "win_rate"])]
    assert [(g.name, list(g.scores)) for g in diff.groups({"judge": nested})] == [
        ("judge", []),
        ("judge · hotpotqa", ["accuracy", "win_rate"]),
    ]
    # the win rate, one interval, counts as the fine-tuned value
    assert diff.parts(flat["win_rate"]) == (None, flat["win_rate"], None)


def test_summary_diff_rows_flags_and_changes():
    old, new = summary(), summary(ft_acc=I(0.2, 0.08, 0.42))
    rows = {(r.group, r.metric): r for r in diff.summary_diff(old, new)}
    acc = rows[("hotpotqa", "containing_accuracy")]
    assert acc.finetuned == (I(0.5, 0.3, 0.7), I(0.2, 0.08, 0.42)) and acc.flag == diff.DROP and acc.changed
    assert not rows[("hotpotqa", "f1")].changed and rows[("hotpotqa", "f1")].flag == ""
    # REV without summary.json: every score is there, none flagged
    assert {r.flag for r in diff.summary_diff(None, new)} == {""}
    assert all(r.finetuned[0] is None for r in diff.summary_diff(None, new))
    assert not any(r.changed for r in diff.summary_diff(new, json.loads(json.dumps(new))))


# --- Mermaid -----------------------------------------------------------------------------------

# mermaid's xychart.jison: a data value, a quoted text (no escapes, not empty, no backtick first,
# no %% first: its comment rule [^}]%% would take the opening quote)
NUMBER = r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)"
TEXT = r'"(?!%%)[^"`\n][^"\n]*"'


def check_chart(block: str) -> None:
    """Every line of a chart as mermaid's xychart grammar reads it (the forms this package writes)."""
    lines = block.splitlines()
    assert lines[0] == "```mermaid" and lines[1] == "xychart-beta" and lines[-1] == "```"
    categories = None
    for line in (x.strip() for x in lines[2:-1]):
        if line.startswith("title "):
            assert re.fullmatch(rf"title {TEXT}", line), line
        elif line.startswith("x-axis "):
            m = re.fullmatch(rf"x-axis (?:{TEXT} )?\[({TEXT}(?:, {TEXT})*)\]", line)
            assert m, line
            categories = re.findall(TEXT, m.group(1))
        elif line.startswith("y-axis "):
            assert re.fullmatch(rf"y-axis (?:{TEXT})?(?: ?{NUMBER} --> {NUMBER})?", line), line
        else:
            m = re.fullmatch(rf"(?:bar|line) {TEXT} \[({NUMBER}(?:, {NUMBER})*)\]", line)
            assert m, line
            assert categories is not None and len(m.group(1).split(", ")) == len(categories), line


def test_label_quotes_what_the_grammar_cannot_escape():
    assert mermaid.label("bridge") == '"bridge"'
    assert mermaid.label('say "hi"') == "\"say 'hi'\""  # a string has no escape: " becomes '
    assert mermaid.label("`md`") == "\"'md'\""  # "` opens a Markdown string (and ``` would end the fence)
    assert mermaid.label("") == '"(none)"'  # "" is no string token
    assert mermaid.label("two\nlines\t x") == '"two lines x"'
    assert mermaid.label(3) == '"3"'
    assert mermaid.label("%%x 100%%") == '"% %x 100% %"'  # "%% would open a comment


def test_number_fixed_notation():
    assert mermaid.number(0.123456) == "0.1235"
    assert mermaid.number(2.0) == "2"
    assert mermaid.number(1e-5) == "0"  # str() would write 1e-05, which the grammar has no token for
    assert mermaid.number(-1e-9) == "0"
    assert mermaid.number(-3.5) == "-3.5"
    assert mermaid.number(12345678.0) == "12345678"
    with pytest.raises(ValueError):
        mermaid.number(float("nan"))


def test_xychart_one_value_per_category():
    block = mermaid.xychart(
        'Accuracy by "type"',
        ["bridge", "comparison", ""],
        [mermaid.Series("bar", "fine-tuned", [0.5, 1, 0.25]), mermaid.Series("line", "base", [0.1, 0.2, 1e-7])],
        x_title="question type",
        y_title="accuracy",
        y_range=(0, 1),
    )
    check_chart(block)
    assert block.splitlines()[2:-1] == [
        "    title \"Accuracy by 'type'\"",
        '    x-axis "question type" ["bridge", "comparison", "(none)"]',
        '    y-axis "accuracy" 0 --> 1',
        '    bar "fine-tuned" [0.5, 1, 0.25]',
        '    line "base" [0.1, 0.2, 0]',
    ]
    with pytest.raises(ValueError):
        mermaid.xychart("t", ["a", "b"], [mermaid.Series("bar", "x", [1.0])])
    with pytest.raises(ValueError):
        mermaid.xychart("t", [], [])


# --- plot tables -------------------------------------------------------------------------------

BY_CALLS = """model,retrieve_calls,n,containing_accuracy,ci95_lo,ci95_hi
base,10,2,0.5,0.09,0.91
base,2,5,0.2,0.04,0.62
finetuned,2,6,0.5,0.19,0.81
finetuned,1,14,0.75,,
"""


def test_grouped_natural_order_and_missing_cells():
    g = plots.grouped(plots.rows(BY_CALLS), "retrieve_calls")
    assert g.groups == ["1", "2", "10"]  # numbers in numeric order, not "1", "10", "2"
    assert g.values("base", "containing_accuracy") == [None, 0.2, 0.5]
    assert g.values("finetuned", "containing_accuracy") == [0.75, 0.5, None]
    assert plots.natural(["multi", "bridge"]) == ["multi", "bridge"]  # text keeps the file's order


def test_loss_train_mean_between_eval_points():
    train = [{"step": str(s), "loss": str(v)} for s, v in [(1, 3.0), (2, 2.0), (3, 1.0), (4, 0.9), (5, 0.7), (6, 0.5), (7, 0.4)]]
    evals = [{"step": "3", "loss": "1.5"}, {"step": "6", "loss": "1.2"}]
    lo = plots.loss(train, evals)
    # steps 1-3 -> (3 + 2 + 1) / 3 = 2.0; steps 4-6 -> (0.9 + 0.7 + 0.5) / 3 = 0.7; step 7 follows the last eval point
    assert lo.steps == ["3", "6"] and lo.train == pytest.approx([2.0, 0.7]) and lo.eval == [1.5, 1.2]
    only = plots.loss(train, [], max_points=3)
    # 7 steps in at most 3 points: chunks of ceil(7 / 3) = 3 -> steps 1-3, 4-6, 7
    assert only.steps == ["3", "6", "7"] and only.train == pytest.approx([2.0, 0.7, 0.4]) and only.eval is None
    assert plots.loss([], []) is None


def test_recall_at_k_per_source():
    table = plots.rows("source,k,recall,all\nhotpotqa,5,1.0,1.0\nhotpotqa,1,0.5,0.0\nsquad_v2,1,1.0,1.0\n")
    assert plots.recall_at_k(table) == [
        plots.Recall("hotpotqa", ["1", "5"], [0.5, 1.0], [0.0, 1.0]),
        plots.Recall("squad_v2", ["1"], [1.0], [1.0]),
    ]
    wide = plots.rows("k,hotpotqa,squad_v2\n5,1.0,1.0\n1,0.5,\n2,0.875,1.0\n")  # as retrieve writes it
    assert plots.recall_at_k(wide) == [
        plots.Recall("hotpotqa", ["1", "2", "5"], [0.5, 0.875, 1.0], None),
        plots.Recall("squad_v2", ["1", "2", "5"], [None, 1.0, 1.0], None),
    ]
    assert plots.recall_at_k([]) == []


def test_outcome_counts():
    keys, counts = plots.outcome_counts(
        plots.rows("model,eval_set,outcome,count\nbase,hotpotqa,answered,1\nfinetuned,hotpotqa,answered,18\n")
    )
    assert keys == [("hotpotqa", "answered")] and counts == {
        "base": {("hotpotqa", "answered"): 1},
        "finetuned": {("hotpotqa", "answered"): 18},
    }


# --- Markdown ----------------------------------------------------------------------------------


def test_markdown_cells():
    assert render.cell("a | b\nc") == "a \\| b c"
    assert render.code("x`y") == "`` x`y ``"
    assert render.code(MISSING) == "—"
    assert render.code(["q", "v"]) == '`["q", "v"]`'
    assert render.interval(I(0.35, 0.1812, 0.5671)) == "0.350 [0.181, 0.567]"
    assert render.interval(I(None, None, None, n=0)) == "—"


def side(label, params=None, summary_=None, extra=None):
    files = dict(extra or {})
    if params is not None:
        files["params.yaml"] = params
    if summary_ is not None:
        files["metrics/summary.json"] = json.dumps(summary_)
    return Side(label, files)


PLOTS = {
    plots.BY_TYPE: "model,type,n,containing_accuracy,ci95_lo,ci95_hi\nbase,bridge,14,0.1429,0.04,0.4\nfinetuned,bridge,14,0.5,0.27,0.73\n"
    'base,"com""par|ison",6,0.8333,0.44,0.97\nfinetuned,"com""par|ison",6,1.0,0.61,1.0\n',
    plots.BY_RETRIEVE_CALLS: BY_CALLS,
    plots.RECALL_AT_K: "k,hotpotqa,squad_v2\n1,0.5,1.0\n2,0.875,1.0\n",
    plots.TRAIN_LOSS: "step\tloss\n1\t1.0\n2\t0.8\n",
    plots.OUTCOMES: "model,eval_set,outcome,count\nbase,hotpotqa,unparsable,19\nfinetuned,hotpotqa,unparsable,0\n",
}


def test_report_sections():
    rev = side("`aaaaaaa`", "train:\n  learning_rate: 0.0001\n", summary(), {"metrics/train/metrics.json": '{"loss": 0.5}'})
    this = side(
        "the working tree",
        "train:\n  learning_rate: 0.0005\n",
        summary(ft_acc=I(0.1, 0.02, 0.28)),
        {**PLOTS, "metrics/train/metrics.json": '{"loss": 0.4}'},
    )
    md = render.report(rev, this)
    assert "| `train.learning_rate` | `0.0001` | `0.0005` |" in md
    assert "1 of 3 scores changed, 1 flagged as a drop." in md
    assert "> params: 1 changed · scores: 1 changed, 1 flagged as a drop · other metric numbers: 1 changed" in md
    row = next(line for line in md.splitlines() if "**containing_accuracy**" in line and "⚠" in line)
    assert "0.500 [0.300, 0.700]" in row and "0.100 [0.020, 0.280]" in row and "-0.400" in row and "⚠⚠ below REV, disjoint" in row
    assert "This run: judge off" in md and "REV: judge off" in md
    # base vs fine-tuned: squad_v2 abstention's paired interval [-0.6, -0.2] is below 0
    assert re.search(r"squad_v2 · \*\*abstention\*\* .*\[-0.600, -0.200\] \| ▼ fine-tuned worse", md)
    assert re.search(r"hotpotqa · \*\*containing_accuracy\*\* .*≈ includes 0", md)
    blocks = re.findall(r"```mermaid\n.*?```", md, flags=re.DOTALL)
    assert len(blocks) == 5  # by type, by retrieve calls, loss, recall@k of hotpotqa and of squad_v2
    for b in blocks:
        check_chart(b)
    assert '["bridge", "com\'par|ison"]' in md  # a label's quote replaced, its pipe left alone inside the chart
    assert "| com'par\\|ison |" not in md and '| com"par\\|ison |' in md  # ... and escaped in the table
    assert "| `metrics/train/metrics.json` | `loss` | 0.5 | 0.4 | -0.1 |" in md
    assert "Not in this run: " not in md.split("### Plots")[1].split("###")[0].replace("`metrics/train", "")  # every plot file given


def test_report_rev_without_summary_and_nothing_changed():
    this = side("w", "a: 1\n", summary())
    md = render.report(side("r", "a: 1\n"), this)
    assert "REV has no `metrics/summary.json`" in md and "No param changed." in md
    assert "> params: 0 changed · scores: none in REV to compare with · other metric numbers: 0 changed" in md
    assert "0.500 [0.300, 0.700]" in md  # this run's scores still listed
    same = render.report(this, this)
    assert "No score changed." in same and "No other metric number changed." in same


def test_report_caps_the_other_metrics():
    many = {"metrics/big.json": json.dumps({f"k{i}": i for i in range(render.MAX_NUMBERS + 5)})}
    md = render.report(side("r", "a: 1\n"), side("w", "a: 1\n", extra=many))
    assert "… and 5 more changed numbers" in md
    assert md.count("| `metrics/big.json` |") == render.MAX_NUMBERS


# --- git ---------------------------------------------------------------------------------------


def sh(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "r"
    (r / "metrics" / "timings").mkdir(parents=True)
    (r / "params.yaml").write_text("train:\n  learning_rate: 0.0001\n")
    (r / "metrics" / "summary.json").write_text(json.dumps(summary()))
    (r / "metrics" / "timings" / "train.json").write_text('{"seconds": 1}')
    (r / "metrics" / "eval.json").write_text('{"acc": 0.5}')
    (r / ".gitignore").write_text("/ignored.json\n/metrics/skip.json\n")
    sh(tmp_path, "init", "-q", "r")
    sh(r, "add", "-A")
    sh(r, "commit", "-qm", "first run")
    return r


def test_git_sides_read_only_the_reports_files(repo):
    sha = git.resolve(repo, "HEAD")
    assert sorted(git.at_rev(repo, sha)) == ["metrics/eval.json", "metrics/summary.json", "params.yaml"]
    (repo / "metrics" / "eval.json").write_text('{"acc": 0.6}')  # changed, not committed
    (repo / "metrics" / "new.json").write_text("{}")  # untracked: git would track it
    (repo / "metrics" / "skip.json").write_text("{}")  # ignored
    wt = git.worktree(repo)
    assert sorted(wt) == ["metrics/eval.json", "metrics/new.json", "metrics/summary.json", "params.yaml"]
    assert wt["metrics/eval.json"] == '{"acc": 0.6}' and git.at_rev(repo, sha)["metrics/eval.json"] == '{"acc": 0.5}'
    assert git.default_base(repo) == sha  # no origin/main: HEAD
    with pytest.raises(UserError, match="no such commit"):
        git.resolve(repo, "nope")


def test_cli_report_on_a_repo(repo):
    first = git.resolve(repo, "HEAD")
    (repo / "params.yaml").write_text("train:\n  learning_rate: 0.0005\n")
    proc = subprocess.run([str(BIN / "qa-forge"), "report", "--base", first], cwd=repo, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "`train.learning_rate`" in proc.stdout and "No score changed." in proc.stdout
    sh(repo, "commit", "-qam", "lr")
    proc = subprocess.run(
        [str(BIN / "qa-forge"), "report", "--base", "HEAD~1", "--rev", "HEAD", "--out", "out/report.md"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "`train.learning_rate`" in (repo / "out" / "report.md").read_text()
    proc = subprocess.run([str(BIN / "qa-forge"), "report", "--base", "nope"], cwd=repo, capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: --base/--rev 'nope': no such commit")


# --- two real runs (slow) ----------------------------------------------------------------------


def qa_forge_report(repo: Path, *args: str) -> str:
    proc = subprocess.run([str(BIN / "qa-forge"), "report", *args], cwd=repo, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def section(md: str, title: str) -> str:
    return md.split(f"### {title}", 1)[1].split("\n### ", 1)[0]


@pytest.mark.slow
def test_report_on_two_real_runs(dag, tmp_path):
    """In a clone of the tiny DAG's committed first run (REV): a train param changed and reproduced
    gives a params diff, a summary diff with intervals and charts with data; then a forced re-run
    that changes only timings gives an empty `dvc metrics diff` and no score change."""
    repo = pipeline.clone_run(dag, tmp_path / "clone")
    first = pipeline.git(repo, "rev-parse", "HEAD").strip()
    pipeline.set_param(repo, "train.learning_rate", 5e-4)
    pipeline.dvc(repo, "repro")
    md = qa_forge_report(repo, "--base", first)

    params = section(md, "Params")
    assert re.search(r"\| `train\.learning_rate` \| `[0-9.e-]+` \| `0\.0005` \|", params), params
    assert params.count("\n| `") == 1  # the one param changed
    scores = section(md, "Scores: this run vs REV")
    ival = r"-?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]"
    # eval set · score | n | base | fine-tuned, REV | fine-tuned, this run | change | flag
    assert re.search(rf"\| hotpotqa · \*\*\w+\*\* \| \d+ \| {ival} \| {ival} \| {ival} \| (=|[+-]\d\.\d{{3}}) \|", scores), scores
    assert re.search(rf"\| squad_v2 · \*\*\w+\*\* \| \d+ \| {ival} \|", scores), scores
    assert "REV has no" not in scores and "⚠ below REV = " in scores  # the legend
    assert re.search(
        rf"\| hotpotqa · \*\*\w+\*\* \| \d+ \| {ival} \| {ival} \| -?\d\.\d{{3}} \[", section(md, "Base vs fine-tuned (this run)")
    )
    charts = re.findall(r"```mermaid\n.*?```", section(md, "Plots (this run)"), flags=re.DOTALL)
    titles = [re.search(r'title "(.*)"', c).group(1) for c in charts]
    assert titles[:3] == ["Containing accuracy by question type", "Containing accuracy by retrieve calls", "Train vs eval loss"], titles
    assert any(t.startswith("Retrieval recall@k: ") for t in titles), titles
    for c in charts:
        check_chart(c)
        assert re.search(r"(bar|line) \"[^\"]+\" \[[^\]]+\]", c), c

    # a run that changes only timings: evaluate@base again, its scores and predictions the same
    pipeline.git(repo, "add", "-A")
    pipeline.git(repo, "commit", "-qm", "train.learning_rate 5e-4")
    pipeline.dvc(repo, "repro", "-f", "-s", "evaluate@base")
    changed = json.loads(pipeline.dvc(repo, "metrics", "diff", "--json").stdout or "{}")
    assert not any(changed.values()), changed
    md = qa_forge_report(repo, "--base", "HEAD")
    assert "No param changed." in md and "No score changed." in md and "No other metric number changed." in md, md
