"""One way to drive the MCP Python SDK, 1.x or 2.x, over Streamable HTTP.

What differs between the majors, and how `connect` bridges it:

- HTTP library: 1.x `httpx.AsyncClient`; 2.x `httpx2.AsyncClient`.
- Transport: both `streamable_http_client(url, http_client=...)`; 1.x
  yields `(read, write, get_session_id)`, 2.x `(read, write)`.
- Session: 1.x `ClientSession(read, write, ...)` then
  `await session.initialize()`; 2.x `Client(transport, mode=...)`, which
  connects on entry.
- Protocol: 1.x does the initialize handshake (2025-11-25). 2.x in
  `mode="auto"` (its default) asks `server/discover` first; a server that
  answers it (mcp 2.x does) is then spoken to at 2026-07-28: one
  self-contained POST per request, no `initialize`, no `mcp-session-id`,
  no GET stream, no DELETE. An error answer to discover (a JSON-RPC
  error, or an HTTP error status) makes it fall back to the handshake; a
  network error is raised. `mode="legacy"` is the 1.x handshake.
- Timeouts: `read_timeout_seconds` is a `timedelta` in 1.x, seconds in 2.x.
- Results: camelCase fields in 1.x (`isError`, `protocolVersion`),
  snake_case in 2.x (`is_error`, `protocol_version`).
- Elicitation at 2026-07-28: the server answers the tool call with an
  `InputRequiredResult`; the client runs the callback and calls the tool
  again with `inputResponses`. In the handshake era (both majors) it is an
  `elicitation/create` request on the call's event stream, answered by a
  JSON-RPC response the client POSTs.
- Log messages at 2026-07-28 come only with `log_level=` set (an opt-in
  stamped on each request).
- A non-2xx answer to a request: 1.x calls `raise_for_status()` inside the
  transport's task group, so the whole session ends with
  `httpx.HTTPStatusError` (the body is never read); 2.x surfaces a
  JSON-RPC error carried in the body, else raises
  `MCPError("Server returned an error response")` for that request only.

The proxy: both take an HTTP client, so both go through the gateway as an
HTTP proxy (`proxy=` on the client) as well as to its base URL.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sdks

MAJOR = sdks.major("mcp")
READ_TIMEOUT = 10.0


@dataclass
class ToolResult:
    text: str
    is_error: bool
    raw: Any


@dataclass
class Events:
    """What the server sent the client besides results."""

    elicitations: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    progress: list[tuple[float, float | None, str | None]] = field(default_factory=list)


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", None) == "text")


def _is_error(result: Any) -> bool:
    value = getattr(result, "is_error", None)
    if value is None:
        value = getattr(result, "isError", False)
    return bool(value)


class Session:
    def __init__(self, session: Any, protocol_version: str, events: Events) -> None:
        self._s = session
        self.protocol_version = protocol_version
        self.events = events

    async def list_tools(self) -> list[str]:
        """Every tool's name, page after page."""
        names, cursor = [], None
        while True:
            tools, cursor = await self.list_tools_page(cursor)
            names += [t.name for t in tools]
            if cursor is None:
                return names

    async def list_tools_page(self, cursor: str | None = None) -> tuple[list[Any], str | None]:
        """One `tools/list` page: the SDK's tool objects and the next cursor."""
        if MAJOR >= 2:
            result = await self._s.list_tools(cursor=cursor, cache_mode="bypass")
            return list(result.tools), result.next_cursor
        from mcp.types import PaginatedRequestParams

        result = await self._s.list_tools(params=PaginatedRequestParams(cursor=cursor))
        return list(result.tools), result.nextCursor

    async def list_resources(self) -> list[str]:
        return [str(r.uri) for r in (await self._s.list_resources()).resources]

    async def list_prompts(self) -> list[str]:
        return [p.name for p in (await self._s.list_prompts()).prompts]

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            self.events.progress.append((progress, total, message))

        result = await self._s.call_tool(name, arguments, progress_callback=on_progress)
        return ToolResult(text=_text(result), is_error=_is_error(result), raw=result)


def _callbacks(events: Events, accept: bool):
    import mcp.types as types

    async def on_elicit(context: Any, params: Any):
        events.elicitations.append(params.message)
        if accept:
            return types.ElicitResult(action="accept", content={"confirm": True})
        return types.ElicitResult(action="decline")

    async def on_log(params: Any) -> None:
        events.logs.append(str(params.data))

    return on_elicit, on_log


@contextlib.asynccontextmanager
async def connect(url: str, token: str, *, proxy: str | None = None, mode: str = "legacy", accept: bool = True):
    """An MCP session to `url` with `Authorization: Bearer <token>` on every
    request, through `proxy` when given. `mode` is 2.x's connect mode
    ("auto" or "legacy"); 1.x always does the handshake ("legacy")."""
    events = Events()
    on_elicit, on_log = _callbacks(events, accept)
    headers = {"authorization": f"Bearer {token}"}
    if MAJOR >= 2:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        timeout = httpx2.Timeout(READ_TIMEOUT, read=READ_TIMEOUT * 2)
        async with httpx2.AsyncClient(headers=headers, proxy=proxy, timeout=timeout) as http:
            async with Client(
                streamable_http_client(url, http_client=http),
                mode=mode,
                read_timeout_seconds=READ_TIMEOUT,
                elicitation_callback=on_elicit,
                logging_callback=on_log,
                log_level="info",
            ) as client:
                yield Session(client, client.protocol_version, events)
    else:
        if mode != "legacy":
            raise ValueError(f"mcp {MAJOR}.x has no connect mode {mode!r}")
        import httpx
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        timeout = httpx.Timeout(READ_TIMEOUT, read=READ_TIMEOUT * 2)
        async with httpx.AsyncClient(headers=headers, proxy=proxy, timeout=timeout) as http:
            async with streamable_http_client(url, http_client=http) as (read, write, _session_id):
                async with ClientSession(
                    read,
                    write,
                    read_timeout_seconds=timedelta(seconds=READ_TIMEOUT),
                    elicitation_callback=on_elicit,
                    logging_callback=on_log,
                ) as session:
                    init = await session.initialize()
                    yield Session(session, str(init.protocolVersion), events)
