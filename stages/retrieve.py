"""retrieve: embed the eval sets' paragraphs and score the retriever alone (recall@k, all@k, MRR)
-> data/retrieval/<source>.jsonl, metrics/retrieval.json, metrics/plots/recall_at_k.csv (recall@k and
all@k per source and k, for `dvc plots`). With retriever.finetune on, metrics/retrieval.json also holds
train_retriever's untuned vs tuned scores side by side (`tuning`), so `dvc metrics diff` shows both."""

import csv
from pathlib import Path
from typing import Annotated

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import UserError, atomic_path, check_outputs, load_section, read_json, write_json, write_jsonl_dir
from qa_forge.core.paths import cache_path
from qa_forge.retrieval.retriever import TUNED_RETRIEVER, RetrieveParams, effective_retriever
from qa_forge.retrieval.score import score_files


def main(
    params: Path = PARAMS,
    fetched: Path = typer.Option(Path("data/fetched"), help="folder with eval_<source>.jsonl"),
    out: Path = typer.Option(Path("data/retrieval")),
    metrics: Path = typer.Option(Path("metrics/retrieval.json")),
    limit: int = typer.Option(None, help="score only the first N questions of each eval file"),
    plot: Path = typer.Option(Path("metrics/plots/recall_at_k.csv"), help="recall@k per source and k"),
    # Annotated: a direct call main(...) (tests) gets the Path default, not typer's OptionInfo
    tuned_retriever: Annotated[Path, typer.Option(help="train_retriever's folder: its tuned model, if it holds one")] = TUNED_RETRIEVER,
    tuning: Annotated[Path, typer.Option(help="train_retriever's metrics: untuned vs tuned, copied in when it tuned")] = Path(
        "metrics/retrieval_tuning.json"
    ),
):
    """Score the retriever alone: recall@k, all@k and MRR of the supporting paragraphs."""
    p = effective_retriever(load_section(params, "retrieve", RetrieveParams), tuned_retriever)
    check_outputs(files=[metrics, plot], folders=[out])
    if not fetched.is_dir():
        raise UserError(f"{fetched}: folder not found (run the fetch stage first)")
    files = {f.stem.removeprefix("eval_"): f for f in sorted(fetched.glob("eval_*.jsonl"))}
    if not files:
        raise UserError(f"{fetched}: no eval_*.jsonl files (run the fetch stage first)")
    report, outputs, embedded = score_files(p, files, limit=limit)
    report.update(tuning_side_by_side(tuning))
    write_jsonl_dir(out, outputs)
    write_json(metrics, report)
    with atomic_path(plot) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(recall_rows(report, p.ks))
    for name, row in report["sources"].items():
        q = row.get("question", {})
        cols = "  ".join(f"{m} {q[m]:.3f}" for m in q if q[m] is not None and (m.startswith("recall@") or m == "mrr"))
        sub = row.get("sub_questions", {})
        print(f"retrieve {p.scope:8} {name:12} n {row['n']:5}  {cols}  sub-questions n {sub.get('n', 0)}")
    print(f"retrieve embedded {embedded} texts with {report['model']} (the rest came from {cache_path(p.cache_dir)})")


def tuning_side_by_side(path: Path) -> dict:
    """{"tuning": MRR@10, NDCG@10, recall@k and all@2 of the untuned and the tuned retriever on the held-out
    pairs and each eval source} from train_retriever's metrics when it tuned; {} when the switch is off."""
    m = read_json(path) if path.is_file() else {}
    if not m.get("finetune"):
        return {}
    return {"tuning": {"model": m["model"], "heldout": m["heldout"], "sources": m["sources"]}}


def recall_rows(report: dict, ks: list[int]) -> list[list]:
    """[header, rows]: question-level recall@k, one row per k and one column per source (wide, so
    that `dvc plots` draws one line per source)."""
    names = [n for n, row in report["sources"].items() if row.get("question")]
    rows: list[list] = [["k", *names]]
    rows += [[k, *(report["sources"][n]["question"].get(f"recall@{k}") for n in names)] for k in ks]
    return rows


if __name__ == "__main__":
    run(main)
