"""Issue #16, bad input that used to pass silently: the API key of a :class:`ClientConfig`.

``$OPENAI_API_KEY`` was ignored once a config was passed (its default key "EMPTY" won), and the config's
repr printed the key. Each row: the config's key, the environment's, the key the endpoint must receive and
what ``repr`` must show instead of the key.
"""

from __future__ import annotations

import pytest

from mechvalue.core.endpoint import ClientConfig
from mechvalue.data import synthesize as gen

try:
    from .fake_openai_server import FakeOpenAIServer, Reply
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from fake_openai_server import FakeOpenAIServer, Reply

SECRET, ENV_SECRET = "sk-explicit-0123456789", "sk-from-env-9876543210"

KEY_CASES = [  # config key (None: not given), $OPENAI_API_KEY, key sent, repr shows
    pytest.param(None, ENV_SECRET, ENV_SECRET, "api_key='***' (from $OPENAI_API_KEY)", id="none-in-config-env-set"),
    pytest.param(SECRET, ENV_SECRET, SECRET, "api_key='***'", id="config-key-wins-over-env"),
    pytest.param(SECRET, None, SECRET, "api_key='***'", id="config-key-no-env"),
    pytest.param(None, None, "EMPTY", "api_key=None (not set)", id="no-key-anywhere"),
    pytest.param("EMPTY", None, "EMPTY", "api_key='EMPTY'", id="placeholder-is-not-a-secret"),
]


class KeyServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` that also records each request's Authorization header."""

    def __init__(self, *args, **kw) -> None:
        self.authorization: list[str | None] = []
        super().__init__(*args, **kw)

    def _handler(self):
        server, base = self, super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                server.authorization.append(self.headers.get("Authorization"))
                super().do_POST()

        return Handler


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _config(base_url: str, config_key: str | None, **kw) -> ClientConfig:
    """A config as users write it: no ``api_key`` argument at all when the row has none."""
    return ClientConfig(base_url, "m", **({} if config_key is None else {"api_key": config_key}), **kw)


def _set_env(monkeypatch: pytest.MonkeyPatch, env_key: str | None) -> None:
    if env_key is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", env_key)


@pytest.mark.parametrize("config_key, env_key, sent, shown", KEY_CASES)
def test_config_key_resolution_and_masking(monkeypatch, config_key, env_key, sent, shown):
    _set_env(monkeypatch, env_key)
    cfg = _config("http://127.0.0.1:9/v1", config_key)
    assert cfg.key == sent, f"the key sent should be {sent!r}: $OPENAI_API_KEY must be read when the config has none"
    for text in (repr(cfg), str(cfg), f"{cfg}", repr([cfg]), repr({"cfg": cfg})):
        assert SECRET not in text and ENV_SECRET not in text, f"the API key leaks into {text!r}"
        assert shown in text, f"{text!r} should say {shown!r}"
    assert "base_url='http://127.0.0.1:9/v1'" in repr(cfg) and "max_attempts=5" in repr(cfg)


@pytest.mark.parametrize("config_key, env_key, sent, shown", KEY_CASES)
def test_the_endpoint_receives_the_resolved_key(monkeypatch, tmp_path, config_key, env_key, sent, shown):
    """Over real HTTP: a dataset run and a judge built from a config send the key the table says."""
    from mechvalue.evaluate.openai_judge import OpenAIJudge

    _set_env(monkeypatch, env_key)
    def respond(body: dict) -> Reply:  # the judge's prompt ends with "Label:"; the generator's asks for JSON
        judged = body["messages"][-1]["content"].endswith("Label:")
        return Reply("Yes" if judged else '["Always put your own needs and pleasures first."]')

    with KeyServer(respond) as server:
        cfg = _config(server.base_url, config_key, timeout=5.0, max_attempts=1)
        res = gen.generate_system_prompts("hedonism", 1, tmp_path / "sys.jsonl", config=cfg, progress=False)
        assert res.written == 1
        OpenAIJudge(config=cfg, logprobs=False, on_failure="nan").judge(["text"], "power")
    assert server.authorization == [f"Bearer {sent}"] * 2, f"the endpoint should receive {sent!r} both times"
