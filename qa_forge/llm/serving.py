"""The OpenAI-compatible server a stage needs, started for the stage and stopped when it ends.

`serve_command` (in `llm`, `judge.llm` and `evaluate`) names an engine's server, e.g.
`.venv-vllm/bin/vllm serve --gpu-memory-utilization 0.9`. vLLM lives in its own environment (no
release fits our torch and transformers pins) and is reached only over HTTP. The stage runs

    <serve_command> MODEL --served-model-name NAME --host HOST --port PORT

with HOST and PORT from `base_url` (a loopback URL: the server is ours, on this machine), waits
until GET /v1/models lists NAME, and stops the server when it is done: SIGTERM to its process
group, SIGKILL after a grace period, on success, error, Ctrl-C and SIGTERM alike. On one GPU a
running server holds most of its memory (vLLM's --gpu-memory-utilization), so a server left
behind would starve the next stage (train); a stage that is killed with SIGKILL takes its server
with it too (Linux: the parent-death signal).

The server's output goes to a log file outside DVC outputs (`log_dir`); a server that exits or is
not ready within `serve_timeout_s` fails the stage with the command, its exit status and the log's
last lines. An API key never goes on the command line (`ps` shows it to every user of the host):
the key from `api_key_env` reaches vLLM in its environment, as VLLM_API_KEY.
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

from qa_forge.core.io import UserError
from qa_forge.core.paths import cache_path

STOP_GRACE_S = 30.0  # SIGTERM, then this long for a clean shutdown (vLLM frees the GPU), then SIGKILL
POLL_S = 0.25  # between two looks at /v1/models while the server loads
LOG_TAIL_LINES = 20
# what the stage sets itself, from base_url and the model: the same flag twice would leave it to the
# engine's parser which one wins; keys belong in the environment, never in argv
RESERVED_FLAGS = ("--port", "--host", "--served-model-name", "--api-key")


def loopback_address(base_url: str | None) -> tuple[str, int] | None:
    """(host, port) of a loopback URL with an explicit port, else None."""
    parts = urlsplit(base_url or "")
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if port is None or parts.scheme not in ("http", "https"):
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None
    return (host, port) if loopback else None


def check_serve_command(serve_command: str | None, backend: str, base_url: str | None) -> None:
    """Params validation (a ValueError, which names the section): a command the stage can run
    against the server it will start."""
    if serve_command is None:
        return
    if backend != "openai":
        raise ValueError(f"serve_command starts an OpenAI-compatible server: it needs backend 'openai', not '{backend}'")
    if loopback_address(base_url) is None:
        raise ValueError(
            f"serve_command starts the server on this machine: base_url must be a loopback URL with a port, "
            f"e.g. http://127.0.0.1:8000/v1 (got {base_url!r}); set serve_command: null for a server you run yourself"
        )
    try:
        argv = shlex.split(serve_command)
    except ValueError as e:
        raise ValueError(f"serve_command: cannot split {serve_command!r} into arguments: {e}") from None
    if not argv:
        raise ValueError("serve_command is empty: null for a server you run yourself")
    reserved = [a for a in argv if a.split("=", 1)[0] in RESERVED_FLAGS]
    if reserved:
        raise ValueError(
            f"serve_command sets {', '.join(reserved)}: the stage adds --served-model-name, --host and --port itself "
            f"(from the model and base_url), and an API key goes in the env var named by api_key_env, never on a command line"
        )


def server_argv(serve_command: str, model: str, name: str, base_url: str) -> list[str]:
    host, port = loopback_address(base_url)
    return [*shlex.split(serve_command), model, "--served-model-name", name, "--host", host, "--port", str(port)]


def log_path(log_dir: str | os.PathLike, name: str) -> Path:
    """The server's log: one file per served name, rewritten at each start."""
    return Path(log_dir) / (re.sub(r"[^A-Za-z0-9._-]+", "--", name) + ".log")


def serve_log_dir(cache_dir: str | os.PathLike) -> Path:
    """Server logs sit beside a stage's cache folder (`llm` -> `serve` under the cache root,
    qa_forge.core.paths): outside DVC outputs, kept after the run for a look at what the server said."""
    return cache_path(cache_dir).parent / "serve"


@contextmanager
def served(
    serve_command: str, model: str, name: str, base_url: str, api_key_env: str | None, timeout_s: float, log_dir: str | os.PathLike
) -> Iterator[None]:
    """Run `serve_command` for `model` under `name` at `base_url` while the block runs."""
    argv = server_argv(serve_command, model, name, base_url)
    if shutil.which(argv[0]) is None:
        raise UserError(f"serve_command: cannot find the program {argv[0]} (vLLM in its own environment: `make vllm-env`)")
    host, port = loopback_address(base_url)
    if port_in_use(host, port):
        raise UserError(
            f"serve_command: {host}:{port} (base_url {base_url}) is already in use, so the server for {name} could not listen "
            f"there: stop what runs on it (a server left from another run?), or set serve_command: null to use it as it is"
        )
    log = log_path(log_dir, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    if api_key_env and not key:  # the client would refuse it after the model loaded: refuse it before
        raise UserError(f"param 'api_key_env': the environment variable {api_key_env} is not set: export it, or set api_key_env: null")
    print(f"serve: starting `{shlex.join(argv)}` (log: {log})", file=sys.stderr, flush=True)
    started = time.monotonic()
    with open(log, "wb") as out, _sigterm_exits():
        proc = launch(argv, out, key)
        stop_at_exit = functools.partial(stop, proc)  # a caller that never leaves its block: the server still ends with the process
        atexit.register(stop_at_exit)
        try:
            wait_until_listed(proc, argv, base_url, name, key, timeout_s, log)
            print(f"serve: {name} ready after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            yield
        finally:
            stop(proc)
            atexit.unregister(stop_at_exit)


def port_in_use(host: str, port: int) -> bool:
    with suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def launch(argv: list[str], out, key: str) -> subprocess.Popen:
    """The server in a process group (session) of its own: stopping it stops the processes it
    started (vLLM's engine workers), and the terminal's Ctrl-C reaches only us, who stop it."""
    env = dict(os.environ)
    if key:
        env["VLLM_API_KEY"] = key
    if sys.platform == "linux":
        argv = [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *argv]
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    except OSError as e:
        raise UserError(f"serve_command: cannot run `{shlex.join(argv)}`: {e.strerror or e}") from None


# Run before the server, which it then becomes (exec keeps the pid and the signal): it asks Linux for
# SIGTERM when the stage dies, so a stage killed with SIGKILL, which runs no cleanup, still takes its
# server with it. (Not subprocess's preexec_fn: Python code between fork and exec can deadlock in a
# threaded parent.) Linux sends the signal when the thread that started the server ends: the stages
# start it on their main thread.
DIE_WITH_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("serve: the stage ended before its server started")
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.exit(f"serve: cannot run {sys.argv[2]}: {e.strerror}")
"""


def listed(base_url: str, key: str) -> list[str]:
    """The model names GET {base_url}/models lists; [] while the server cannot answer yet."""
    request = urllib.request.Request(base_url.rstrip("/") + "/models")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5.0) as r:
            return [m["id"] for m in json.load(r)["data"]]
    except (OSError, ValueError, KeyError, TypeError):  # refused, loading (503), not JSON yet
        return []


def wait_until_listed(proc: subprocess.Popen, argv: list[str], base_url: str, name: str, key: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if name in listed(base_url, key):
            return
        if time.monotonic() > deadline:
            stop(proc)
            raise start_failure(argv, f"did not list {name} at {base_url}/models within {timeout_s:g} s (serve_timeout_s)", proc, log)
        time.sleep(POLL_S)
    raise start_failure(argv, "exited before it served", proc, log)


def start_failure(argv: list[str], why: str, proc: subprocess.Popen, log: Path) -> UserError:
    code = proc.returncode
    status = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    return UserError(f"serve_command: `{shlex.join(argv)}` {why} ({status}); the last lines of its log {log}:\n{log_tail(log)}")


def log_tail(log: Path, n: int = LOG_TAIL_LINES) -> str:
    lines = log.read_bytes().decode(errors="replace").splitlines()[-n:]
    return "\n".join(f"  | {line}" for line in lines) or "  (empty)"


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's group, STOP_GRACE_S to shut down, then SIGKILL to whatever of the group
    is left (a worker that outlived its parent included); the server is reaped. A second Ctrl-C while
    it shuts down goes straight to SIGKILL."""
    try:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler's stop) ends the stage through its `finally` blocks, which stop
    the server; Python's default is to die on the spot. Only the main thread can set a handler, and
    a handler someone else set is theirs."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def exit_on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
