"""serve_command: a stage starts the OpenAI-compatible server it needs and stops it when it ends
(qa_forge/llm/serving.py). The server is tests/llm_server.py started the way `vllm serve` is
(`MODEL --served-model-name NAME --host HOST --port PORT`); it appends one line per start to a
launches file, so a test sees each start, its argv and its process ids."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qa_forge.core.io import UserError, validate
from qa_forge.eval.evaluate import EvaluateParams, evaluate
from qa_forge.llm import LLM, LLMParams, Request, serving
from qa_forge.llm.identity import served_name
from tests.conftest import ROOT
from tests.llm_server import LLMServer
from tests.params import merge, params, raw, retriever
from tests.test_serve import make_model, settings, tight_max_length
from tests.test_serve import served as served_settings

LAUNCHES = "launches.jsonl"


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch):
    """The server command runs `python -m tests.llm_server`, from wherever pytest runs."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path):
    """A test that fails must not leave its servers running: kill what the launches file names."""
    yield
    for launch in launches(tmp_path):
        for pid in filter(None, (launch["pid"], launch["worker"])):
            if ours(pid):
                os.kill(pid, signal.SIGKILL)


def ours(pid: int) -> bool:
    """Still running, and still the test server or its worker (not a process that got its pid since)."""
    with suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return not gone(pid) and (b"tests.llm_server" in cmdline or b"time.sleep" in cmdline)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (a worker orphaned to init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def fake_server(tmp_path: Path, *flags: str) -> str:
    """A serve_command for the test server, with vLLM flags it ignores, as a profile would write it."""
    return shlex.join([sys.executable, "-m", "tests.llm_server", "--launches", str(tmp_path / LAUNCHES), "--max-model-len", "4096", *flags])


def launches(tmp_path: Path) -> list[dict]:
    path = tmp_path / LAUNCHES
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def llm_params(tmp_path: Path, serve_command: str, port: int, **over) -> LLMParams:
    return params(
        "llm",
        **{
            "backend": "openai",
            "model": "test-model",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key_env": None,
            "model_version": "v1",
            "serve_command": serve_command,
            "serve_timeout_s": 30.0,
            "timeout_s": 5.0,
            "cache_dir": str(tmp_path / "cache"),
            **over,
        },
    )


def questions(n: int) -> list[Request]:
    return [Request.chat([{"role": "user", "content": f"question {i}"}], 0.0) for i in range(n)]


def test_a_run_starts_its_server_answers_and_stops_it(tmp_path):
    """The server runs only while the LLM is open: it answers, then its process, its worker and its
    port are gone; its log is beside the cache, never in an output."""
    port = free_port()
    p = llm_params(tmp_path, fake_server(tmp_path, "--worker", "--enforce-eager"), port)
    with LLM(p) as llm:
        assert launches(tmp_path) == [] and not port_open(port)  # nothing starts before a request misses the cache
        out = llm.complete(questions(3))
        assert port_open(port)
        [launch] = launches(tmp_path)
    assert [r.text for r in out] == [f"echo: question {i}" for i in range(3)]
    assert llm.stats["calls"] == 3
    assert launch["argv"][-7:] == ["test-model", "--served-model-name", "test-model", "--host", "127.0.0.1", "--port", str(port)]
    assert not port_open(port)
    assert gone(launch["pid"]) and gone(launch["worker"])
    assert "loading shard 30 of 30" in (tmp_path / "serve" / "test-model.log").read_text()


def test_a_cached_run_starts_no_server(tmp_path):
    """A re-run answers from the cache without a server; one new request starts one."""
    port = free_port()
    p = llm_params(tmp_path, fake_server(tmp_path), port)
    with LLM(p) as llm:
        first = llm.complete(questions(3))
    with LLM(p) as llm:
        again = llm.complete(questions(3))
    assert len(launches(tmp_path)) == 1
    assert [r.text for r in again] == [r.text for r in first] and llm.stats["calls"] == 0
    with LLM(p) as llm:
        llm.complete(questions(4))
    assert len(launches(tmp_path)) == 2 and llm.stats["calls"] == 1


@pytest.mark.parametrize("case", ["exits at once", "never lists the model"])
def test_a_server_that_does_not_come_up_fails_clearly(case, tmp_path):
    """The error names the command, the exit status and the log's last lines; no process is left."""
    port = free_port()
    flags, timeout = (["--exit-at-once", "3"], 30.0) if case == "exits at once" else (["--list-other"], 1.0)
    p = llm_params(tmp_path, fake_server(tmp_path, "--worker", *flags), port, serve_timeout_s=timeout)
    with LLM(p) as llm, pytest.raises(UserError) as e:
        llm.complete(questions(1))
    message = str(e.value)
    assert "tests.llm_server" in message and f"--port {port}" in message
    if case == "exits at once":
        assert "exited before it served (exit status 3)" in message
        assert "error: out of memory (scripted)" in message
    else:
        assert "did not list test-model" in message and "within 1 s" in message
        assert f"killed by signal {signal.SIGTERM.value}" in message
    assert "loading shard 30 of 30" in message and "loading shard 5 of 30" not in message  # the tail only
    [launch] = launches(tmp_path)
    assert gone(launch["pid"]) and gone(launch["worker"]) and not port_open(port)


def test_a_server_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    """SIGTERM, the grace period, then SIGKILL to the whole group: server and worker."""
    monkeypatch.setattr(serving, "STOP_GRACE_S", 0.5)
    port = free_port()
    p = llm_params(tmp_path, fake_server(tmp_path, "--ignore-sigterm", "--worker"), port)
    with LLM(p) as llm:
        llm.complete(questions(1))
        start = time.monotonic()
    assert time.monotonic() - start >= 0.5  # it outlived SIGTERM
    [launch] = launches(tmp_path)
    assert gone(launch["pid"]) and gone(launch["worker"]) and not port_open(port)


def test_ctrl_c_stops_the_server(tmp_path):
    port = free_port()
    server = serving.served(fake_server(tmp_path), "m", "m", f"http://127.0.0.1:{port}/v1", None, 30.0, tmp_path / "serve")
    with pytest.raises(KeyboardInterrupt), server:
        assert port_open(port)
        raise KeyboardInterrupt
    [launch] = launches(tmp_path)
    assert gone(launch["pid"]) and not port_open(port)


STAGE = """
import sys, time
from qa_forge.llm.serving import served
with served(sys.argv[1], "m", "m", sys.argv[2], None, 30.0, sys.argv[3]):
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_stage_takes_its_server_with_it(sig, tmp_path):
    """SIGTERM ends the stage through its cleanup; SIGKILL runs none, and Linux's parent-death signal
    stops the server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    stage = subprocess.Popen(
        [sys.executable, "-c", STAGE, fake_server(tmp_path), url, str(tmp_path / "serve")], stdout=subprocess.PIPE, text=True
    )
    assert stage.stdout.readline() == "ready\n"
    stage.send_signal(sig)
    assert stage.wait(30) == (128 + sig if sig == signal.SIGTERM else -sig)
    [launch] = launches(tmp_path)
    # nobody of ours reaps it (orphaned to init): its main thread shows as a zombie while the others still exit
    deadline = time.monotonic() + 10
    while (not gone(launch["pid"]) or port_open(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(launch["pid"]) and not port_open(port)


def test_the_api_key_goes_to_the_server_in_its_environment_only(tmp_path, monkeypatch):
    """The server requires the key from api_key_env (VLLM_API_KEY), and no command line shows it."""
    key = "sk-test-serve-0123456789"
    monkeypatch.setenv("QAF_SERVE_KEY", key)
    port = free_port()
    p = llm_params(tmp_path, fake_server(tmp_path), port, api_key_env="QAF_SERVE_KEY")
    with LLM(p) as llm:
        [out] = llm.complete(questions(1))
        [launch] = launches(tmp_path)
        cmdline = Path(f"/proc/{launch['pid']}/cmdline").read_bytes().decode()
        assert serving.listed(p.base_url, "") == [] and serving.listed(p.base_url, key) == ["test-model"]  # no key, no answer
    assert out.text == "echo: question 0"
    assert key not in cmdline and key not in json.dumps(launch["argv"])


def test_a_port_in_use_fails_before_starting(tmp_path):
    with LLMServer() as other:
        port = urlsplit(other.url).port
        with LLM(llm_params(tmp_path, fake_server(tmp_path), port)) as llm, pytest.raises(UserError, match="already in use"):
            llm.complete(questions(1))
        assert other.n_requests == 0
    assert launches(tmp_path) == []


def test_a_missing_program_fails_before_starting(tmp_path):
    missing = pytest.raises(UserError, match=r"cannot find the program \.venv-vllm-missing/bin/vllm .*make vllm-env")
    with LLM(llm_params(tmp_path, ".venv-vllm-missing/bin/vllm serve", free_port())) as llm, missing:
        llm.complete(questions(1))


def test_evaluate_serves_the_folder_under_its_content_hash(tiny_tok, tmp_path):
    """evaluate with serve_command: the server it starts serves the folder under its content-hash
    name, and the predictions and scores equal the local transformers engine's (as tests/test_serve.py
    shows for a server started by hand); the server is gone afterwards."""
    folder = make_model(tmp_path / "merged", tiny_tok, seed=3)
    s = settings(tmp_path, max_length=tight_max_length(folder))
    rp = retriever(cache_dir=str(tmp_path / "embeddings"))
    local_report, local_rows, _ = evaluate(params("evaluate", **s), rp, str(folder), "finetuned")
    port = free_port()
    over = served_settings(f"http://127.0.0.1:{port}/v1", serve_command=fake_server(tmp_path), serve_timeout_s=120.0)
    report, rows, _ = evaluate(params("evaluate", **s, **over), rp, str(folder), "finetuned")
    [launch] = launches(tmp_path)
    name = served_name(folder)
    assert launch["argv"][-7:] == [str(folder), "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port)]
    assert (tmp_path / "serve" / f"{name}.log").is_file()
    assert gone(launch["pid"]) and not port_open(port)
    assert rows == local_rows
    assert report == local_report


@pytest.mark.parametrize(
    "over, error",
    [
        ({"backend": "transformers"}, "needs backend 'openai', not 'transformers'"),
        ({"base_url": "https://api.openai.com/v1"}, "must be a loopback URL with a port"),
        ({"base_url": "http://127.0.0.1/v1"}, "must be a loopback URL with a port"),
        ({"base_url": "http://10.0.0.5:8000/v1"}, "must be a loopback URL with a port"),
        ({"serve_command": "vllm serve --api-key sk-123"}, "sets --api-key"),
        ({"serve_command": "vllm serve --port=9000"}, "sets --port=9000"),
        ({"serve_command": "vllm serve 'unclosed"}, "cannot split"),
    ],
)
@pytest.mark.parametrize("section", ["llm", "judge.llm", "evaluate"])
def test_a_serve_command_that_cannot_work_is_refused(section, over, error):
    """Params validation, before anything runs; the message names the section."""
    good = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "serve_command": "vllm serve", "model_version": "v1"}
    if section == "evaluate":
        del good["model_version"]
    model, data = (
        (EvaluateParams, raw("evaluate"))
        if section == "evaluate"
        else (LLMParams, raw("judge")["llm"] if "judge" in section else raw("llm"))
    )
    validate(model, merge(data, good), section)  # the good one passes
    with pytest.raises(UserError, match=f"param '{re.escape(section)}': Value error, .*{re.escape(error)}"):
        validate(model, merge(data, {**good, **over}), section)


def test_an_llm_serve_command_needs_model_version():
    """Without it the cache identity is the server's metadata: a cached run would start the server to ask."""
    good = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "serve_command": "vllm serve"}
    with pytest.raises(UserError, match="serve_command needs model_version"):
        validate(LLMParams, merge(raw("llm"), {**good, "model_version": None}), "llm")
