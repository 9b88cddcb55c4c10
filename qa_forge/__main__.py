"""`qa-forge COMMAND [ARGS]`: one command for the project's DVC stages and for `ask`.

A stage is a script in the project's `stages/` folder (the current folder's, as `dvc repro` runs
it): `qa-forge fetch --out data/fetched` runs `stages/fetch.py`, and only the modules that stage
imports are loaded, which keeps each stage's code deps exact. `ask` (questions over your files) and `profile` (compose params.yaml) are part of the library,
and so is `report` (this run against a git revision, as Markdown for a pull request).
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

STAGES = Path("stages")


def _ask():
    from qa_forge.eval.ask import main

    return main


def _profile():
    from qa_forge.core.profiles import main

    return main


def _served_name():
    from qa_forge.eval.serve import main

    return main


def _report():
    from qa_forge.report.cli import main

    return main


# commands of the library itself (imported only when called: each stage loads only its own modules)
LIBRARY_COMMANDS = {"ask": _ask, "profile": _profile, "served-name": _served_name, "report": _report}


def stage_scripts() -> dict[str, Path]:
    """Command name (dashes for underscores) -> script, for every stages/*.py."""
    return {p.stem.replace("_", "-"): p for p in sorted(STAGES.glob("*.py")) if not p.name.startswith("_")}


def usage(scripts: dict[str, Path]) -> str:
    lines = ["usage: qa-forge COMMAND [ARGS]  (qa-forge COMMAND --help)", "", "  ask            answer questions over your own .txt files"]
    lines.append("  profile        compose params.yaml from params/base.yaml and an overlay (gpu, ...)")
    lines.append("  served-name    the name to serve a model folder under (vllm serve FOLDER --served-model-name NAME)")
    lines.append("  report         this run vs a git revision as Markdown (qa-forge report --base REV [--out report.md])")
    lines += [f"  {name:14} stage: {path}" for name, path in scripts.items()]
    if not scripts:
        lines.append(f"  (no {STAGES}/ folder here: run stages from the project's root)")
    return "\n".join(lines)


def main() -> None:
    from qa_forge.core.cli import run

    scripts = stage_scripts()
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage(scripts))
        return
    name = sys.argv[1]
    if name in LIBRARY_COMMANDS:
        sys.argv = sys.argv[1:]
        run(LIBRARY_COMMANDS[name](), prog=f"qa-forge {name}")
        return
    if name not in scripts:
        print(f"error: unknown command '{name}'\n\n{usage(scripts)}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"qa-forge {name}", *sys.argv[2:]]
    # run_path executes the file without putting stages/ on sys.path (stages/evaluate.py must
    # never shadow the `evaluate` package)
    runpy.run_path(str(scripts[name]), run_name="__main__")


if __name__ == "__main__":
    main()
