"""Judge-test helpers: the fake OpenAI server of ``fake_openai_server.py`` plus logprobs and raw bodies.

:class:`JudgeReply` extends :class:`Reply` with ``logprobs`` (one ``{token: logprob}`` dict per generated
token, the first entry being the sampled token, the rest its top alternatives) and ``raw`` (a verbatim
response body with status 200, for malformed-reply tests). :class:`JudgeServer` serves them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

try:
    from .fake_openai_server import FakeOpenAIServer, Reply, completion
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from fake_openai_server import FakeOpenAIServer, Reply, completion


@dataclass
class JudgeReply(Reply):
    logprobs: list[dict[str, float]] | None = None
    raw: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def logprobs_payload(steps: list[dict[str, float]]) -> dict[str, Any]:
    """OpenAI chat ``logprobs`` object: each step's first token is the sampled one."""
    content = []
    for step in steps:
        items = list(step.items())
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in items]
        tok, lp = items[0]
        content.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": top})
    return {"content": content, "refusal": None}


class JudgeServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` whose replies may carry logprobs or be a raw (malformed) body."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        base = super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                try:
                    body = json.loads(raw)
                    reply = server._next(body)
                    if reply.delay:
                        time.sleep(reply.delay)
                    if reply.status != 200:
                        return self._send(reply.status, {"error": {"message": reply.content or "scripted error",
                                                                   "type": "server_error", "code": None}},
                                          reply.headers)
                    if getattr(reply, "raw", None) is not None:
                        data = reply.raw.encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return None
                    payload = completion(reply.content, body.get("model", "fake"))
                    if getattr(reply, "logprobs", None) and body.get("logprobs"):
                        payload["choices"][0]["logprobs"] = logprobs_payload(reply.logprobs)
                    self._send(200, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return None

        return Handler


def yes_no_responder(p_yes: float = 0.8):
    """A responder answering every judge prompt "Yes" with P(Yes) = ``p_yes`` in its logprobs."""
    import math

    def respond(body: dict) -> JudgeReply:
        word = "Yes" if p_yes >= 0.5 else "No"
        lp = {"Yes": math.log(p_yes), "No": math.log(1 - p_yes)}
        step = {word: lp[word], **{k: v for k, v in lp.items() if k != word}}
        return JudgeReply(word, logprobs=[step])

    return respond
