"""train_retriever: fine-tune the dense retriever on the filtered records' (query, paragraph) pairs with
BM25 and dense hard negatives (issue 14), switched by `retriever.finetune`
-> models/retriever (a SentenceTransformer folder + TUNED.json; switch off: only UNTUNED.json),
metrics/retrieval_tuning.json (pairs, eval overlap, mining, untuned vs tuned MRR@10, NDCG@10,
recall@1/2/5, all@2 on the held-out split and each eval source), metrics/timings/train_retriever.json.

Switch off, nothing is read: the folder's bytes depend on retrieve.model and revision only, so a
change upstream re-runs this stage but never `retrieve` or the evaluations."""

import time
from pathlib import Path

import typer

from qa_forge.core.cli import PARAMS, run
from qa_forge.core.io import UserError, check_outputs, load_section, read_records, write_json
from qa_forge.retrieval.retriever import RetrieveParams
from qa_forge.retrieval.tuning.run import RetrieverTuningParams, finetune_retriever, write_untuned


def main(
    params: Path = PARAMS,
    filtered: Path = typer.Option(Path("data/filtered/kept.jsonl"), help="the training records"),
    fetched: Path = typer.Option(Path("data/fetched"), help="folder with eval_<source>.jsonl (overlap and scoring)"),
    out: Path = typer.Option(Path("models/retriever")),
    metrics: Path = typer.Option(Path("metrics/retrieval_tuning.json")),
    timings: Path = typer.Option(Path("metrics/timings/train_retriever.json")),
):
    """Fine-tune the retriever (retriever.finetune) and score it against the untuned one."""
    p = load_section(params, "retriever", RetrieverTuningParams)
    rp = load_section(params, "retrieve", RetrieveParams)
    check_outputs(files=[metrics, timings], folders=[out])
    if not p.finetune:
        start = time.perf_counter()
        write_untuned(rp, out)
        write_json(metrics, {"finetune": False})
        write_json(timings, {"total_s": round(time.perf_counter() - start, 1)})
        print(f"train_retriever: retriever.finetune is off: retrieve and evaluate use {rp.model} as it is ({out}/UNTUNED.json)")
        return
    records = read_records(filtered)
    if not fetched.is_dir():
        raise UserError(f"{fetched}: folder not found (run the fetch stage first)")
    files = {f.stem.removeprefix("eval_"): f for f in sorted(fetched.glob("eval_*.jsonl"))}
    if not files:
        raise UserError(f"{fetched}: no eval_*.jsonl files (run the fetch stage first)")
    evals = {name: read_records(path) for name, path in files.items()}  # every file read before a model loads
    report, speed = finetune_retriever(p, rp, records, evals, out, source=str(filtered))
    write_json(metrics, report)
    write_json(timings, speed)
    pairs, t = report["pairs"], report["training"]
    print(
        f"train_retriever: {pairs['total']} pairs ({pairs['train']} train, {pairs['heldout']} held out, {pairs['dropped']} dropped), "
        f"{report['overlap']['pairs']} overlap the eval paragraphs; {t['rows']} rows, {t['steps']} steps, "
        f"loss {t['loss_first']} -> {t['loss_last']}; {speed['total_s']} s"
    )
    parts = [("held-out", report["heldout"]["all"])] + list(report["sources"].items())
    for name, row in parts:
        cols = "  ".join(
            f"{m} {row['untuned'][m]:.3f}->{row['tuned'][m]:.3f}" for m in ("mrr@10", "ndcg@10", "recall@2", "all@2") if m in row["untuned"]
        )
        print(f"train_retriever {name:12} n {row['untuned']['n']:5}  {cols}")


if __name__ == "__main__":
    run(main)
