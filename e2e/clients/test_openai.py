"""The OpenAI SDK through the gateway, as chat-agent.

The agent's Aegis token is the SDK's `api_key`; the gateway judges the
call (only `gpt-4o-mini`; SSNs redacted from the body), drops the token and
sends the real key upstream. The local upstream answers a chat completion
with "echo: <last user message>", so the test sees what the model got.

- proxy mode: base `http://api.openai.com/v1`, the gateway as HTTP proxy
  of the SDK's HTTP client (`http_client=httpx2.Client(proxy=...)`; the
  SDK also takes a legacy `httpx.Client`, tested once);
- base-URL mode: base `http://127.0.0.1:<openai listener>/v1`, no proxy.
"""

from __future__ import annotations

import json

import pytest

import sdks
from harness import assert_forwarded_with_real_key

openai = sdks.require("openai")

AGENT = "chat-agent"
MODES = [pytest.param("proxy", marks=pytest.mark.proxy), pytest.param("base_url", marks=pytest.mark.base_url)]


def http_client_module():
    """The HTTP library the SDK is built on: `httpx2` for openai 3.x."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


@pytest.fixture
def client_for(gateway):
    made = []

    def make(mode: str, key: str | None = None):
        key = gateway.token(AGENT) if key is None else key
        if mode == "proxy":
            http = http_client_module().Client(proxy=gateway.proxy_url, timeout=20)
            client = openai.OpenAI(api_key=key, base_url=gateway.tool_url("openai"), http_client=http)
        else:
            client = openai.OpenAI(api_key=key, base_url=gateway.base_url("openai"), timeout=20)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.mark.parametrize("mode", MODES)
def test_chat_with_an_allowed_model(gateway, client_for, mode):
    client = client_for(mode)
    mark = gateway.mark("openai")

    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: What is the capital of France?"
    request = assert_forwarded_with_real_key("openai", gateway.seen_since("openai", mark), gateway.token(AGENT))
    assert request["path"] == "/v1/chat/completions"
    assert json.loads(request["body"])["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("mode", MODES)
def test_an_ssn_is_redacted_before_the_model_sees_it(gateway, client_for, mode):
    client = client_for(mode)
    mark = gateway.mark("openai")

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "My SSN is 123-45-6789, file my taxes."}],
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "echo: My SSN is [REDACTED:ssn], file my taxes."
    request = assert_forwarded_with_real_key("openai", gateway.seen_since("openai", mark), gateway.token(AGENT))
    assert "123-45-6789" not in request["body"]
    assert "[REDACTED:ssn]" in json.loads(request["body"])["messages"][0]["content"]
    assert raw.headers.get("x-aegis-decision") == "sanitize"


@pytest.mark.parametrize("mode", MODES)
def test_a_model_outside_the_policy_is_denied(gateway, client_for, mode):
    client = client_for(mode)
    mark = gateway.mark("openai")

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hello"}])

    err = caught.value
    assert err.status_code == 403
    assert "`model` must be one of" in err.message, err.message
    assert "gpt-4o-mini" in err.message, err.message
    assert gateway.seen_since("openai", mark) == [], "a denied call reached the upstream"


@pytest.mark.parametrize("mode", MODES)
def test_list_models(gateway, client_for, mode):
    client = client_for(mode)
    mark = gateway.mark("openai")

    models = [m.id for m in client.models.list()]

    assert "gpt-4o-mini" in models
    request = assert_forwarded_with_real_key("openai", gateway.seen_since("openai", mark), gateway.token(AGENT))
    assert request["method"] == "GET" and request["path"] == "/v1/models"


@pytest.mark.parametrize("mode", MODES)
def test_an_openai_key_is_not_an_agent_token(gateway, client_for, mode):
    client = client_for(mode, key="sk-proj-not-an-aegis-token")
    mark = gateway.mark("openai")

    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])

    assert "invalid agent token" in caught.value.message, caught.value.message
    assert "sk-proj-not-an-aegis-token" not in caught.value.message
    assert gateway.seen_since("openai", mark) == []


@pytest.mark.proxy
def test_legacy_httpx_client_as_proxy(gateway):
    """openai 3.x is built on httpx2 but still takes an `httpx.Client`."""
    httpx = pytest.importorskip("httpx")
    mark = gateway.mark("openai")
    with httpx.Client(proxy=gateway.proxy_url, timeout=20) as http:
        client = openai.OpenAI(api_key=gateway.token(AGENT), base_url=gateway.tool_url("openai"), http_client=http)
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "ping"}])
    assert completion.choices[0].message.content == "echo: ping"
    assert_forwarded_with_real_key("openai", gateway.seen_since("openai", mark), gateway.token(AGENT))


@pytest.mark.proxy
def test_https_through_the_proxy_fails_fast(gateway):
    """An `https://` base through the proxy: the HTTP client asks for a
    CONNECT tunnel, the gateway refuses it, the call fails at once."""
    import time

    http = http_client_module().Client(proxy=gateway.proxy_url, timeout=20)
    client = openai.OpenAI(
        api_key=gateway.token(AGENT), base_url="https://api.openai.com/v1", http_client=http, max_retries=0
    )
    mark = gateway.mark("openai")
    started = time.monotonic()
    try:
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    finally:
        client.close()
    assert time.monotonic() - started < 10
    assert gateway.seen_since("openai", mark) == []
