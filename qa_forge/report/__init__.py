"""The pull-request report: this run against a git revision, read only from git-tracked files
(params.yaml, metrics/*.json, the plot tables), so it needs no DVC remote and no credentials.

    git.py      the two sides' files: a revision (`git show REV:path`) or the working tree
    diff.py     params diff, metric numbers diff, summary.json scores and their flags
    mermaid.py  Mermaid `xychart-beta` charts, labels and numbers quoted for its grammar
    plots.py    the plot tables (CSV / dvclive TSV) as chart series
    render.py   the Markdown
    cli.py      `qa-forge report`

Nothing here imports torch, transformers or DVC: the report runs in a bare Python with the
package installed without its dependencies (`pip install --no-deps -e .`) plus pyyaml, typer and
pydantic (what `qa-forge`'s command runner loads).
"""
