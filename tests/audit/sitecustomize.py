"""Loaded at start-up by every Python process that has tests/audit on PYTHONPATH (tests/test_deps.py
puts it there for one `dvc repro`): records each file the process opens for reading and, at exit,
writes {pid, ppid, argv, files} to $QA_FORGE_AUDIT_DIR/<pid>.json.

An audit hook sees every open() and io.open_code(), so modules imported inside functions, prompts
and configs all show up. Files read by native code (the Rust tokenizers, SQLite) do not: those are
models and caches, which stages declare as whole folders anyway."""

import atexit
import json
import os
import sys

_DIR = os.environ.get("QA_FORGE_AUDIT_DIR")
# DVC itself reads every dep to hash it: only the stage commands it runs are of interest
_IS_DVC = len(sys.orig_argv) > 1 and os.path.basename(sys.orig_argv[1]) == "dvc"

if _DIR and not _IS_DVC:
    _opened: set[str] = set()

    def _record(event: str, args: tuple) -> None:
        if event != "open":
            return
        path, _mode, flags = args
        if isinstance(path, int) or flags is None or flags & os.O_ACCMODE != os.O_RDONLY:
            return
        _opened.add(os.path.abspath(os.fsdecode(path)))

    def _write() -> None:
        record = {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.orig_argv, "files": sorted(_opened)}
        tmp = os.path.join(_DIR, f".{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(_DIR, f"{os.getpid()}.json"))

    sys.addaudithook(_record)
    atexit.register(_write)
