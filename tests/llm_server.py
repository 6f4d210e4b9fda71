"""A tiny OpenAI-compatible chat-completions server for the LLM-labeler tests (run as its own process).

    python tests/llm_server.py [--fail N] [--fail-code 500] [--slow S] [--invalid N] [--think]

Prints the chosen port on the first stdout line. It answers deterministically: "Yes" when a keyword of the
question's finding occurs in the report, else "No". `--fail N` answers the first N requests with `--fail-code`,
`--slow S` sleeps S seconds per request, `--invalid N` answers the first N completions with "Maybe",
`--think` wraps answers in <think>...</think> reasoning. GET /stats returns request counts and the peak number
of concurrent requests.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KEYWORDS = {
    "medical material": "catheter|pacemaker|stent",
    "cardiomegaly": "cardiomegaly|heart is enlarged",
    "pleural effusion": "pleural effusion",
    "emphysema": "emphysema",
    "lung nodule": "nodule",
}

STATE = {"requests": 0, "completions": 0, "active": 0, "peak": 0}
LOCK = threading.Lock()


def answer_for(prompt: str) -> str:
    report, _, question = prompt.partition("\n\n")
    q = question.lower()
    for name, pattern in KEYWORDS.items():
        if name in q:
            neg = re.search(rf"\bno (?:{pattern})", report, re.I)
            return "Yes" if re.search(pattern, report, re.I) and not neg else "No"
    return "No"


def make_handler(args):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep test output clean
            pass

        def _send(self, code: int, obj: dict, headers: dict | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/stats":
                with LOCK:
                    self._send(200, dict(STATE))
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with LOCK:
                STATE["requests"] += 1
                n = STATE["requests"]
                STATE["active"] += 1
                STATE["peak"] = max(STATE["peak"], STATE["active"])
            try:
                reply = self._reply(body, n)
            finally:
                # counted as finished BEFORE the answer goes out: once the client has its answer it may send the
                # next request at once, and that one must not overlap this one in the count (a lagging decrement
                # made a client bounded to 3 look like 4 on a busy machine)
                with LOCK:
                    STATE["active"] -= 1
            self._send(*reply)

        def _reply(self, body: dict, n: int) -> tuple:
            if args.slow:
                time.sleep(args.slow)
            if self.path != "/v1/chat/completions":
                return 404, {"error": "not found"}
            if n <= args.fail:
                return args.fail_code, {"error": "injected failure"}, {"Retry-After": "0"}
            with LOCK:
                STATE["completions"] += 1
                c = STATE["completions"]
            text = "Maybe" if c <= args.invalid else answer_for(body["messages"][-1]["content"])
            if args.think:
                text = f"<think>The report says no and yes in places; decide.</think>\n{text}."
            return 200, {
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            }

    return Handler


@contextmanager
def running_server(*args: str):
    """Start this script as a separate process; yield (base URL, stats()) and stop it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline().strip())

        def stats() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
                return json.loads(r.read())

        yield f"http://127.0.0.1:{port}/v1", stats
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fail", type=int, default=0)
    ap.add_argument("--fail-code", type=int, default=500)
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--invalid", type=int, default=0)
    ap.add_argument("--think", action="store_true")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
