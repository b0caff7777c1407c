"""The OpenAI-compatible client layer shared by the judge (:mod:`mechvalue.evaluate.openai_judge`) and
dataset synthesis (:mod:`mechvalue.data.synthesize`).

:class:`ClientConfig` (endpoint, timeout, retry budgets), :func:`call_with_retries` (one chat request
with bounded retries, exponential backoff and jitter) and :func:`complete_lines` (reading an append-only
JSONL file whose last write may have been cut short).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from mechvalue.core.errors import MechvalueError

_RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx
_FATAL_STATUS = {401, 403, 404}  # no request can succeed: stop the run
_T = TypeVar("_T")


class GenerationError(MechvalueError):
    """The endpoint cannot be used (missing configuration, authentication failed, unknown model)."""


class MalformedReply(Exception):
    """A reply that is not what was asked for (not a chat completion, not the JSON asked for)."""


class GiveUp(Exception):
    """A request that exhausted its retry budget."""


@dataclass(frozen=True, repr=False)
class ClientConfig:
    """Endpoint and retry settings (seconds). Retry-After is honoured, capped at ``backoff_max``.

    ``api_key`` may be None (the default): :attr:`key` then reads ``$OPENAI_API_KEY`` when a client is
    made, else sends the placeholder ``"EMPTY"`` (local servers need none). The key is never shown:
    ``repr``/``str`` print ``api_key='***'`` when one is set (``'***' (from $OPENAI_API_KEY)`` when it
    comes from there), ``'EMPTY'`` for the placeholder and ``None (not set)`` when there is none.
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0
    max_attempts: int = 5  # per request, on 429/5xx/timeouts/connection errors
    max_malformed: int = 2  # re-asks per request after a malformed reply
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    temperature: float = 1.0

    @classmethod
    def resolve(cls, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                **kw: Any) -> ClientConfig:
        """Arguments first, else ``$OPENAI_BASE_URL``, ``$MECHVALUE_GEN_MODEL``, ``$OPENAI_API_KEY``."""
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        model = model or os.environ.get("MECHVALUE_GEN_MODEL")
        missing = [m for m, v in (("base URL (--base-url or $OPENAI_BASE_URL)", base_url),
                                  ("model (--model or $MECHVALUE_GEN_MODEL)", model)) if not v]
        if missing:
            raise GenerationError(f"no {' and no '.join(missing)} given for the generation endpoint")
        cfg = cls(base_url, model, api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY", **kw)
        if cfg.max_attempts < 1 or cfg.max_malformed < 0 or cfg.timeout <= 0:
            raise GenerationError("need max_attempts >= 1, max_malformed >= 0 and timeout > 0")
        return cfg

    @property
    def key(self) -> str:
        """The key to send: ``api_key``, else ``$OPENAI_API_KEY``, else ``"EMPTY"``."""
        return self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"

    def _key_repr(self) -> str:
        if self.api_key:
            return "'EMPTY'" if self.api_key == "EMPTY" else "'***'"
        return "'***' (from $OPENAI_API_KEY)" if os.environ.get("OPENAI_API_KEY") else "None (not set)"

    def __repr__(self) -> str:
        """Every field, but the API key masked (``'***'``) or ``None (not set)``."""
        shown = [f"api_key={self._key_repr()}" if f.name == "api_key" else f"{f.name}={getattr(self, f.name)!r}"
                 for f in fields(self)]
        return f"{type(self).__name__}({', '.join(shown)})"

    __str__ = __repr__


def endpoint_config(base_url: str | None, model: str | None, api_key: str | None, config: ClientConfig | None, *,
                    model_env: str) -> ClientConfig | None:
    """The endpoint of a judge or explainer: each of base URL and model from the argument, else ``config``, else
    ``$OPENAI_BASE_URL`` / ``$<model_env>``; ``config``'s other settings kept. None when either is missing."""
    base_url = base_url or (config.base_url if config else None) or os.environ.get("OPENAI_BASE_URL")
    model = model or (config.model if config else None) or os.environ.get(model_env)
    if not base_url or not model:
        return None
    cfg = config or ClientConfig(base_url, model)
    return replace(cfg, base_url=base_url, model=model, api_key=api_key or cfg.api_key)


def call_with_retries(cfg: ClientConfig, send: Callable[[], _T], *, count: Callable[..., None],
                      rng: random.Random, lock: threading.Lock, fatal: Callable[[str], Exception],
                      retry_malformed: bool = False) -> _T:
    """``send()`` (one chat request) within ``cfg.max_attempts``; the judge's and ``generate``'s retry loop.

    429, 408/409/425, 5xx, timeouts and connection errors are retried after an exponential backoff with
    jitter from ``rng`` (drawn under ``lock``; Retry-After honoured, capped at ``cfg.backoff_max``);
    401/403/404 raise ``fatal(message)``; other 4xx and a spent budget raise :class:`GiveUp`. Other API
    errors are retried (counted as malformed) when ``retry_malformed``, as are a :class:`MalformedReply`,
    ValueError, TypeError, AttributeError or IndexError from ``send``; else they raise :class:`MalformedReply`
    (and ``send``'s own exceptions propagate). ``count(requests=1)``, ``count(retries=1)`` and
    ``count(malformed=1)`` keep the caller's statistics.
    """
    import openai as o

    unreadable = (o.APIError, MalformedReply, ValueError, TypeError, AttributeError, IndexError) if retry_malformed \
        else o.APIError
    err = ""
    for attempt in range(cfg.max_attempts):
        count(requests=1)
        retry_after = None
        try:
            return send()
        except o.APIStatusError as exc:
            code, err = exc.status_code, f"HTTP {exc.status_code} ({exc.message})"
            if code in _FATAL_STATUS:
                raise fatal(err) from exc
            if code not in _RETRY_STATUS and code < 500:
                raise GiveUp(err) from exc
            retry_after = exc.response.headers.get("retry-after")
        except o.APIConnectionError as exc:  # includes APITimeoutError
            err = "timeout" if isinstance(exc, o.APITimeoutError) else f"connection error ({exc})"
        except unreadable as exc:
            if not retry_malformed:
                raise MalformedReply(f"unreadable reply ({exc})") from exc
            count(malformed=1)
            err = f"malformed reply ({type(exc).__name__}: {exc})"
        if attempt + 1 < cfg.max_attempts:
            count(retries=1)
            with lock:
                delay = cfg.backoff_base * 2 ** attempt * rng.uniform(0.5, 1.0)
            if retry_after and re.fullmatch(r"\d+(\.\d+)?", retry_after.strip()):
                delay = max(delay, float(retry_after))
            time.sleep(min(delay, cfg.backoff_max))
    raise GiveUp(f"{err} after {cfg.max_attempts} attempts")


def complete_lines(path: Path, stacklevel: int = 2) -> bytes:
    """``path``'s bytes (b"" if missing); a partial last line (an interrupted write) is cut off with a warning."""
    raw = path.read_bytes() if path.exists() else b""
    if raw and not raw.endswith(b"\n"):  # a write cut short by a crash
        warnings.warn(f"{path}: dropping a partial last line (interrupted write)", stacklevel=stacklevel + 1)
        with open(path, "r+b") as fh:
            fh.truncate(raw.rfind(b"\n") + 1)
        raw = raw[:raw.rfind(b"\n") + 1]
    return raw
