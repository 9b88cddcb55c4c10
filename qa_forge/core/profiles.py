"""Profiles: params.yaml composed from `params/base.yaml` and overlays `params/NAME.yaml`.

The embedded default is the base alone. An overlay holds only what differs (mappings merge key
by key, anything else replaces), so `dvc params diff` between two runs shows what a profile
changed, and params.yaml stays the one file DVC reads. `qa-forge profile gpu` writes
params.yaml (through a temporary file and a rename); `gpu+full` lays `full` over `gpu`;
`qa-forge profile default` goes back to the base alone.

ruamel.yaml (a dependency of DVC) keeps the base's comments and anchors in the composed file, so
the documentation of every value travels with it; PyYAML would drop them.

Hand edits are never lost: params.yaml records which profile it was composed from, and a
params.yaml that is not that composition any more is refused unless `--force`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import typer

from qa_forge.core.io import UserError, read_text

DEFAULT = "default"
HEADER = (
    "# params.yaml, composed by `qa-forge profile {name}` from {sources} (content {digest}).\n"
    "# Edit those files and compose again (`make repro PROFILE={name}`), or try a value with `dvc exp run -S`.\n"
)
_RECORDED = re.compile(r"^# params\.yaml, composed by `qa-forge profile ([\w.+-]+)` from [^\n]* \(content (\w+)\)\.\n[^\n]*\n")


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: comments, key order and anchors kept
    y.width = 4096  # never fold a long line: the file must read as it was written
    y.preserve_quotes = True
    y.representer.add_representer(type(None), _null)  # `key: null`, as written, not `key:`
    return y


def _null(representer, _):
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")


def load(path: Path) -> Any:
    from ruamel.yaml.error import YAMLError

    text = read_text(path)
    try:
        return _yaml().load(text)
    except YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def merge(base: Any, over: Any) -> Any:
    """`over` laid over `base` in place: mappings merged key by key, anything else replaced."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def overlay_path(root: Path, name: str) -> Path:
    path = root / "params" / f"{name}.yaml"
    if name in (DEFAULT, "base") or not path.is_file():
        known = ", ".join(profiles(root)) or "none"
        raise UserError(f"profile '{name}': no overlay {path} (profiles: {DEFAULT}, {known})")
    return path


def profiles(root: Path) -> list[str]:
    """The overlays in params/ (the base aside)."""
    return sorted(p.stem for p in (root / "params").glob("*.yaml") if p.stem != "base")


def compose(root: Path, name: str = DEFAULT) -> str:
    """The text of params.yaml for profile `name` ("gpu", "gpu+full", "default"): the base, then
    each overlay's values over it, left to right."""
    params = load(root / "params" / "base.yaml")
    sources = "params/base.yaml"
    for part in [] if name == DEFAULT else name.split("+"):
        path = overlay_path(root, part)
        over = load(path) or {}
        unknown = set(over) - set(params)
        if unknown:
            raise UserError(f"{path}: sections not in params/base.yaml: {', '.join(sorted(unknown))}")
        merge(params, over)
        sources += f" + params/{part}.yaml"
    out = io.StringIO()
    _yaml().dump(params, out)
    body = out.getvalue()
    return HEADER.format(name=name, sources=sources, digest=digest(body)) + body


def digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def check_unedited(target: Path) -> None:
    """Refuse to overwrite a params.yaml that holds edits of its own: its body must still hash to
    what `qa-forge profile` recorded (a base or overlay changed since is no edit of this file)."""
    if not target.exists():
        return
    text = read_text(target)
    m = _RECORDED.match(text)
    if m is None:
        raise UserError(f"{target}: not written by `qa-forge profile`; move its values into params/ (or pass --force)")
    if digest(text[m.end() :]) != m.group(2):
        raise UserError(
            f"{target}: edited since `qa-forge profile {m.group(1)}` wrote it; move the edits into params/base.yaml or "
            f"an overlay in params/ (or pass --force to drop them)"
        )


def write(root: Path, name: str, target: Path, force: bool) -> str:
    text = compose(root, name)
    if not force:
        check_unedited(target)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return text


# --- which values reach the Hugging Face hub ------------------------------------------------------


def _local(value: str | None) -> bool:
    return value is None or value in ("minilm",) or value.startswith(("models/", "data/", "/", "./", "../")) or Path(value).exists()


def _loads_from_hub(llm: dict) -> bool:
    """An LLM section whose model a process of the run loads by hub id: a local backend, or the server
    its serve_command starts (which inherits HF_HUB_OFFLINE)."""
    loaded_here = llm["backend"] in ("transformers", "vllm") or llm.get("serve_command") is not None
    return loaded_here and not _local(llm["model"])


def hub_uses(params: dict) -> list[str]:
    """The params whose values are fetched from the hub (empty: the run works offline)."""
    uses = []
    if params["base_model"]["source"] == "hub":
        uses.append("base_model.hub_id")
    for role in ("train", "eval"):
        for name, spec in params["fetch"][role].items():
            if spec.get("hub") and not spec.get("path"):
                uses.append(f"fetch.{role}.{name}.hub")
    if not _local(params["retrieve"]["model"]):
        uses.append("retrieve.model")
    if _loads_from_hub(params["llm"]):
        uses.append("llm.model")
    if params["judge"]["enabled"] and _loads_from_hub(params["judge"]["llm"]):
        uses.append("judge.llm.model")
    return uses


def main(
    name: str = typer.Argument(DEFAULT, help="an overlay in params/ (e.g. gpu), or 'default' for the base alone"),
    force: bool = typer.Option(False, help="overwrite a params.yaml with edits of its own"),
    offline_flag: bool = typer.Option(False, help="print 1 when params.yaml needs no hub download, else 0 (for HF_HUB_OFFLINE)"),
    params: Path = typer.Option(Path("params.yaml"), help="the file to write (or read, with --offline-flag)"),
):
    """Compose params.yaml from params/base.yaml and a profile overlay."""
    root = Path()  # the project: params/ beside the params.yaml DVC reads
    if offline_flag:
        import yaml

        print(0 if hub_uses(yaml.safe_load(read_text(params))) else 1)
        return
    text = write(root, name, params, force)
    import yaml

    uses = hub_uses(yaml.safe_load(text))
    reach = f"downloads from the hub: {', '.join(uses)}" if uses else "runs offline"
    print(f"profile {name}: wrote {params} ({reach})")
