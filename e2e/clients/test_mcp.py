"""The MCP Python SDK (1.x and 2.x, one file) through the gateway, as
mcp-agent, against a real MCP server over Streamable HTTP.

The agent's token goes in `Authorization: Bearer`; the gateway judges
every JSON-RPC message and injects the server's own key. mcp-agent may call
get_weather and book_meeting, never delete_repo.

Each test runs in both gateway modes (the SDK's HTTP client with the
gateway as proxy and `http://mcp.tools.internal/mcp`; or
`http://127.0.0.1:<mcp listener>/mcp`) and, on mcp 2.x, in both of its
connect modes: "auto" (its default: `server/discover`, which the 2.x server
answers, so the session speaks 2026-07-28) and "legacy" (the initialize
handshake, as 1.x does: a stateful session with `mcp-session-id`, a GET
stream, elicitation as a server->client request, DELETE on close).
mcp_compat.py lists the API differences.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

import sdks
from harness import assert_real_key_only

mcp = sdks.require("mcp")

import mcp_compat  # noqa: E402 - after the SDK check

AGENT = "mcp-agent"
TEST_BUDGET = 25.0  # seconds for one test's async part (pytest-timeout: 30)

GATEWAY_MODES = [pytest.param("proxy", marks=pytest.mark.proxy), pytest.param("base_url", marks=pytest.mark.base_url)]
ERAS = ["auto", "legacy"] if mcp_compat.MAJOR >= 2 else ["legacy"]
MODERN = "2026-07-28"


def url_and_proxy(gateway, mode: str) -> tuple[str, str | None]:
    if mode == "proxy":
        return gateway.tool_url("mcp"), gateway.proxy_url
    return gateway.base_url("mcp"), None


def run(fn, *args):
    async def bounded():
        with anyio.fail_after(TEST_BUDGET):
            return await fn(*args)

    return anyio.run(bounded)


def messages(seen: list[dict]) -> list[tuple[dict, dict]]:
    """(recorded request, its JSON-RPC message or {}) for each request."""
    out = []
    for entry in seen:
        try:
            body = json.loads(entry["body"]) if entry["body"] else {}
        except ValueError:
            body = {}
        out.append((entry, body))
    return out


@pytest.fixture(params=ERAS)
def era(request):
    return request.param


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_session_initializes_and_lists(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            return s.protocol_version, await s.list_tools(), await s.list_resources(), await s.list_prompts()

    version, tools, resources, prompts = run(body)

    # delete_repo is never callable by mcp-agent: the gateway drops it from
    # the list (the server lists it).
    assert sorted(tools) == ["book_meeting", "deploy_service", "get_weather"]
    assert resources == ["tools://readme"]
    assert prompts == ["summarize"]
    if era == "auto":
        # 2.x asks `server/discover` first; the gateway must let the
        # current protocol through rather than push the client back to
        # the handshake.
        assert version == MODERN
    else:
        assert version != MODERN
    seen = gateway.seen_since("mcp", mark)
    assert_real_key_only("mcp", seen, gateway.token(AGENT))
    methods = [m.get("method") for _, m in messages(seen)]
    assert methods[0] == ("server/discover" if era == "auto" else "initialize"), methods


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_tools_list_pages_show_only_what_the_agent_may_call(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            first, cursor = await s.list_tools_page()
            second, last = await s.list_tools_page(cursor)
            return first, cursor, second, last

    first, cursor, second, last = run(body)

    # The server pages two tools at a time: [book_meeting, get_weather],
    # then [delete_repo, deploy_service]. The cursor passes through.
    assert sorted(t.name for t in first) == ["book_meeting", "get_weather"]
    assert cursor == "2"
    assert [t.name for t in second] == ["deploy_service"]
    assert last is None
    deploy = second[0]
    assert deploy.description.startswith("Deploys a service to production."), deploy.description
    assert "need human approval under the aegis policy" in deploy.description, deploy.description
    assert (deploy.meta or {}).get("aegis/approval") == "required", deploy
    # Callable tools are listed as the server sent them.
    weather = next(t for t in first if t.name == "get_weather")
    assert weather.description == "Current weather for a city."
    assert "aegis/approval" not in (weather.meta or {})
    lists = [m for _, m in messages(gateway.seen_since("mcp", mark)) if m.get("method") == "tools/list"]
    assert [(m.get("params") or {}).get("cursor") for m in lists] == [None, "2"]


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_a_tool_that_needs_approval_is_listed_and_its_call_asks_for_it(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            return await s.list_tools(), await s.call_tool("deploy_service", {"service": "billing"})

    tools, result = run(body)

    assert "deploy_service" in tools
    assert result.is_error, result.raw
    assert "needs human approval" in result.text, result.text
    calls = [m for _, m in messages(gateway.seen_since("mcp", mark)) if m.get("method") == "tools/call"]
    assert calls == [], "deploy_service reached the MCP server without approval"


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_allowed_tool_call_with_notifications(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            return await s.call_tool("get_weather", {"city": "Paris"}), s.events

    result, events = run(body)

    assert not result.is_error, result.text
    assert result.text == "Sunny in Paris"
    # The server's log message and progress notification came back on the
    # request's event stream, through the gateway.
    assert events.logs == ["looking up the weather in Paris"]
    assert [p[0] for p in events.progress] == [1.0]


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_denied_tool_call_is_a_tool_error_and_the_session_survives(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            denied = await s.call_tool("delete_repo", {"repo": "acme/payments"})
            after = await s.call_tool("get_weather", {"city": "Oslo"})
            return denied, after

    denied, after = run(body)

    assert denied.is_error, f"delete_repo was not refused: {denied.raw}"
    text = denied.text.lower()
    assert "denied" in text or "deny" in text, denied.text
    assert "delete_repo" in denied.text, denied.text
    assert "may not call" in denied.text or "not permitted" in text, denied.text
    assert not after.is_error and after.text == "Sunny in Oslo"
    calls = [m for _, m in messages(gateway.seen_since("mcp", mark)) if m.get("method") == "tools/call"]
    assert [c["params"]["name"] for c in calls] == ["get_weather"], "delete_repo reached the MCP server"


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_elicitation_round_trip(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            started = time.monotonic()
            result = await s.call_tool("book_meeting", {"title": "standup"})
            return result, s.events, time.monotonic() - started

    result, events, elapsed = run(body)

    assert not result.is_error, result.text
    assert result.text == "booked standup"
    assert events.elicitations == ["Book the meeting 'standup'?"]
    assert elapsed < 10
    seen = messages(gateway.seen_since("mcp", mark))
    if era == "auto":
        # 2026-07-28: the answer rides a second tools/call.
        retries = [m for _, m in seen if m.get("method") == "tools/call" and "inputResponses" in m.get("params", {})]
        assert len(retries) == 1, [m for _, m in seen]
    else:
        # Handshake era: the answer is a JSON-RPC response the client POSTs.
        answers = [m for _, m in seen if "method" not in m and "result" in m]
        assert [a["result"]["action"] for a in answers] == ["accept"], [m for _, m in seen]


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_closing_the_session_deletes_it(gateway, mode, era):
    if era == "auto":
        pytest.skip("a 2026-07-28 connection has no session to delete")
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, gateway.token(AGENT), proxy=proxy, mode=era) as s:
            await s.list_tools()

    run(body)

    seen = gateway.seen_since("mcp", mark)
    session_ids = {v for e in seen for k, v in e["headers"] if k == "mcp-session-id"}
    assert len(session_ids) == 1, session_ids
    deletes = [e for e in seen if e["method"] == "DELETE"]
    assert len(deletes) == 1, "the MCP server never saw the session's DELETE"
    assert dict(deletes[0]["headers"]).get("mcp-session-id") in session_ids
    assert_real_key_only("mcp", seen, gateway.token(AGENT))


@pytest.mark.parametrize("mode", GATEWAY_MODES)
def test_a_bad_token_fails_the_connect_with_the_reason(gateway, mode, era):
    url, proxy = url_and_proxy(gateway, mode)
    mark = gateway.mark("mcp")

    async def body():
        async with mcp_compat.connect(url, "mcp-not-an-aegis-token", proxy=proxy, mode=era):
            pass

    started = time.monotonic()
    with pytest.raises(BaseException) as caught:
        run(body)
    assert time.monotonic() - started < 15

    assert not isinstance(caught.value, (KeyboardInterrupt, SystemExit))
    text = describe(caught.value)
    if mcp_compat.MAJOR >= 2:
        # 2.x surfaces a JSON-RPC error carried in a non-2xx body.
        assert "invalid agent token" in text, text
    else:
        # 1.x raises on any non-2xx answer without reading its body; only
        # a 200 with a JSON-RPC error would show the reason.
        assert "invalid agent token" in text or "403" in text, text
    assert gateway.seen_since("mcp", mark) == []


def describe(exc: BaseException) -> str:
    """The exception's text, with those of an exception group's members."""
    parts = [f"{type(exc).__name__}: {exc}"]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(describe(inner))
    error = getattr(exc, "error", None)  # MCPError / McpError carry ErrorData
    if error is not None:
        parts.append(f"data={getattr(error, 'data', None)!r}")
    return "\n".join(parts)
