"""A local stand-in for a REST API that agents call through the gateway.

    python rest_api.py --port P --record FILE --kind stripe|openai

Serves HTTP/1.1 on 127.0.0.1:P (a thread per connection, keep-alive) and
answers the few endpoints the client suite uses with objects shaped like
the real API's, so the real SDKs parse them. Every request is appended to
FILE as one JSON line, flushed at once:

    {"method": "POST", "path": "/v1/payment_intents",
     "headers": [["host", "api.stripe.com"], ...], "body": "amount=1200&currency=usd"}

Header names are lower-cased; the body is decoded as UTF-8 (invalid bytes
replaced). Prints "ready <port>" on stdout once it listens.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class Recorder:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def stripe_error(status: int, message: str, type_: str = "invalid_request_error") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": type_}}


def stripe_answer(method: str, path: str, body: str) -> tuple[int, dict]:
    if method == "POST" and path == "/v1/payment_intents":
        form = dict(parse_qsl(body, keep_blank_values=True))
        try:
            amount = int(form.get("amount", ""))
        except ValueError:
            return stripe_error(400, "Invalid integer: amount")
        return 200, {
            "id": "pi_" + uuid.uuid4().hex[:24],
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": form.get("currency", "usd"),
            "description": form.get("description"),
            "status": "requires_payment_method",
            "livemode": False,
            "created": int(time.time()),
            "metadata": {},
            "payment_method_types": ["card"],
            "client_secret": "pi_secret_local",
        }
    parts = path.split("/")
    if method == "GET" and len(parts) == 4 and parts[:3] == ["", "v1", "customers"] and parts[3]:
        return 200, {
            "id": parts[3],
            "object": "customer",
            "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen",
            "livemode": False,
            "created": int(time.time()),
            "metadata": {},
        }
    return stripe_error(404, f"Unrecognized request URL ({method}: {path}).")


def last_user_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
            )
    return ""


def openai_error(status: int, message: str, type_: str = "invalid_request_error") -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": type_, "param": None, "code": None}}


def openai_answer(method: str, path: str, body: str) -> tuple[int, dict]:
    if method == "POST" and path == "/v1/chat/completions":
        try:
            request = json.loads(body)
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.")
        text = last_user_text(request.get("messages"))
        return 200, {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "echo: " + text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    if method == "GET" and path == "/v1/models":
        created = int(time.time())
        return 200, {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "local"}
                for name in ("gpt-4o-mini", "gpt-5")
            ],
        }
    return openai_error(404, f"Unknown request URL: {method} {path}.")


ANSWERS = {"stripe": stripe_answer, "openai": openai_answer}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aegis-test-upstream"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body().decode("utf-8", errors="replace")
        path = urlsplit(self.path).path
        self.server.recorder.write(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body,
            }
        )
        status, payload = ANSWERS[self.server.kind](self.command, path, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if self.server.kind == "stripe":
            self.send_header("request-id", "req_" + uuid.uuid4().hex[:14])
        else:
            self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:14])
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--kind", choices=sorted(ANSWERS), required=True)
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.kind = args.kind
    server.recorder = Recorder(args.record)
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
