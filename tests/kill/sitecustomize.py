"""Loaded at start-up by Python processes that have tests/kill on PYTHONPATH (tests/test_swap.py):
kills the process with SIGKILL just before the Nth step that touches the folder
$QA_FORGE_KILL_PATH or its swap siblings (`.tmp`, `.new`, `.old`): mkdir, rename, rmtree and the
renameat2 exchange (a ctypes call). With $QA_FORGE_KILL_AT=0 it only counts the steps and writes
the count to $QA_FORGE_KILL_COUNT at exit."""

import atexit
import os
import signal
import sys

_PATH = os.environ.get("QA_FORGE_KILL_PATH")
_STEPS = {"os.mkdir", "os.rename", "shutil.rmtree", "ctypes.call_function"}

if _PATH:
    _names = {_PATH, *(_PATH + suffix for suffix in (".tmp", ".new", ".old"))}
    _at = int(os.environ.get("QA_FORGE_KILL_AT", "0"))
    _seen = 0

    def _touches(args) -> bool:
        for a in args:
            if isinstance(a, tuple) and _touches(a):
                return True
            if isinstance(a, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(a)) in _names:
                return True
        return False

    def _step(event: str, args: tuple) -> None:
        global _seen
        if event in _STEPS and _touches(args):
            _seen += 1
            if _seen == _at:
                os.kill(os.getpid(), signal.SIGKILL)

    def _report() -> None:
        if count := os.environ.get("QA_FORGE_KILL_COUNT"):
            with open(count, "w") as f:
                f.write(str(_seen))

    sys.addaudithook(_step)
    atexit.register(_report)
