"""A tiny OpenAI-compatible chat server on 127.0.0.1 for tests, with scripted replies.

``POST /v1/chat/completions`` answers with the next :class:`Reply` in ``server.script`` (fault
injection: malformed JSON, HTTP 429 with Retry-After, HTTP 500, slow replies), or, when the
script is empty, with ``responder(body)``. Every request body is recorded in ``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: ``content`` is the assistant message for status 200, else the error message."""

    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(content: str, model: str = "fake") -> dict[str, Any]:
    """A proper ``chat.completion`` object carrying ``content``."""
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": None}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class FakeOpenAIServer:
    """Threaded fake endpoint on an OS-chosen loopback port; use as a context manager."""

    def __init__(self, responder: Callable[[dict], Reply] | None = None):
        self.responder = responder or (lambda body: Reply("[]"))
        self.script: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def enqueue(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next(self, body: dict) -> Reply:
        with self.lock:
            self.requests.append(body)
            if self.script:
                return self.script.popleft()
        return self.responder(body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    error = {"message": f"no route {self.path}", "type": "not_found"}
                    return self._send(404, {"error": error})
                try:
                    body = json.loads(raw)
                    reply = server._next(body)
                    if reply.delay:
                        time.sleep(reply.delay)
                    if reply.status == 200:
                        self._send(200, completion(reply.content, body.get("model", "fake")))
                    else:
                        self._send(reply.status, {"error": {"message": reply.content or "scripted error",
                                                            "type": "server_error", "code": None}},
                                   reply.headers)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
                    pass

        return Handler
