"""A real MCP server for the client suite, built with the installed SDK.

    python mcp_server.py --port P [--record FILE]

Streamable HTTP at http://127.0.0.1:P/mcp, stateful (a handshake-era
client gets an `mcp-session-id`), served by uvicorn. Runs under mcp 1.x
(`FastMCP`) and mcp 2.x (`MCPServer`, which also answers the 2026-07-28
protocol: `server/discover`, one self-contained POST per request, no
session). Tools:

- get_weather(city): "Sunny in <city>"; sends a log message and a progress
  notification to the client first (the server->client stream);
- delete_repo(repo): "deleted <repo>" (the policy never lets it through);
- deploy_service(service): "deployed <service>" (the policy asks for a
  human's approval on every call);
- book_meeting(title): asks the client to confirm by elicitation; accept
  with confirm=true -> "booked <title>", anything else -> "not booked".
  On mcp 2.x the question is a resolver (`Elicit`), which the SDK sends as
  an `elicitation/create` request mid-call (handshake era) or as an
  `InputRequiredResult` the client answers by calling the tool again
  (2026-07-28).

plus one resource (tools://readme) and one prompt (summarize). `tools/list`
answers in pages of PAGE_SIZE tools (`nextCursor` is the offset of the
next page), as a server with many tools does. With
--record, every HTTP request is appended to FILE as one JSON line (method,
path, headers as pairs, body), like upstreams/rest_api.py. DNS-rebinding
protection is off: the gateway forwards the tool's own host
(mcp.tools.internal) or its own address, not a loopback name the SDK would
allow by default.
"""

import argparse
import json
import threading
from importlib.metadata import version
from typing import Annotated

from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, Field

# No `from __future__ import annotations` here: both SDKs read the tools'
# annotations, and evaluate them in this module's globals.
MCP_MAJOR = int(version("mcp").split(".")[0])

if MCP_MAJOR >= 2:
    from mcp.server.mcpserver import (
        AcceptedElicitation,
        Context,
        Elicit,
        ElicitationResult,
        MCPServer,
        Resolve,
    )
else:
    from mcp.server.fastmcp import Context, FastMCP


class Confirm(BaseModel):
    confirm: bool = Field(description="Book the meeting?")


def build_server():
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)

    if MCP_MAJOR >= 2:
        server = MCPServer("aegis-test-tools", version="1.0.0", log_level="WARNING")

        def ask_to_book(title: str) -> Elicit[Confirm]:
            return Elicit(f"Book the meeting '{title}'?", Confirm)

        @server.tool()
        async def book_meeting(title: str, answer: Annotated[ElicitationResult[Confirm], Resolve(ask_to_book)]) -> str:
            """Books a meeting after the user confirms it."""
            if isinstance(answer, AcceptedElicitation) and answer.data.confirm:
                return f"booked {title}"
            return f"not booked: {answer.action}"

        def make_app():
            return server.streamable_http_app(
                streamable_http_path="/mcp", transport_security=security, host="127.0.0.1"
            )
    else:
        server = FastMCP(
            "aegis-test-tools",
            log_level="WARNING",
            streamable_http_path="/mcp",
            transport_security=security,
        )

        @server.tool()
        async def book_meeting(title: str, ctx: Context) -> str:
            """Books a meeting after the user confirms it."""
            answer = await ctx.elicit(f"Book the meeting '{title}'?", Confirm)
            if answer.action == "accept" and answer.data.confirm:
                return f"booked {title}"
            return f"not booked: {answer.action}"

        make_app = server.streamable_http_app

    @server.tool()
    async def get_weather(city: str, ctx: Context) -> str:
        """Current weather for a city."""
        # Both go to the client on this call's event stream.
        await ctx.info(f"looking up the weather in {city}")
        await ctx.report_progress(1, 1, "done")
        return f"Sunny in {city}"

    @server.tool()
    def delete_repo(repo: str) -> str:
        """Deletes a repository."""
        return f"deleted {repo}"

    @server.tool()
    def deploy_service(service: str) -> str:
        """Deploys a service to production."""
        return f"deployed {service}"

    paginate(server)

    @server.resource("tools://readme", name="readme", mime_type="text/plain")
    def readme() -> str:
        return "Tools for the Aegis client suite."

    @server.prompt()
    def summarize(text: str) -> str:
        """Summarize a text."""
        return f"Summarize this: {text}"

    return make_app()


PAGE_SIZE = 2


def page_of(tools: list, cursor: str | None):
    """`(tools on the page, next cursor)` for an offset cursor."""
    start = int(cursor or 0)
    end = start + PAGE_SIZE
    return tools[start:end], (str(end) if end < len(tools) else None)


def paginate(server) -> None:
    """Replaces the SDK's `tools/list` handler with one that pages."""
    if MCP_MAJOR >= 2:
        from mcp.types import ListToolsResult, PaginatedRequestParams

        async def handler(ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
            tools, next_cursor = page_of(await server.list_tools(), params.cursor if params else None)
            return ListToolsResult(tools=tools, next_cursor=next_cursor)

        server._lowlevel_server.add_request_handler("tools/list", PaginatedRequestParams, handler)
    else:
        from mcp.types import ListToolsRequest, ListToolsResult

        async def handler(req: ListToolsRequest) -> ListToolsResult:
            cursor = req.params.cursor if req.params else None
            tools, next_cursor = page_of(await server.list_tools(), cursor)
            return ListToolsResult(tools=tools, nextCursor=next_cursor)

        server._mcp_server.list_tools()(handler)


class Recording:
    """ASGI middleware: one JSON line per HTTP request (body included)."""

    def __init__(self, app, path: str) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        entry = {
            "method": scope["method"],
            "path": path,
            "headers": [[k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": body.decode("utf-8", errors="replace"),
        }
        with self.lock:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record")
    args = parser.parse_args()

    app = build_server()
    if args.record:
        app = Recording(app, args.record)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
