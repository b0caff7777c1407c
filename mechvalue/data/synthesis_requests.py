"""What a :mod:`mechvalue.data.synthesize` run sends and accepts: the request caller, reply parsing and checks.

:class:`Caller` sends chat requests within :class:`~mechvalue.core.endpoint.ClientConfig`'s budgets
and re-asks after malformed replies; :class:`DatasetSpec` describes one dataset kind (record type, prompts,
parsers); :class:`GenerationResult` is what a run did.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from mechvalue.core.endpoint import ClientConfig, GenerationError, GiveUp, MalformedReply, call_with_retries
from mechvalue.core.errors import DataError
from mechvalue.data import bundled as _data

_WORDS = re.compile(r"[a-z]+")


@dataclass
class GenerationResult:
    """What a run did.

    ``failed`` counts requests given up after their retry budgets (their messages are in ``failures``);
    ``malformed`` counts malformed replies (each re-asked); ``skipped_malformed`` counts the requests among
    ``failed`` that were skipped because every reply to them was malformed (a body that is not JSON or not
    a chat completion, or content that is not the JSON asked for).
    """

    out_path: str
    target: int
    written: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    retries: int = 0
    malformed: int = 0
    skipped_malformed: int = 0
    requests: int = 0
    context_bias: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.written + self.skipped >= self.target

    def summary(self) -> str:
        s = (f"{self.out_path}: {self.written} written, {self.skipped} skipped (already there), "
             f"{self.duplicates} duplicates dropped, {self.failed} failed, {self.retries} retries, "
             f"{self.malformed} malformed replies, {self.skipped_malformed} requests skipped after malformed "
             f"replies, {self.requests} requests")
        if self.context_bias is not None:
            s += f", context-bias share {self.context_bias:.2f}"
        done = self.written + self.skipped
        return s + ("" if self.complete else f"; INCOMPLETE ({done}/{self.target}): rerun to resume")


class Options(TypedDict, total=False):
    """Keyword options of the ``generate_*`` functions; see :func:`generate_pairs`."""

    config: ClientConfig
    base_url: str
    model: str
    api_key: str
    concurrency: int
    seed: int
    batch_size: int
    progress: bool


def normalize_text(text: str) -> str:
    return " ".join(_WORDS.findall(text.lower()))


def parse_json_reply(text: str) -> Any:
    """Parse a reply as JSON, dropping ``<think>`` blocks, code fences and prose around the outer [] or {}."""
    text = re.sub(r"<think>.*?</think>", "", text or "", flags=re.S).strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    text = fence.group(1).strip() if fence else text
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    candidates = [text] + ([text[min(starts):text.rfind("]" if text[min(starts)] == "[" else "}") + 1]]
                           if starts else [])
    for c in candidates:
        try:
            return json.loads(c)
        except json.JSONDecodeError:
            pass
    raise MalformedReply(f"not JSON: {text[:80]!r}")


class Caller:
    """Chat requests with bounded retries, shared by the worker threads."""

    def __init__(self, cfg: ClientConfig, result: GenerationResult, seed: int):
        import openai

        self.cfg, self.result = cfg, result
        self.client = openai.OpenAI(base_url=cfg.base_url, api_key=cfg.key, max_retries=0,
                                    timeout=cfg.timeout)
        self.lock, self.rng = threading.Lock(), random.Random(seed)

    def count(self, failure: str | None = None, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self.result, k, getattr(self.result, k) + v)
            if failure:
                self.result.failed += 1
                self.result.failures.append(failure)

    def chat(self, prompt: str) -> str:
        """One reply's text; raises MalformedReply (a body that is not a chat completion), GiveUp or
        GenerationError."""
        cfg = self.cfg

        def send() -> str:
            msgs = [{"role": "user", "content": prompt}]
            try:
                resp = self.client.chat.completions.create(model=cfg.model, messages=msgs,
                                                           temperature=cfg.temperature)
            except json.JSONDecodeError as exc:
                raise MalformedReply(f"response body is not JSON: {exc.doc[:60]!r}") from exc
            return completion_text(resp)

        def fatal(err: str) -> GenerationError:
            return GenerationError(f"{cfg.base_url} answered {err}; check the base URL, the model name and the "
                                   "API key")

        return call_with_retries(cfg, send, count=self.count, rng=self.rng, lock=self.lock, fatal=fatal)

    def ask(self, prompt: str, parse: Callable[[Any], list[dict]]) -> list[dict]:
        """Chat and parse, re-asking after malformed replies; [] (a recorded failure) when budgets run out.

        A request whose every reply was malformed is skipped: counted in ``skipped_malformed`` and
        ``failed``, its last problem kept in ``failures``; the run goes on.
        """
        last = ""
        try:
            for _ in range(self.cfg.max_malformed + 1):
                try:
                    return parse(parse_json_reply(self.chat(prompt)))
                except MalformedReply as exc:
                    self.count(malformed=1)
                    last = str(exc)
        except GiveUp as exc:
            self.count(failure=str(exc))
            return []
        tries = self.cfg.max_malformed + 1
        self.count(failure=f"request skipped after {tries} malformed repl{'y' if tries == 1 else 'ies'}: {last}",
                   skipped_malformed=1)
        return []


def completion_text(resp: Any) -> str:
    """The message text of a chat completion ("" for none); MalformedReply for anything else."""
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise MalformedReply(f"response is not a chat completion ({type(exc).__name__}: {exc})") from exc
    if content is not None and not isinstance(content, str):
        raise MalformedReply(f"response message content is a {type(content).__name__}, not text")
    return content or ""


@dataclass
class DatasetSpec:
    """One dataset kind: record type, id prefix, de-duplicated fields, prompts, parsers, known records."""

    record: type
    prefix: str
    dedup: tuple[str, ...]
    prompt1: Callable[[int, str], str]  # (k, scene hint) -> step-1 prompt
    parse1: Callable[[Any], list[dict]]  # JSON reply -> partial records
    finish: Callable[[dict, str], dict]  # (partial record, id) -> record dict
    prompt2: Callable[[dict], str] | None = None  # optional step 2, once per partial record
    parse2: Callable[[dict, Any], list[dict]] | None = None
    existing: list[dict] = field(default_factory=list)
    value: str | None = None


def reply_items(obj: Any) -> list:
    """The list in a reply: the reply itself, or the one list inside a JSON object."""
    lists = [v for v in obj.values() if isinstance(v, list)] if isinstance(obj, dict) else [obj]
    if len(lists) != 1 or not isinstance(lists[0], list):
        raise MalformedReply("expected a JSON array")
    return lists[0]


def valid_only(record: type, finish: Callable[[dict, str], dict], parts: list[dict]) -> list[dict]:
    """The partial records that data.py's validator accepts once completed; MalformedReply if none."""
    names, good = [f.name for f in dataclasses.fields(record)], []
    for p in parts:
        try:
            _data._validate(finish(dict(p), "probe"), record, names, "generated record")
            good.append(p)
        except DataError:
            pass
    if not good:
        raise MalformedReply("no valid item in the reply")
    return good


def reply_strings(key: str, record: type, finish: Callable[[dict, str], dict]) -> Callable[[Any], list[dict]]:
    return lambda obj: valid_only(record, finish, [{key: s.strip()} for s in reply_items(obj)
                                                    if isinstance(s, str) and s.strip()])
