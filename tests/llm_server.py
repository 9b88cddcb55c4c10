"""A real OpenAI-compatible HTTP server on loopback for tests and benches.

POST /v1/chat/completions answers with `script(messages, body)` (default: an echo of the last
user message) after `latency_s`; /v1/completions hands the script its prompt (text or token ids) as
one user message. A script that runs a real model stops it itself and returns (text, finish_reason);
a plain text is cut at max_tokens here; with probability `fault_rate` (seeded RNG) it fails instead with
one of `faults`: "429" (Retry-After: 0), "500" (or any other status): refused before the model
runs, not billed; "hang": no answer until the client times out, not billed (the request queued and
never ran); or, billed as if answered: "timeout" (a hang longer than the client's timeout,
then the connection closes unanswered: a late answer nobody receives), "malformed" (200 with a
body that is not JSON), "empty" (an empty completion), "cutoff" (cut at max_tokens,
finish_reason "length"), "no_usage" (a good answer without `usage`).
Every request is recorded; a success is counted per fingerprint (sha256 of the raw body) only
when the client is still connected to receive it, so tests can assert nothing was paid twice.
`billed_tokens` adds up what the server bills (it dedupes nothing); `tokens="bytes"` counts one
token per UTF-8 byte (the densest a tokenizer can be), the default ~4 characters a token.
GET /v1/models lists `model` (the name it serves); GET /v1/models/{id} describes the model
(`owned_by`, `root`: change them to serve "another" model). With `api_key`, a request without it
is refused (401), as `vllm serve` does with VLLM_API_KEY set.

    with LLMServer(latency_s=0.2) as srv:
        LLMParams(backend="openai", base_url=srv.url, ...)

`python -m tests.llm_server --latency 0.2` serves until killed and prints the base URL. It takes
`vllm serve`'s command-line shape too, so tests can start it through `serve_command`:
`python -m tests.llm_server MODEL --served-model-name NAME --host HOST --port PORT` serves NAME: a
model folder decodes the token ids it is sent with that folder's model (`ServedModel`), any other
MODEL echoes; vLLM's flags that tests pass (e.g. --max-model-len 4096) are ignored, and a few flags
of its own act out what a real server may do (exit at once, never list the model, ignore SIGTERM,
start a worker process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

FAULTS = ("429", "500", "timeout")
BILLED_FAULTS = ("timeout", "malformed", "empty", "cutoff", "no_usage")
ALL_FAULTS = ("429", "500", "hang", *BILLED_FAULTS)


def echo(messages: list[dict], body: dict) -> str:
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return f"echo: {last}"


def n_tokens(text: str, tokens: str = "chars") -> int:
    """The server's token count: ~4 characters a token, or one a UTF-8 byte."""
    return len(text.encode()) if tokens == "bytes" else math.ceil(len(text) / 4)


class LLMServer:
    def __init__(
        self,
        script: Callable[[list[dict], dict], str] = echo,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        timeout_sleep_s: float = 1.5,
        seed: int = 0,
        model: str = "test-model",
        tokens: str = "chars",
        port: int = 0,
        api_key: str | None = None,
    ):
        self.script, self.latency_s, self.fault_rate, self.faults = script, latency_s, fault_rate, faults
        self.timeout_sleep_s, self.model, self.tokens = timeout_sleep_s, model, tokens
        self.port, self.api_key = port, api_key
        self.owned_by, self.root = "tests", "weights-v1"
        self.billed_tokens = {"prompt": 0, "completion": 0}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # every POST: fingerprint, body, auth header, outcome
        self.successes: Counter[str] = Counter()  # fingerprint -> answers delivered
        self.outcomes: Counter[str] = Counter()
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle --
    def start(self) -> LLMServer:
        server = self

        class Handler(_Handler):
            srv = server

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    # -- what tests look at --
    @property
    def n_requests(self) -> int:
        with self.lock:
            return len(self.requests)

    @property
    def n_successes(self) -> int:
        with self.lock:
            return sum(self.successes.values())

    def wait_requests(self, n: int, timeout_s: float = 30.0) -> None:
        end = time.time() + timeout_s
        while self.n_requests < n:
            if time.time() > end:
                raise TimeoutError(f"server saw {self.n_requests} requests, waited for {n}")
            time.sleep(0.002)

    # -- decisions (under the lock: the RNG is shared by handler threads) --
    def pick_fault(self) -> str | None:
        with self.lock:
            return self.rng.choice(self.faults) if self.rng.random() < self.fault_rate else None

    def record(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)

    def outcome(self, entry: dict, what: str) -> None:
        with self.lock:
            entry["outcome"] = what
            self.outcomes[what] += 1
            if what == "ok":
                self.successes[entry["fingerprint"]] += 1

    def bill(self, entry: dict, prompt: int, completion: int) -> None:
        with self.lock:
            entry["billed"] = (prompt, completion)
            self.billed_tokens["prompt"] += prompt
            self.billed_tokens["completion"] += completion

    def cost(self, usd_in_per_mtok: float, usd_out_per_mtok: float) -> float:
        with self.lock:
            return (self.billed_tokens["prompt"] * usd_in_per_mtok + self.billed_tokens["completion"] * usd_out_per_mtok) / 1e6

    def count(self, outcome: str) -> int:
        with self.lock:
            return self.outcomes[outcome]


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client hung up (it sends nothing else while it waits for our answer)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    srv: LLMServer
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, obj: dict, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "server_error", "code": status}}, headers)

    def _authorized(self) -> bool:
        """Refuse a request without the server's key (401), as vLLM does; True when it may go on."""
        key = self.srv.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._error(401, "missing or wrong API key")
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        srv, route = self.srv, self.path.rstrip("/")
        card = {"id": srv.model, "object": "model", "created": int(time.time()), "owned_by": srv.owned_by, "root": srv.root}
        if route == "/v1/models":
            self._send(200, {"object": "list", "data": [card]})
        elif route.startswith("/v1/models/"):
            self._send(200, {**card, "id": route.removeprefix("/v1/models/")})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not self._authorized():
            return
        route = self.path.rstrip("/")
        if route not in ("/v1/chat/completions", "/v1/completions"):
            self._error(404, f"no route {self.path}")
            return
        srv = self.srv
        body = json.loads(raw)
        fault = srv.pick_fault()
        entry = {
            "fingerprint": hashlib.sha256(raw).hexdigest(),
            "body": body,
            "authorization": self.headers.get("Authorization"),
            "fault": fault,
            "outcome": None,
        }
        srv.record(entry)
        # /v1/completions: the raw prompt is handed to the script as one user message
        messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
        if fault == "hang":  # queued past the client's timeout, never run
            time.sleep(srv.timeout_sleep_s)
            srv.outcome(entry, "hang")
            self.close_connection = True
            return
        if fault is not None and fault not in BILLED_FAULTS:  # an HTTP status: refused before the model runs
            if srv.latency_s:
                time.sleep(srv.latency_s)
            srv.outcome(entry, fault)
            self._error(int(fault), f"HTTP {fault} (scripted)", {"Retry-After": "0"} if fault == "429" else None)
            return
        reply = "" if fault == "empty" else srv.script(messages, body)
        text, finish = reply if isinstance(reply, tuple) else (reply, None)  # a real model's own stop, or none yet
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if fault == "cutoff" and max_tokens:  # what the model wrote went on past max_tokens
            text, finish = text + " and so on" * max_tokens, None
        if finish is None:
            finish = "stop"
            if max_tokens is not None and n_tokens(text, srv.tokens) > max_tokens:
                text, finish = _truncate(text, max_tokens, srv.tokens), "length"
        prompt_tokens = sum(
            n_tokens(str(m.get("role", "")), srv.tokens) + n_tokens(str(m.get("content", "")), srv.tokens) for m in messages
        )
        completion_tokens = n_tokens(text, srv.tokens)
        srv.bill(entry, prompt_tokens, completion_tokens)  # the model ran: billed, whoever receives it
        if fault == "timeout":  # hang past the client's timeout, then drop the connection unanswered
            time.sleep(srv.timeout_sleep_s)
            srv.outcome(entry, "timeout")
            self.close_connection = True
            return
        if srv.latency_s:
            time.sleep(srv.latency_s)
        if _peer_closed(self.connection):  # the client is gone (killed, or gave up): nobody receives this
            srv.outcome(entry, "abandoned")
            self.close_connection = True
            return
        if fault == "malformed":
            data = b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"role": "assis'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            srv.outcome(entry, "malformed")
            return
        usage = (
            None
            if fault == "no_usage"
            else {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        )
        if route == "/v1/completions":
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            self._send(
                200,
                {
                    "id": f"cmpl-{entry['fingerprint'][:12]}",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": body.get("model", srv.model),
                    "usage": usage,
                    "choices": [choice],
                },
            )
        else:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
            self._send(
                200,
                {
                    "id": f"chatcmpl-{entry['fingerprint'][:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", srv.model),
                    "choices": [choice],
                    "usage": usage,
                },
            )
        srv.outcome(entry, "ok" if fault is None or fault == "no_usage" else fault)


def _truncate(text: str, max_tokens: int, tokens: str) -> str:
    if tokens == "bytes":
        return text.encode()[:max_tokens].decode(errors="ignore")
    return text[: max_tokens * 4]


class ServedModel:
    """The server side of `vllm serve FOLDER`: greedy decoding of the prompt's token ids, stopping at
    `stop_token_ids` or `max_tokens`, special tokens left out of the text."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok
        self.lock = threading.Lock()  # the server answers on several threads; the model decodes one request at a time

    @classmethod
    def load(cls, folder) -> ServedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return cls(AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder))

    def __call__(self, messages, body):
        import torch

        ids, stops = body["prompt"], body["stop_token_ids"]
        with self.lock, torch.no_grad():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=body["max_tokens"],
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=stops[0],
            )
        new = out[0, len(ids) :].tolist()
        end = next((i + 1 for i, t in enumerate(new) if t in stops), None)
        return self.tok.decode(new[:end], skip_special_tokens=True), "stop" if end else "length"


IGNORED_VLLM_FLAGS = ("--max-model-len", "--gpu-memory-utilization", "--revision", "--dtype", "--tensor-parallel-size")


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="test-model", help="a model folder (its model answers) or a name (echo)")
    ap.add_argument("--served-model-name", help="the name GET /v1/models lists (default: MODEL)")
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost"])  # it listens on 127.0.0.1
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    for flag in IGNORED_VLLM_FLAGS:  # vLLM's, with a value: taken and ignored
        ap.add_argument(flag, help=argparse.SUPPRESS)
    # acting out a real server, for tests of qa_forge.llm.serving
    ap.add_argument("--launches", help="append a line {pid, argv, worker pid} to this file at start")
    ap.add_argument("--exit-at-once", type=int, metavar="STATUS", help="write 30 log lines, then exit with STATUS without serving")
    ap.add_argument("--list-other", action="store_true", help="serve, but list another name than the one asked for")
    ap.add_argument("--ignore-sigterm", action="store_true", help="a server that does not stop on SIGTERM")
    ap.add_argument("--worker", action="store_true", help="start a worker process (as vLLM's engine core) that runs until killed")
    args, _unknown = ap.parse_known_args(argv)  # vLLM's switches without a value (e.g. --enforce-eager): ignored
    return args


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) if a.worker else None
    if a.launches:
        with open(a.launches, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv, "worker": worker and worker.pid}) + "\n")
    for i in range(30):
        print(f"loading shard {i + 1} of 30", flush=True)
    if a.exit_at_once is not None:
        print("error: out of memory (scripted)", flush=True)
        sys.exit(a.exit_at_once)
    name = a.served_model_name or a.model
    script = ServedModel.load(a.model) if os.path.isfile(os.path.join(a.model, "config.json")) else echo
    served_as = "another-model" if a.list_other else name
    server = LLMServer(script, a.latency, a.fault_rate, model=served_as, port=a.port, api_key=os.environ.get("VLLM_API_KEY"))
    with server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
