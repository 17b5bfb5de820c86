#!/usr/bin/env python3
"""The Envoy load benchmark (benches/envoy/README.md): one Envoy whose
listeners differ only in their HTTP filter chain, measured side by side in
interleaved rounds, on two sets of workloads (`--workloads`).

The MCP workloads (the production shape: an MCP server's tool calls, agents
named by a verified JWT), each sent to

  L0  router only
  MH  the Aegis filter (benches/envoy/policy-mcp, header identity) + router
  MJ  the Aegis filter (the same policy, per-agent JWT identity) + router
  JA  (--jwt-authn) Envoy's own jwt_authn filter, verifying the same token
      (its cache on) + router: no Aegis

The ledger workloads (JSON tool calls of 1 KB and 16 KB, half with PII,
agents named by a header), each sent to

  L0  router only
  L1  a no-op proxy-wasm filter (benches/envoy/noop-filter) + router
  L2  the Aegis filter (the bench policy, `aegis build`) + router
  L2B L2 with budgets: the bench policy with a `budget.daily_usd` for the
      ledger agent and a `cost_usd` on the rule its calls hit, the filter's
      `control_plane` pointing at the `aegis serve` run.sh started (budget
      leases per proxy; only a call the lease cannot cover calls out)
  L3  Envoy's native RBAC filter with the policy's header-level rules + router

Phase 1 (closed loop): capacity in requests/s with a fixed number of
connections, and Envoy's CPU time per request (/proc/<pid>/stat).
Phase 2 (open loop): latency percentiles at 50% of L0's capacity.
Every number in the summary is a median over rounds of a per-round
ratio (or difference) between listeners measured in that round.

run.sh builds the pieces and calls this script; it is not meant to be run
alone (it needs the paths run.sh passes). Standard library only.

`--load-only URL` is the one mode that runs alone: a steady, bounded load
on one listener with one JSON line per answer (see `load_only`), which the
e2e test of policy swaps through ECDS drives.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

CORE = ["L0", "L1", "L2", "L2B", "L3"]
# With --probes: the no-op filter in the mode named (see noop-filter/),
# measured in phase 1 only, to split what L2 adds over L1. The probes'
# module exports only what the Aegis blob exports (compiler/build.rs drops
# the callbacks the filter does not use; Envoy skips a stream callback the
# module does not export); L1 keeps every callback the SDK exports.
PROBES = {"P0": "noop", "P1": "hold", "P2": "read", "P3": "calls"}
LEDGER = list(CORE)  # the ledger workloads' listeners; extended by --probes
MCP = ["L0", "MH", "MJ"]  # the MCP workloads' listeners; JA with --jwt-authn
LISTENERS: list[str] = []  # every listener Envoy runs, in this order
LISTENER_DESC = {
    "L0": "router only",
    "L1": "no-op proxy-wasm filter",
    "L2": "Aegis filter",
    "L2B": "Aegis filter, budget leases from aegis serve",
    "L3": "native RBAC filter",
    "P0": "probe: no-op, with only the callbacks Aegis exports",
    "P1": "probe: P0 + headers held, body buffered",
    "P2": "probe: P1 + headers and body read into the VM",
    "P3": "probe: P2 + Aegis's other host calls",
    "MH": "Aegis filter, MCP policy, header identity",
    "MJ": "Aegis filter, MCP policy, JWT identity",
    "JA": "Envoy's jwt_authn (cache on), no Aegis",
}
# The listeners with the Aegis filter, and the histogram each filter
# records its own time in (P3 times its callbacks the same way).
AEGIS = ("L2", "L2B", "MH", "MJ")
FILTER_HISTOGRAM = {
    "L2": "aegis_request_latency_us",
    "L2B": "aegis_request_latency_us",
    "MH": "aegis_request_latency_us",
    "MJ": "aegis_request_latency_us",
    "P3": "probe_latency_us",
}
AGENT = "bookkeeping-agent"
HOST = "ledger.acme.internal"
PATH = "/v1/journal_entries"
WRONG_PATH = "/v1/journal_entries/je_1042/void"
SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
# The MCP server of benches/envoy/policy-mcp and the requests' MCP headers
# (Streamable HTTP, protocol version 2026-07-28).
MCP_AGENT = "mcp-agent"
MCP_HOST = "mcp.acme.internal"
MCP_PATH = "/mcp"
MCP_SIZE = 1024  # bytes of each tools/call body
MCP_ACCEPT = "application/json, text/event-stream"
MCP_HEADERS = {"mcp-protocol-version": "2026-07-28", "mcp-session-id": "bench-session-4f1c2a"}
ENVOY_CPU = "0"  # Envoy alone on CPU 0
LOAD_CPU = "1"  # load generator and upstream share CPU 1

CHILDREN: list[subprocess.Popen] = []
# L2B's control plane: the Envoy cluster of `aegis serve` (run.sh starts it
# on loopback, pinned to the load CPU) and the filter's settle tick.
CONTROL_CLUSTER = "aegis_control"
SETTLE_MS = 1000
NGINX: list[subprocess.Popen] = []  # the load upstream, once started


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"error: {msg}")
    sys.exit(1)


# ---------------------------------------------------------------- processes


def spawn(args: list[str], cpu: str, log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Starts `args` pinned to `cpu` (taskset execs it: the pid is the
    program's own)."""
    out = open(log_path, "wb")
    p = subprocess.Popen(
        ["taskset", "-c", cpu, *args],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )
    out.close()
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    """Ends one child this script started, by its own handle."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all() -> None:
    for p in list(CHILDREN):
        stop(p)


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_port(port: int, proc: subprocess.Popen, what: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{what} exited ({proc.returncode}); its log:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    die(f"{what} did not listen on {port} within {timeout}s; its log:\n{tail(log_path)}")


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def worker_sched(pid: int) -> tuple[int, int]:
    """(ns on CPU, ns runnable but waiting for a CPU) of Envoy's worker
    thread (`wrk:worker_0`), from /proc/<pid>/task/<tid>/schedstat. The
    waiting time is what other processes on CPU 0 took from it."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("wrk:worker"):
                run, wait, _ = (task / "schedstat").read_text().split()
                return int(run), int(wait)
        except (OSError, ValueError):
            continue
    return 0, 0


def cpu_idle(cpu: str) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                return sum(v) - idle, sum(v)
    return 0, 0


# ---------------------------------------------------------------- bodies


PAD_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu"
).split()
ACCOUNTS = ["4000-operating", "2100-payables", "6100-software", "6200-travel", "1200-receivables"]


def words(n: int, seed: int) -> str:
    return " ".join(PAD_WORDS[(seed * 7 + i * 3) % len(PAD_WORDS)] for i in range(n))


def tool_call(size: int, pii: bool) -> bytes:
    """A JSON journal entry of exactly `size` bytes, one line. With PII, the
    memo carries an SSN and a card number (two detections)."""
    memo = (
        f"Refund to customer SSN {SSN}, card {CARD}, per ticket"
        if pii
        else "Monthly reconciliation for vendor ACME, approved by the controller"
    )
    n_lines = max(2, size // 170)
    while True:
        lines = []
        for i in range(n_lines):
            side = "debit" if i % 2 == 0 else "credit"
            lines.append(
                {
                    "account": ACCOUNTS[i % len(ACCOUNTS)],
                    side: round(10 + i * 1.25, 2),
                    "note": f"line {i} {words(8, i)}",
                }
            )
        doc = {
            "amount": 1250.5,
            "currency": "usd",
            "account": "4000-operating",
            "memo": memo,
            "lines": lines,
            "attachment_summary": "",
        }
        base = len(json.dumps(doc, separators=(",", ":")).encode())
        if base <= size:
            break
        n_lines -= 1
        if n_lines < 1:
            die(f"a tool call cannot be as small as {size} bytes")
    need = size - base
    pad = (words(need // 4 + 8, 99) + " ") * 2
    doc["attachment_summary"] = pad[:need]
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size and b"\n" not in body, (len(body), size)
    return body


def mcp_call(tool: str, arguments: dict, rpc_id: int = 1, size: int = MCP_SIZE) -> bytes:
    """A JSON-RPC 2.0 `tools/call` of exactly `size` bytes, one line: the
    last argument pads the body to size."""
    pad_key = list(arguments)[-1]
    doc = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool, "arguments": dict(arguments)}}
    doc["params"]["arguments"][pad_key] = ""
    need = size - len(json.dumps(doc, separators=(",", ":")).encode())
    if need < 0:
        die(f"a tools/call of {tool} cannot be as small as {size} bytes")
    doc["params"]["arguments"][pad_key] = ((words(need // 4 + 8, 7) + " ") * 2)[:need]
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size and b"\n" not in body, (len(body), size)
    return body


def mcp_list(rpc_id: int = 2) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": "tools/list", "params": {}}, separators=(",", ":")).encode()


def schema(props: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


# What the MCP server (nginx) answers: a `tools/call` result, and for
# `tools/list` (chosen by the request's `mcp-method` header) the server's
# tools with their input schemas, the response a later change of the
# filter will cut down to the tools the agent may call.
MCP_CALL_REPLY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "ok"}], "isError": False}},
    separators=(",", ":"),
)
MCP_LIST_REPLY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {
            "tools": [
                {
                    "name": "get_weather",
                    "title": "Weather forecast",
                    "description": "Current weather and a forecast of up to 7 days for a location.",
                    "inputSchema": schema(
                        {
                            "location": {"type": "string", "description": "City and country, e.g. Zurich, CH"},
                            "units": {"type": "string", "enum": ["metric", "imperial"], "default": "metric"},
                            "days": {"type": "integer", "minimum": 1, "maximum": 7},
                            "context": {"type": "string", "description": "Why the forecast is needed"},
                        },
                        ["location"],
                    ),
                },
                {
                    "name": "delete_repo",
                    "title": "Delete a repository",
                    "description": "Deletes a repository and its history. Cannot be undone.",
                    "inputSchema": schema(
                        {
                            "repo": {"type": "string", "description": "owner/name"},
                            "confirm": {"type": "boolean"},
                            "reason": {"type": "string"},
                        },
                        ["repo", "confirm"],
                    ),
                    "annotations": {"destructiveHint": True, "idempotentHint": True},
                },
                {
                    "name": "search_issues",
                    "title": "Search issues",
                    "description": "Full-text search over the issues of a repository.",
                    "inputSchema": schema(
                        {
                            "repo": {"type": "string"},
                            "query": {"type": "string"},
                            "state": {"type": "string", "enum": ["open", "closed", "all"]},
                            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                        ["repo", "query"],
                    ),
                    "annotations": {"readOnlyHint": True},
                },
                {
                    "name": "create_issue",
                    "title": "Open an issue",
                    "description": "Opens an issue in a repository.",
                    "inputSchema": schema(
                        {
                            "repo": {"type": "string"},
                            "title": {"type": "string", "maxLength": 256},
                            "body": {"type": "string"},
                            "labels": {"type": "array", "items": {"type": "string"}},
                        },
                        ["repo", "title"],
                    ),
                },
            ]
        },
    },
    separators=(",", ":"),
)


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwks_from_pub(pem: str, kid: str) -> dict:
    """The JWKS of an Ed25519 SPKI PEM public key (`aegis keygen`'s
    .pub): one OKP key, as Envoy's jwt_authn reads it."""
    der = base64.b64decode("".join(line for line in pem.splitlines() if not line.startswith("-----")))
    if len(der) != 44 or der[:12] != bytes.fromhex("302a300506032b6570032100"):
        die("the issuer key is not an SPKI PEM Ed25519 public key")
    x = base64.urlsafe_b64encode(der[12:]).rstrip(b"=").decode()
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}]}


# ---------------------------------------------------------------- workloads


class Workload:
    """One kind of request, sent to each of its listeners in turn: POST
    `path` on `host` with one of `bodies` (oha picks one at random for
    each request; one a line in `file`) and the headers `headers_for` the
    listener gives. The Aegis listeners must decide every request as one of
    `decisions`; `answered_by_aegis`: they answer it themselves (a denied
    call), the others forward it."""

    def __init__(
        self,
        key: str,
        label: str,
        part: str,
        listeners: list[str],
        host: str,
        path: str,
        bodies: list[bytes],
        headers_for,
        decisions: set[str],
        answered_by_aegis: bool = False,
        upstream_reply: bytes = b'{"ok":true}',
        aegis_reply: dict | None = None,
    ):
        self.key, self.label, self.part, self.listeners = key, label, part, listeners
        self.host, self.path, self.bodies, self.headers_for = host, path, bodies, headers_for
        self.decisions, self.answered_by_aegis, self.upstream_reply = decisions, answered_by_aegis, upstream_reply
        # What the client gets through an Aegis listener when the filter
        # rewrites the upstream's answer (a filtered tools/list), as JSON.
        self.aegis_reply = aegis_reply
        self.file: Path | None = None

    def write(self, workdir: Path) -> None:
        self.file = workdir / f"bodies-{self.key}.lines"
        self.file.write_bytes(b"".join(b + b"\n" for b in self.bodies))


def ledger_workloads(sizes: list[int]) -> list[Workload]:
    """A 1 KB / 16 KB journal entry to the ledger, clean or with PII (half
    of each)."""
    return [
        Workload(
            f"ledger-{size}",
            size_label(size),
            "ledger",
            LEDGER,
            HOST,
            PATH,
            [tool_call(size, False), tool_call(size, True)],
            lambda name: {"x-aegis-agent": AGENT},
            {"allow", "sanitize"},
        )
        for size in sizes
    ]


def mcp_workloads(token: str) -> list[Workload]:
    """The MCP server's calls as an MCP 2026-07-28 client sends them. MH
    gets the agent's name in the header its identity trusts; MJ, JA and L0
    (which ignores it) the agent's token."""

    def headers(method: str, tool: str | None):
        def for_listener(name: str) -> dict[str, str]:
            h = {"accept": MCP_ACCEPT, **MCP_HEADERS, "mcp-method": method}
            if tool:
                h["mcp-name"] = tool
            if name == "MH":
                h["x-aegis-agent"] = MCP_AGENT
            else:
                h["authorization"] = f"Bearer {token}"
            return h

        return for_listener

    weather = {"location": "Zurich, CH", "units": "metric", "days": 3, "context": ""}
    repo = {"repo": "acme/payments-service", "confirm": True, "reason": ""}
    common = dict(part="mcp", listeners=MCP, host=MCP_HOST, path=MCP_PATH)
    return [
        Workload(
            "mcp-call-allowed",
            "call allowed",
            bodies=[mcp_call("get_weather", weather)],
            headers_for=headers("tools/call", "get_weather"),
            decisions={"allow"},
            upstream_reply=MCP_CALL_REPLY.encode(),
            **common,
        ),
        Workload(
            "mcp-call-denied",
            "call denied",
            bodies=[mcp_call("delete_repo", repo)],
            headers_for=headers("tools/call", "delete_repo"),
            decisions={"deny"},
            answered_by_aegis=True,
            upstream_reply=MCP_CALL_REPLY.encode(),
            **common,
        ),
        Workload(
            "mcp-list",
            "tools/list",
            bodies=[mcp_list()],
            headers_for=headers("tools/list", None),
            decisions={"allow"},
            upstream_reply=MCP_LIST_REPLY.encode(),
            aegis_reply=filtered_list(MCP_LIST_REPLY, {"get_weather"}),
            **common,
        ),
    ]


def filtered_list(reply: str, callable_tools: set[str]) -> dict:
    """The tools/list answer as the Aegis filter hands it to mcp-agent:
    only the tools it may call (it has no approval-only tools)."""
    out = json.loads(reply)
    out["result"]["tools"] = [t for t in out["result"]["tools"] if t["name"] in callable_tools]
    return out


# ---------------------------------------------------------------- RBAC


def host_regex(host: str) -> str:
    """What Aegis accepts as this host: ASCII case ignored, one trailing
    dot, any port."""
    if host.startswith("*."):
        core = r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*" + re.escape(host[1:])
    else:
        core = re.escape(host)
    return f"(?i){core}\\.?(:[0-9]+)?"


def path_matcher(path: str) -> dict:
    if "{" not in path:
        return {"path": {"exact": path}}
    parts = []
    for seg in path.split("/"):
        parts.append("[^/]+" if seg.startswith("{") and seg.endswith("}") else re.escape(seg))
    return {"path": {"safe_regex": {"regex": "/".join(parts)}}}


def egress_allows(egress: list[str] | None, host: str) -> list[str]:
    """The hosts of `host` (a tool host, maybe `*.x`) that the agent's
    egress list lets through."""
    if egress is None:
        return [host]
    out = []
    for e in egress:
        if e.lower() == host.lower():
            out.append(host)
        elif e.startswith("*.") and not host.startswith("*.") and host.lower().endswith(e[1:].lower()):
            out.append(host)
        elif host.startswith("*.") and not e.startswith("*.") and e.lower().endswith(host[1:].lower()):
            out.append(e)
        elif host.startswith("*.") and e.startswith("*.") and e.lower().endswith(host[1:].lower()):
            out.append(e)
    return sorted(set(out))


def rbac_from_explain(explain: dict) -> tuple[dict, list[str]]:
    """An RBAC ALLOW policy per agent from `aegis explain --format json`:
    principal = the agent header (and tenant header), permissions = one
    (method, host, path) per rule the agent has, hosts cut to its egress
    list. What RBAC cannot express (conditions, `when`, DLP, body checks)
    is dropped, so RBAC allows a superset of what Aegis allows, except
    rules that always need approval, which Aegis never lets through and
    RBAC leaves out."""
    policies: dict = {}
    notes: list[str] = []
    for agent in explain["agents"]:
        aid = agent["agent"]
        tenant, _, name = aid.rpartition("/")
        principal = [{"header": {"name": "x-aegis-agent", "string_match": {"exact": name}}}]
        if tenant:
            principal.append({"header": {"name": "x-aegis-tenant", "string_match": {"exact": tenant}}})
        else:
            principal.append({"header": {"name": "x-aegis-tenant", "present_match": True, "invert_match": True}})
        perms = []
        if agent.get("dlp"):
            d = agent["dlp"]
            notes.append(f"{aid}: DLP {d.get('detectors')} + custom {d.get('custom')} ({d.get('action')}) not expressible")
        if agent.get("mode") == "shadow":
            perms.append({"any": True})
            notes.append(f"{aid}: shadow mode never blocks: any request")
        for rule in agent["rules"]:
            if rule["then"].startswith("approval_needed"):
                notes.append(f"{rule['id']}: always needs approval: left out")
                continue
            call = rule["call"]
            if call.startswith("mcp "):
                # "mcp tools/call `name` at host|host/path": RBAC sees only POST path.
                hosts_path = call.rsplit(" at ", 1)[1]
                method = "POST"
                notes.append(f"{rule['id']}: MCP tool name not checked (body)")
            else:
                method, hosts_path = call.split(" ", 1)
            slash = hosts_path.index("/")
            hosts, path = hosts_path[:slash].split("|"), hosts_path[slash:]
            allowed = sorted({h for th in hosts for h in egress_allows(agent.get("egress"), th)})
            if not allowed:
                notes.append(f"{rule['id']}: host outside the agent's egress: left out")
                continue
            host_rules = [
                {"header": {"name": ":authority", "string_match": {"safe_regex": {"regex": host_regex(h)}}}}
                for h in allowed
            ]
            perms.append(
                {
                    "and_rules": {
                        "rules": [
                            {"header": {"name": ":method", "string_match": {"exact": method}}},
                            host_rules[0] if len(host_rules) == 1 else {"or_rules": {"rules": host_rules}},
                            {"url_path": path_matcher(path)},
                        ]
                    }
                }
            )
            if rule["when"] or rule["require"]:
                notes.append(f"{rule['id']}: conditions not expressible: {rule['when'] + rule['require']}")
        if perms:
            policies[aid] = {"principals": [{"and_ids": {"ids": principal}}], "permissions": perms}
    return {"action": "ALLOW", "policies": policies}, notes


# ---------------------------------------------------------------- Envoy config


def leb128(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def uleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sections(wasm: bytes):
    """(id, body) of every section of a module, in order."""
    i = 8
    while i < len(wasm):
        size, j = leb128(wasm, i + 1)
        yield wasm[i], wasm[j : j + size]
        i = j + size


def exports(body: bytes):
    """(name, raw entry) of every entry of an export section's body."""
    count, k = leb128(body, 0)
    for _ in range(count):
        start = k
        n, k = leb128(body, k)
        name = body[k : k + n].decode()
        _, k = leb128(body, k + n + 1)  # kind byte, then the index
        yield name, body[start:k]


def export_names(wasm: bytes) -> set[str]:
    return {name for sid, body in sections(wasm) if sid == 7 for name, _ in exports(body)}


def with_exports_of(wasm: bytes, model: bytes) -> bytes:
    """`wasm` without the exports `model` does not have (the export
    section, id 7, rewritten; every other section copied)."""
    keep = export_names(model)
    out = bytearray(wasm[:8])
    for sid, body in sections(wasm):
        if sid == 7:
            kept = [raw for name, raw in exports(body) if name in keep]
            body = uleb128(len(kept)) + b"".join(kept)
        out += bytes([sid]) + uleb128(len(body)) + body
    return bytes(out)


def aegis_configuration(trusted_key: str, filter_state: list[str] | None, token_cache: int | None) -> dict:
    conf = {"trusted_keys": [trusted_key], "allow_on_headers_stop_iteration": True}
    if filter_state is not None:
        conf["filter_state"] = filter_state
    if token_cache is not None:
        conf["token_cache"] = {"entries": token_cache}
    return conf


def jwt_authn_filter(issuer: str, audience: str, jwks: dict) -> dict:
    """Envoy's own JWT verification (BoringSSL) of the agent token: the
    same issuer, audience and key as MJ's identity, the JWKS inline, the
    verified tokens cached, the payload written to the request's dynamic
    metadata (as a filter after it would read it). Like Aegis it removes
    the token before forwarding (`forward` is false by default)."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "agents": {
                    "issuer": issuer,
                    "audiences": [audience],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "payload_in_metadata": "agent_token",
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "agents"}}],
        },
    }


def envoy_config(
    admin: int,
    ports: dict[str, int],
    upstream: int,
    wasms: dict[str, Path],
    trusted_key: str,
    rbac: dict | None,
    filter_state: list[str] | None,
    jwt_authn: dict | None,
    token_cache: int | None = None,
    control: ControlPlane | None = None,
) -> dict:
    """`wasms`: the module of each wasm listener (`noop` for L1, `probe` for
    P0-P3, and L2, L2B, MH, MJ); only the listeners in LISTENERS are set
    up. `control`: the `aegis serve` of L2B (its cluster and the filter's
    `control_plane`)."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }

    def wasm(name: str, path: Path, configuration: str) -> dict:
        # The same plugin settings for the no-op and the Aegis filter, as in
        # envoy/sidecar.yaml.
        return {
            "name": name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": name,
                    "root_id": name,
                    "allow_on_headers_stop_iteration": True,
                    "failure_policy": "FAIL_CLOSED",
                    "vm_config": {
                        "vm_id": name,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": str(path)}},
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": configuration,
                    },
                },
            },
        }

    # The three Aegis listeners have the same plugin settings; only the
    # blob (policy and identity) differs.
    aegis_conf = json.dumps(aegis_configuration(trusted_key, filter_state, token_cache))
    plugin = {"L2": "aegis", "MH": "aegis-mh", "MJ": "aegis-mj"}
    # L2B: L2's settings plus the control plane. Bundle polling is off: the
    # service publishes the policy signed with its own key, which the bench
    # blobs' `trusted_keys` do not hold, and L2B keeps the bundle it loaded.
    budget_conf = ""
    if control is not None:
        conf = aegis_configuration(trusted_key, filter_state, token_cache)
        conf["control_plane"] = {
            "cluster": CONTROL_CLUSTER,
            "token": control.gateway_token,
            "bundle_poll_ms": 0,
            "lease_calls": control.lease_calls,
            "settle_ms": SETTLE_MS,
        }
        budget_conf = json.dumps(conf)

    def chain(name: str) -> list[dict]:
        if name == "L0":
            return [router]
        if name == "L1":
            return [wasm("noop", wasms["noop"], "{}"), router]
        if name in PROBES:
            return [wasm(f"probe-{PROBES[name]}", wasms["probe"], PROBES[name]), router]
        if name in plugin:
            return [wasm(plugin[name], wasms[name], aegis_conf), router]
        if name == "L2B":
            return [wasm("aegis-budget", wasms[name], budget_conf), router]
        if name == "L3":
            rules = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": rbac}
            return [{"name": "envoy.filters.http.rbac", "typed_config": rules}, router]
        if name == "JA":
            return [jwt_authn, router]
        raise ValueError(name)

    listeners = []
    for name in LISTENERS:
        prefix = name.lower()
        listeners.append(
            {
                "name": prefix,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[name]}},
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.http_connection_manager",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                    "stat_prefix": prefix,
                                    "preserve_external_request_id": True,
                                    "route_config": {
                                        "name": prefix,
                                        "virtual_hosts": [
                                            {
                                                "name": "tools",
                                                "domains": ["*"],
                                                "routes": [
                                                    {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "30s"}}
                                                ],
                                            }
                                        ],
                                    },
                                    "http_filters": chain(name),
                                },
                            }
                        ]
                    }
                ],
            }
        )
    clusters = [
        {
            "name": "upstream",
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": "upstream",
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}]}
                ],
            },
        }
    ]
    if control is not None:
        # As filter/README.md asks: an idle timeout below the service's 10 s
        # keep-alive, so that Envoy never reuses a connection it is closing.
        clusters.append(
            {
                "name": CONTROL_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "common_http_protocol_options": {"idle_timeout": "5s"},
                        "explicit_http_config": {"http_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": CONTROL_CLUSTER,
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": control.port}}}}
                            ]
                        }
                    ],
                },
            }
        )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        # No flush timer: Envoy merges the worker's histograms when the
        # admin is asked for stats, so that the script can read the filter's
        # own histogram before and after each run (Envoy.histogram).
        "stats_flush_on_admin": True,
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


class Envoy:
    def __init__(self, binary: str, config: Path, workdir: Path, admin: int):
        self.admin = admin
        self.log = workdir / "envoy.log"
        self.proc = spawn(
            [
                binary,
                "-c",
                str(config),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
                "--component-log-level",
                "wasm:info",
            ],
            ENVOY_CPU,
            self.log,
            cwd=workdir,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                die(f"envoy exited ({self.proc.returncode}); its log:\n{tail(self.log)}")
            try:
                if self.get("/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        die(f"envoy was not ready after 90s; its log:\n{tail(self.log)}")

    def get(self, path: str) -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            c.close()

    def histogram(self, name: str) -> dict[tuple[float, float], int]:
        """The buckets ((lower bound, width) -> count) of a filter's own
        histogram (`aegis_request_latency_us`: the time inside the Aegis
        filter's callbacks, host calls included; `probe_latency_us`: the
        same for probe P3), over every request since Envoy started. Every
        Aegis listener records into the same histogram (a wasm metric has
        no per-plugin prefix), so `measure` takes the difference over one
        run of one listener. Envoy merges the worker's share into these
        totals when stats are asked for (`stats_flush_on_admin`), after the
        answer: read until two reads agree."""
        stat = f"wasmcustom.{name}"
        prev = None
        for _ in range(40):
            status, text = self.get(f"/stats?format=json&histogram_buckets=detailed&filter={name}$")
            if status != 200:
                die(f"envoy /stats (histogram {name}) answered {status}")
            cur: dict[tuple[float, float], int] = {}
            for entry in json.loads(text).get("stats", []):
                hist = entry.get("histograms")
                for d in hist.get("details", []) if isinstance(hist, dict) else []:
                    if d.get("name") == stat:
                        for b in d.get("totals", []):
                            cur[(b["lower_bound"], b["width"])] = b["count"]
            if cur == prev:
                return cur
            prev = cur
            time.sleep(0.05)
        die(f"envoy's histogram {name} did not settle")
        return {}

    def counters(self) -> dict[str, int]:
        """Downstream request counters per listener, the Aegis decision
        counters (by decision, every listener together) and jwt_authn's
        counters, by name."""
        status, text = self.get("/stats?usedonly")
        if status != 200:
            die(f"envoy /stats answered {status}")
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if re.fullmatch(r"http\.[a-z0-9]+\.(downstream_rq_(completed|2xx|4xx|5xx)|jwt_authn\.[a-z_]+)", name):
                out[name] = int(value)
            elif name.endswith("aegis_decision_total"):
                m = re.search(r"decision=\.=([a-z_]+);", name)
                if m:
                    key = f"aegis.{m.group(1)}"
                    out[key] = out.get(key, 0) + int(value)
        return out


class ControlPlane:
    """The `aegis serve` that run.sh started for L2B (SQLite in a temp dir,
    `--policies` the budget variant of the bench policy): its port, the
    gateway token the filter presents, an admin token to read the budget
    with, the lease size and the cost of one of L2B's calls."""

    def __init__(self, port: int, gateway_token: str, admin_token: str, lease_calls: int, cost_usd: float):
        self.port, self.gateway_token, self.admin_token = port, gateway_token, admin_token
        self.lease_calls, self.cost_usd = lease_calls, cost_usd

    def get(self, path: str, token: str | None = None) -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path, headers={"authorization": f"Bearer {token}"} if token else {})
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            c.close()

    def metrics(self) -> dict[str, int]:
        """From the service's `/metrics`: the lease events
        (`leases.granted`, `leases.empty`, `leases.settled`, ...) and the
        calls to the lease and settle routes (`lease_calls`,
        `settle_calls`), with those not answered 200 (`lease_errors`,
        `settle_errors`)."""
        status, text = self.get("/metrics")
        if status != 200:
            die(f"aegis serve /metrics answered {status}")
        out = {"lease_calls": 0, "settle_calls": 0, "lease_errors": 0, "settle_errors": 0}
        for line in text.splitlines():
            m = re.fullmatch(r'aegis_control_leases_total\{event="([a-z_]+)"\} (\d+)', line)
            if m:
                out[f"leases.{m.group(1)}"] = int(m.group(2))
                continue
            m = re.fullmatch(
                r'aegis_control_requests_total\{method="[A-Za-z]+",route="/v1/budgets/(lease|settle)",status="(\d+)"\} (\d+)',
                line,
            )
            if m:
                out[f"{m.group(1)}_calls"] += int(m.group(3))
                if m.group(2) != "200":
                    out[f"{m.group(1)}_errors"] += int(m.group(3))
        return out

    def budget(self) -> dict:
        """The ledger agent's budget today: limit, spent, reserved, open leases."""
        status, text = self.get(f"/v1/budgets?tenant=default&agent={AGENT}", self.admin_token)
        if status != 200:
            die(f"aegis serve GET /v1/budgets answered {status}: {text[:300]}")
        agents = json.loads(text).get("agents", [])
        if len(agents) != 1:
            die(f"aegis serve GET /v1/budgets: expected the ledger agent, got {text[:300]}")
        return agents[0]


# ---------------------------------------------------------------- verification


class Echo(http.server.BaseHTTPRequestHandler):
    """The verification upstream: answers every request with the body it
    received (content-length or chunked) and closes the connection, so that
    no pooled Envoy connection outlives it."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.do_POST()

    def do_DELETE(self) -> None:  # noqa: N802
        self.do_POST()

    def do_POST(self) -> None:  # noqa: N802
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": [(k.lower(), v) for k, v in self.headers.items()],
                    "body": body,
                }
            )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


class EchoServer(http.server.ThreadingHTTPServer):
    """The echo upstream, with every request it received (`take`)."""

    daemon_threads = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), Echo)
        self.lock = threading.Lock()
        self.seen: list[dict] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def take(self) -> list[dict]:
        with self.lock:
            seen, self.seen = self.seen, []
        return seen

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def send(
    port: int,
    path: str,
    body: bytes | None,
    agent: str = AGENT,
    method: str = "POST",
    host: str = HOST,
    content_type: str = "application/json",
    extra: dict | None = None,
) -> tuple[int, dict, bytes]:
    headers = {"host": host, **({"x-aegis-agent": agent} if agent else {}), **(extra or {})}
    if body is not None:
        headers["content-type"] = content_type
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def verify_with_echo(ports: dict[str, int], bodies: dict[int, dict[str, bytes]]) -> list[str]:
    """Every ledger listener forwards the bench requests (200 through the
    upstream); L2 and L2B rewrite the PII bodies and nothing else; L2, L2B
    and L3 deny a path the policy does not allow and an unknown agent."""
    report = []
    for size, pair in bodies.items():
        for kind, body in pair.items():
            for name in LEDGER:
                status, headers, echoed = send(ports[name], PATH, body)
                if status != 200:
                    die(f"{name} {size} B {kind}: status {status}: {echoed[:300]!r}")
                if name in ("L2", "L2B") and kind == "pii":
                    text = echoed.decode()
                    if SSN in text or CARD in text:
                        die(f"{name} forwarded PII unredacted ({size} B)")
                    if "[REDACTED:ssn]" not in text or "[REDACTED:credit_card]" not in text:
                        die(f"{name} did not redact as expected ({size} B): {text[:300]}")
                    want = json.loads(body)
                    want["memo"] = want["memo"].replace(SSN, "[REDACTED:ssn]").replace(CARD, "[REDACTED:credit_card]")
                    if json.loads(echoed) != want:
                        die(f"{name} changed more than the PII ({size} B): {text[:300]}")
                elif echoed != body:
                    die(f"{name} {size} B {kind}: the upstream got another body")
    report.append(
        f"every ledger listener answers 200 through the upstream for the {' and '.join(size_label(z) for z in bodies)} bodies; "
        "only L2 and L2B rewrote them: the PII bodies arrived with [REDACTED:ssn] and "
        "[REDACTED:credit_card], the clean ones byte for byte"
    )
    body = next(iter(bodies.values()))["clean"]
    expect = {"L2": 403, "L2B": 403, "L3": 403}  # the others: 200
    for name in LEDGER:
        want = expect.get(name, 200)
        status, headers, reply = send(ports[name], WRONG_PATH, body)
        if status != want:
            die(f"{name}: POST {WRONG_PATH} gave {status}, expected {want}: {reply[:300]!r}")
        if name in ("L2", "L2B") and headers.get("x-aegis-decision") != "deny":
            die(f"{name}: no `x-aegis-decision: deny` on the denied request: {headers}")
        status, _, reply = send(ports[name], PATH, body, agent="intern-agent")
        if status != want:
            die(f"{name}: unknown agent gave {status}, expected {want}: {reply[:300]!r}")
    report.append(
        f"POST {WRONG_PATH} and an unknown agent: 200 on L0/L1, 403 on L2 and L2B (x-aegis-decision: deny) and L3 (RBAC)"
    )
    # The RBAC listener against Aegis on the header-level rules of the
    # whole policy: both must agree, except where a body condition decides.
    form = "application/x-www-form-urlencoded"
    stripe = "api.stripe.com"
    for what, kw, want_l2, want_l3 in RBAC_MATRIX(body, form, stripe):
        got = (send(ports["L2"], **kw)[0], send(ports["L3"], **kw)[0])
        if got != (want_l2, want_l3):
            die(f"RBAC check `{what}`: L2/L3 answered {got}, expected {(want_l2, want_l3)}")
    report.append(
        f"L2 and L3 agree on {sum(1 for m in RBAC_MATRIX(body, form, stripe) if m[2] == m[3])} header-level "
        "requests (agents, hosts, methods, paths, tenant header, host case and port) and differ where "
        "only a body condition decides (L3 lets those through)"
    )
    return report


def verify_control(control: ControlPlane, served: int) -> str:
    """L2B took its budget from the control plane: the calls it served so
    far were paid from at least one lease, and every lease call was
    answered 200."""
    m = control.metrics()
    if m.get("leases.granted", 0) < 1 or m["lease_errors"]:
        die(f"L2B served {served} calls but aegis serve counted {m}: expected a granted lease and no errors")
    return (
        f"L2B's {served} calls so far were paid from {m['leases.granted']} lease(s) that aegis serve granted "
        f"({m['lease_calls']} lease call(s), all answered 200)"
    )


def settle_check(env: Envoy, control: ControlPlane) -> dict:
    """After the last run: once the filter's tick has reported, what the
    control plane counts as spent must be the cost of every call L2B served
    (each was a call of the costed rule), and only the proxy's current lease
    stays open."""
    served = env.counters().get("http.l2b.downstream_rq_2xx", 0)
    cost = round(control.cost_usd * 1e6)
    want = served * cost
    deadline = time.monotonic() + 10 * SETTLE_MS / 1000
    while True:
        b = control.budget()
        spent = round(b["spent_usd"] * 1e6)
        if spent == want or time.monotonic() > deadline:
            break
        time.sleep(SETTLE_MS / 1000 / 2)
    m = control.metrics()
    log_text = env.log.read_text(errors="replace")
    return {
        # What the filter logged about its leases: a spent total dropped
        # from a full settle queue is lost to the control plane's count (a
        # give-back dropped was usually sent by its own call already); a
        # failed lease call is a 503.
        "settles_dropped": log_text.count("what it spent is not counted"),
        "give_backs_dropped": log_text.count("given back by its own call"),
        "control_failures": log_text.count("the control plane failed the budget check"),
        "served": served,
        "want_spent_usd": want / 1e6,
        "spent_usd": b["spent_usd"],
        "reserved_usd": b["reserved_usd"],
        "open_leases": b["open_leases"],
        "metrics": m,
    }


def RBAC_MATRIX(body: bytes, form: str, stripe: str) -> list[tuple[str, dict, int, int]]:  # noqa: N802
    """(what, request, L2 status, L3 status) with the echo upstream."""
    return [
        ("bookkeeping: post an entry", dict(path=PATH, body=body), 200, 200),
        ("bookkeeping: read an entry", dict(path=f"{PATH}/je_1042", body=None, method="GET"), 200, 200),
        ("bookkeeping: host in another case, with a port", dict(path=PATH, body=body, host="LEDGER.Acme.Internal:8443"), 200, 200),
        ("bookkeeping: unlisted path", dict(path=WRONG_PATH, body=body), 403, 403),
        ("bookkeeping: unlisted method", dict(path=f"{PATH}/je_1042", body=None, method="DELETE"), 403, 403),
        ("bookkeeping: Stripe is outside its egress", dict(path="/v1/payment_intents", body=b"amount=10&currency=usd", host=stripe, content_type=form), 403, 403),
        ("bookkeeping: with a tenant header", dict(path=PATH, body=body, extra={"x-aegis-tenant": "acme"}), 403, 403),
        ("finance: post a journal entry", dict(path=PATH, body=body, agent="finance-agent"), 403, 403),
        ("finance: small payment", dict(path="/v1/payment_intents", body=b"amount=1200&currency=usd", agent="finance-agent", host=stripe, content_type=form), 200, 200),
        ("finance: refunds are not listed", dict(path="/v1/refunds", body=b"amount=10&charge=ch_1", agent="finance-agent", host=stripe, content_type=form), 403, 403),
        ("payments: read a customer", dict(path="/v1/customers/cus_123", body=None, method="GET", agent="payments-agent", host=stripe), 200, 200),
        ("payments: delete a customer", dict(path="/v1/customers/cus_123", body=None, method="DELETE", agent="payments-agent", host=stripe), 403, 403),
        ("unknown agent", dict(path=PATH, body=body, agent="intern-agent"), 403, 403),
        ("body condition: finance payment above 5000 (approval)", dict(path="/v1/payment_intents", body=b"amount=9000&currency=usd", agent="finance-agent", host=stripe, content_type=form), 403, 200),
        ("body condition: bookkeeping in btc", dict(path=PATH, body=b'{"amount":10,"currency":"btc"}'), 403, 200),
        ("DLP deny: payments card number", dict(path="/v1/payment_intents", body=b"amount=100&currency=usd&description=card+4111+1111+1111+1111", agent="payments-agent", host=stripe, content_type=form), 403, 200),
    ]


def check_tool_error(where: str, status: int, headers: dict, reply: bytes, tool: str = "delete_repo") -> None:
    """Aegis's answer to a refused tools/call, in MCP's shape: HTTP 200 and
    a JSON-RPC result for the request's id with `isError: true`."""
    try:
        doc = json.loads(reply)
        result = doc["result"]
        text = result["content"][0]["text"]
    except (ValueError, KeyError, IndexError, TypeError):
        die(f"{where}: not a JSON-RPC tool result: {status} {reply[:300]!r}")
    if status != 200 or headers.get("x-aegis-decision") != "deny":
        die(f"{where}: expected 200 with `x-aegis-decision: deny`, got {status} {headers}")
    if doc.get("jsonrpc") != "2.0" or doc.get("id") != 1 or result.get("isError") is not True or tool not in text:
        die(f"{where}: not the tool error for `{tool}`: {reply[:300]!r}")


def verify_mcp_with_echo(ports: dict[str, int], server: EchoServer, workloads: list[Workload], token: str) -> list[str]:
    """The MCP listeners against the echo upstream: the allowed call and
    tools/list reach it byte for byte with their MCP headers, and without
    the agent's token where a filter verified it (MJ, JA); the denied call
    is answered by Aegis itself with a JSON-RPC tool error and never
    reaches it (MH, MJ); MJ and JA refuse a request without a token or with
    a bad one, MH one from an unknown agent."""
    report = []
    server.take()
    for wl in workloads:
        for name in wl.listeners:
            sent = wl.headers_for(name)
            status, headers, reply = send(ports[name], wl.path, wl.bodies[0], agent=None, host=wl.host, extra=sent)
            seen = server.take()
            where = f"{name} {wl.key}"
            if wl.answered_by_aegis and name in AEGIS:
                check_tool_error(where, status, headers, reply)
                if seen:
                    die(f"{where}: the upstream got the denied call")
                continue
            if status != 200 or reply != wl.bodies[0]:
                die(f"{where}: {status} {reply[:300]!r}")
            if len(seen) != 1 or seen[0]["path"] != wl.path or seen[0]["body"] != wl.bodies[0]:
                got = [(r["path"], len(r["body"])) for r in seen]
                die(f"{where}: the upstream did not get the request byte for byte: {got}")
            got = seen[0]["headers"]
            for k in ("mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id"):
                if [v for h, v in got if h == k] != ([sent[k]] if k in sent else []):
                    die(f"{where}: the upstream got `{k}` as {[v for h, v in got if h == k]}, sent {sent.get(k)!r}")
            if name in ("MJ", "JA") and any(h == "authorization" or token in v for h, v in got):
                die(f"{where}: the upstream got the agent's token: {got}")
    ja = " and JA" if "JA" in ports else ""
    report.append(
        f"the MCP listeners forward the allowed tools/call and tools/list to the upstream byte for byte with "
        f"their MCP headers, MJ{ja} without the agent's token; MH and MJ answer the denied call themselves "
        "(200, JSON-RPC result with isError: true, x-aegis-decision: deny) and the upstream never gets it; "
        "L0 forwards all three"
    )
    call = next(wl for wl in workloads if wl.key == "mcp-call-allowed")
    head, payload, sig = token.split(".")
    i = len(sig) // 2
    bad = ".".join([head, payload, sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1 :]])
    without = {k: v for k, v in call.headers_for("MJ").items() if k != "authorization"}
    refusals = [
        ("MH", "an unknown agent", {**call.headers_for("MH"), "x-aegis-agent": "intern-agent"}),
        ("MJ", "no token", without),
        ("MJ", "a token whose signature does not verify", {**without, "authorization": f"Bearer {bad}"}),
        ("JA", "no token", without),
        ("JA", "a token whose signature does not verify", {**without, "authorization": f"Bearer {bad}"}),
    ]
    for name, what, hdrs in refusals:
        if name not in ports:
            continue
        status, headers, reply = send(ports[name], call.path, call.bodies[0], agent=None, host=call.host, extra=hdrs)
        if server.take():
            die(f"{name}: a call with {what} reached the upstream")
        if name == "JA":
            if status != 401:
                die(f"JA: a call with {what}: {status}, expected 401: {reply[:300]!r}")
        elif name == "MJ":
            # Refused before the message is read: a JSON-RPC error for id
            # null, with the REST status.
            doc = json.loads(reply) if reply.startswith(b"{") else {}
            if status != 403 or headers.get("x-aegis-decision") != "deny" or "error" not in doc:
                die(f"MJ: a call with {what}: {status} {headers}, expected 403 and a JSON-RPC error: {reply[:300]!r}")
        elif headers.get("x-aegis-decision") != "deny":
            die(f"{name}: a call with {what}: {status} {headers}, expected a refusal: {reply[:300]!r}")
    report.append(
        "MJ refuses a call without a token and one whose token signature does not verify (403, JSON-RPC error), "
        + ("JA too (401), " if "JA" in ports else "")
        + "MH one from an unknown agent; none reached the upstream"
    )
    return report


# ---------------------------------------------------------------- nginx


NGINX_CONF = """\
# The load upstream: one nginx process (no master), pinned by taskset.
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/client_body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_max_body_size 1m;
  client_body_buffer_size 64k;
  # The MCP server: the tools/list result when the request says it is one
  # (MCP's `mcp-method` header), else a tools/call result.
  map $http_mcp_method $mcp_reply {{
    default '{call}';
    tools/list '{tools}';
  }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    default_type application/json;
    location / {{ return 200 '{{"ok":true}}'; }}
    location = {mcp_path} {{ return 200 $mcp_reply; }}
  }}
}}
"""


def nginx_conf(directory: Path, port: int) -> str:
    for reply in (MCP_CALL_REPLY, MCP_LIST_REPLY):
        assert not set("'$\\") & set(reply), "nginx would read this reply as a variable or an escape"
    return NGINX_CONF.format(dir=directory, port=port, mcp_path=MCP_PATH, call=MCP_CALL_REPLY, tools=MCP_LIST_REPLY)


# ---------------------------------------------------------------- oha


def oha(
    binary: str, port: int, wl: Workload, name: str, duration: float, connections: int, out: Path, rate: float | None = None
) -> dict:
    args = [
        binary,
        "--no-tui",
        "--output-format",
        "json",
        "-o",
        str(out),
        "-z",
        f"{duration}s",
        "-w",
        "-c",
        str(connections),
        "--worker-threads",
        "1",
        "-m",
        "POST",
        "-T",
        "application/json",
        "--host",
        wl.host,
    ]
    for k, v in wl.headers_for(name).items():
        args += ["-A", v] if k == "accept" else ["-H", f"{k}: {v}"]
    args += ["-Z", str(wl.file)]
    if rate is not None:
        args += ["-q", f"{rate:.0f}", "--latency-correction"]
    args.append(f"http://127.0.0.1:{port}{wl.path}")
    err = out.with_suffix(".stderr")
    with open(err, "wb") as e:
        p = subprocess.Popen(["taskset", "-c", LOAD_CPU, *args], stdin=subprocess.DEVNULL, stdout=e, stderr=e)
        # taskset execs oha: the rusage is oha's own.
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        die(f"oha failed ({p.returncode}): {tail(err)}")
    res = json.loads(out.read_text())
    res["cpu_s"] = usage.ru_utime + usage.ru_stime
    return res


def oha_summary(res: dict) -> dict:
    codes = res.get("statusCodeDistribution", {})
    ok = codes.get("200", 0)
    total = res["summary"]["total"]
    pct = res.get("latencyPercentiles", {})
    return {
        "ok": ok,
        "other_status": {k: v for k, v in codes.items() if k != "200"},
        "errors": res.get("errorDistribution", {}),
        "seconds": total,
        "rps": ok / total if total else 0.0,
        "p50_us": pct.get("p50", float("nan")) * 1e6,
        "p99_us": pct.get("p99", float("nan")) * 1e6,
        "p99.9_us": pct.get("p99.9", float("nan")) * 1e6,
    }


# ---------------------------------------------------------------- measuring


def measure(
    env: Envoy, args, wl: Workload, name: str, port: int, duration: float, out: Path, rate=None, control=None
) -> dict:
    hist = FILTER_HISTOGRAM.get(name)
    hist0 = env.histogram(hist) if hist else {}
    cp0 = control.metrics() if control is not None and name == "L2B" else None
    before = env.counters()
    ticks0 = cpu_ticks(env.proc.pid)
    sched0 = worker_sched(env.proc.pid)
    ngx0 = cpu_ticks(NGINX[0].pid) if NGINX else 0
    load0 = cpu_idle(LOAD_CPU)
    t0 = time.monotonic()
    res = oha(args.oha, port, wl, name, duration, args.connections, out, rate)
    wall = time.monotonic() - t0
    ticks1 = cpu_ticks(env.proc.pid)
    sched1 = worker_sched(env.proc.pid)
    ngx1 = cpu_ticks(NGINX[0].pid) if NGINX else 0
    load1 = cpu_idle(LOAD_CPU)
    after = env.counters()
    cp1 = control.metrics() if cp0 is not None else None
    s = oha_summary(res)

    def delta(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    prefix = f"http.{name.lower()}"
    completed = delta(f"{prefix}.downstream_rq_completed")
    ok2xx = delta(f"{prefix}.downstream_rq_2xx")
    cpu_s = (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK")
    s["envoy_completed"] = completed
    s["envoy_2xx"] = ok2xx
    s["envoy_cpu_s"] = cpu_s
    s["envoy_cpu_busy"] = cpu_s / wall if wall else 0.0
    s["cpu_us_per_req"] = cpu_s * 1e6 / completed if completed else float("nan")
    s["worker_on_cpu"] = (sched1[0] - sched0[0]) / 1e9 / wall if wall else 0.0
    s["worker_waiting"] = (sched1[1] - sched0[1]) / 1e9 / wall if wall else 0.0
    gen_s = res["cpu_s"] + (ngx1 - ngx0) / os.sysconf("SC_CLK_TCK")
    s["load_us_per_req"] = gen_s * 1e6 / completed if completed else float("nan")
    busy, total = load1[0] - load0[0], load1[1] - load0[1]
    s["load_cpu_busy"] = busy / total if total else 0.0
    if hist:
        # This run's share of the filter's histogram (only this listener
        # had traffic): [lower bound, width, count] per bucket.
        hist1 = env.histogram(hist)
        s["filter_hist"] = [
            [lo, w, c - hist0.get((lo, w), 0)] for (lo, w), c in sorted(hist1.items()) if c > hist0.get((lo, w), 0)
        ]
    if name in AEGIS:
        s["aegis"] = {k.split(".", 1)[1]: delta(k) for k in set(after) | set(before) if k.startswith("aegis.")}
    if name == "JA":
        jwt = f"{prefix}.jwt_authn."
        s["jwt_authn"] = {k[len(jwt) :]: delta(k) for k in set(after) | set(before) if k.startswith(jwt)}
    if cp0 is not None and cp1 is not None:
        # The calls L2B made to the control plane during the run (settles
        # come on the filter's tick, so a run's last one may land in the
        # next run: the totals over the whole bench are in the report).
        s["control"] = {k: cp1.get(k, 0) - cp0.get(k, 0) for k in set(cp0) | set(cp1)}
        s["lease_calls_per_req"] = s["control"]["lease_calls"] / completed if completed else float("nan")
        s["settle_calls_per_req"] = s["control"]["settle_calls"] / completed if completed else float("nan")
    problems = []
    if s["other_status"] or s["errors"]:
        problems.append(f"non-200 answers {s['other_status']} / errors {s['errors']}")
    if ok2xx != completed or completed < s["ok"]:
        problems.append(f"envoy counted {completed} requests, {ok2xx} 2xx; oha got {s['ok']} x 200")
    if name in AEGIS:
        a = s["aegis"]
        judged = sum(a.get(d, 0) for d in wl.decisions)
        if judged != completed or any(v for k, v in a.items() if k not in wl.decisions):
            want = "/".join(sorted(wl.decisions))
            problems.append(f"aegis decisions {a} do not add up to {completed} requests decided {want}")
    if name == "JA" and s["jwt_authn"].get("allowed", 0) != completed:
        problems.append(f"jwt_authn counted {s['jwt_authn']} for {completed} requests")
    if problems:
        die(f"{name} {wl.key}: " + "; ".join(problems))
    return s


def hist_quantiles(runs: list[dict], qs=(0.5, 0.9, 0.99)) -> dict[str, float]:
    """P50, P90, P99 (and n) of the filter histograms of `runs` added up,
    linear within Envoy's buckets."""
    buckets: dict[tuple[float, float], int] = {}
    for r in runs:
        for lo, w, c in r.get("filter_hist", []):
            buckets[(lo, w)] = buckets.get((lo, w), 0) + c
    total = sum(buckets.values())
    if not total:
        return {}
    out: dict[str, float] = {}
    for q in qs:
        target, cum = q * total, 0
        for (lo, w), c in sorted(buckets.items()):
            if cum + c >= target:
                out[f"P{q * 100:g}"] = lo + w * (target - cum) / c
                break
            cum += c
    out["n"] = total
    return out


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def rotated(r: int, listeners: list[str]) -> list[str]:
    k = r % len(listeners)
    return listeners[k:] + listeners[:k]


def fmt(x: float, digits: int = 2) -> str:
    if x != x:
        return "n/a"
    return f"{x:.{digits}f}"


def rate_range(rates: list[float]) -> str:
    if len(rates) == 1:
        return f"{rates[0]:.0f}"
    return f"median {median(rates):.0f}, {min(rates):.0f}-{max(rates):.0f}"


def size_label(size: int) -> str:
    return f"{size // 1024} KB" if size % 1024 == 0 else f"{size} B"


# ---------------------------------------------------------------- main


def aegis_eval(aegis: str, policy: Path, cases: list[dict], path: Path) -> list[dict]:
    """`aegis eval` of `cases` (written to `path`) against `policy`: one
    result per case, in order."""
    path.write_text(json.dumps(cases, indent=1))
    r = subprocess.run([aegis, "eval", str(policy), "--cases", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"aegis eval {policy} failed: {r.stderr}")
    results = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    if len(results) != len(cases):
        die(f"aegis eval {policy}: {len(results)} results for {len(cases)} cases")
    return results


# ---------------------------------------------------------------- load only


def load_only(argv: list[str]) -> None:
    """`--load-only URL`: steady, bounded load against one listener, one JSON
    line per answer, for tests that judge every response (e2e/tests/ecds.rs).
    No Envoy, oha or nginx of its own: the caller runs those.

    Request n (0, 1, ...) is the line n modulo the count of `--requests`
    (JSON lines: method, path, host, headers, body), with `x-request-id:
    <--id-prefix>-<n>`, due at n / `--rps` seconds after the start. Each of
    `--connections` threads sends one request at a time on its own
    keep-alive connection, so at most that many are in flight: a request
    due while all are busy waits, none is queued past them. Sends stop after
    `--seconds`, or once standard input closes with `--stop-on-eof` (the
    caller holds it open while it needs the load). Output, one line per
    request as it is answered: id, t (wall-clock time it was sent, Unix
    seconds), status, decision (`x-aegis-decision`), upstream (the echo
    upstream's `x-echo-upstream` header was there), body (of answers not
    from the upstream, 4 KiB at most), or error (the request failed: reset,
    closed, timed out)."""
    ap = argparse.ArgumentParser(prog="loadbench.py --load-only")
    ap.add_argument("--load-only", required=True, metavar="URL", help="http://127.0.0.1:PORT")
    ap.add_argument("--requests", required=True, type=Path, help="JSON lines: method, path, host, headers, body")
    ap.add_argument("--rps", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="send for this long at most")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--id-prefix", default="load")
    ap.add_argument("--out", type=Path, help="the JSON lines (default: standard output)")
    ap.add_argument("--stop-on-eof", action="store_true", help="stop sending once standard input closes")
    args = ap.parse_args(argv)
    m = re.fullmatch(r"http://([^/:]+):(\d+)/?", args.load_only)
    if not m:
        die(f"--load-only {args.load_only!r}: give http://HOST:PORT")
    host, port = m.group(1), int(m.group(2))
    reqs = [json.loads(line) for line in args.requests.read_text().splitlines() if line.strip()]
    if not reqs or args.rps <= 0 or args.connections < 1:
        die("--load-only needs at least one request, --rps > 0 and --connections >= 1")

    stop = threading.Event()
    if args.stop_on_eof:

        def watch_stdin() -> None:
            sys.stdin.buffer.read()
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    out = open(args.out, "w") if args.out else sys.stdout
    lock = threading.Lock()
    counter = iter(range(int(args.rps * args.seconds)))
    start = time.monotonic()

    def worker() -> None:
        conn = None
        while not stop.is_set():
            with lock:
                n = next(counter, None)
            if n is None:
                return
            due = start + n / args.rps
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            r = reqs[n % len(reqs)]
            rid = f"{args.id_prefix}-{n}"
            headers = {"host": r["host"], **r.get("headers", {}), "x-request-id": rid}
            body = r.get("body")
            rec: dict = {"id": rid, "t": time.time()}
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=20)
                conn.request(r["method"], r["path"], body=body.encode() if body is not None else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                rec["status"] = resp.status
                rec["decision"] = resp.getheader("x-aegis-decision")
                rec["upstream"] = resp.getheader("x-echo-upstream") is not None
                if not rec["upstream"]:
                    rec["body"] = data[:4096].decode("utf-8", "replace")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                rec["error"] = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            line = json.dumps(rec)
            with lock:
                out.write(line + "\n")
                out.flush()
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if out is not sys.stdout:
        out.close()


def main() -> None:
    if "--load-only" in sys.argv[1:]:
        load_only(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--nginx", required=True)
    ap.add_argument("--aegis", required=True, help="the aegis binary (for eval and explain)")
    ap.add_argument("--trusted-key", required=True, type=Path, help="the .pub of the blobs' signing key")
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument(
        "--workloads", default="all", help="which workloads: all, ledger, mcp (comma-separated; default all)"
    )
    ap.add_argument("--aegis-wasm", type=Path, help="ledger: the Aegis blob of --policy (L2)")
    ap.add_argument("--noop-wasm", type=Path, help="ledger: the no-op filter (L1, and the probes)")
    ap.add_argument("--policy", type=Path, help="ledger: the bench policy")
    ap.add_argument("--budget-wasm", type=Path, help="ledger: the Aegis blob of the bench policy with budgets (L2B)")
    ap.add_argument("--control-port", type=int, help="ledger: the port of the `aegis serve` L2B calls (127.0.0.1)")
    ap.add_argument("--control-token", type=Path, help="ledger: a file with the gateway token L2B presents")
    ap.add_argument("--control-admin-token", type=Path, help="ledger: a file with an admin token (to read the budget)")
    ap.add_argument("--cost-usd", type=float, help="ledger: the `cost_usd` of the rule L2B's calls hit")
    ap.add_argument("--lease-calls", type=int, default=1000, help="ledger: L2B's `control_plane.lease_calls`")
    ap.add_argument("--mcp-policy", type=Path, help="mcp: the MCP policy with the header identity (MH)")
    ap.add_argument("--mcp-jwt-policy", type=Path, help="mcp: the same policy with the JWT identity (MJ)")
    ap.add_argument("--mcp-header-wasm", type=Path, help="mcp: the Aegis blob of --mcp-policy")
    ap.add_argument("--mcp-jwt-wasm", type=Path, help="mcp: the Aegis blob of --mcp-jwt-policy")
    ap.add_argument("--mcp-token", type=Path, help="mcp: a file with the agent's JWT")
    ap.add_argument("--mcp-issuer-pub", type=Path, help="mcp: the token issuer's public key (.pub), for jwt_authn")
    ap.add_argument("--jwt-authn", action="store_true", help="mcp: also listener JA, Envoy's jwt_authn and no Aegis")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per listener and workload")
    ap.add_argument("--sizes", default="1024,16384", help="ledger: body sizes in bytes")
    ap.add_argument("--load", type=float, default=0.5, help="open-loop rate as a fraction of L0's capacity")
    ap.add_argument(
        "--filter-state",
        default="-",
        help="the Aegis listeners' `filter_state` keys, comma-separated ('' for none, '-' for the default: all)",
    )
    ap.add_argument(
        "--token-cache-entries",
        type=int,
        default=None,
        help="the Aegis listeners' `token_cache.entries` (0: verify every token; default: the filter's)",
    )
    ap.add_argument(
        "--probes",
        action="store_true",
        help="ledger: also run the no-op filter as P0-P3 (phase 1 only) to split what L2 adds over L1",
    )
    ap.add_argument("--settings", default="", help="how the run was started (for the report)")
    args = ap.parse_args()
    parts = {w.strip() for w in args.workloads.split(",") if w.strip()}
    if "all" in parts:
        parts = {"ledger", "mcp"}
    if not parts or parts - {"ledger", "mcp"}:
        die(f"--workloads {args.workloads!r}: give all, ledger or mcp")
    needs = {
        "ledger": [
            "aegis_wasm",
            "noop_wasm",
            "policy",
            "budget_wasm",
            "control_port",
            "control_token",
            "control_admin_token",
            "cost_usd",
        ],
        "mcp": ["mcp_policy", "mcp_jwt_policy", "mcp_header_wasm", "mcp_jwt_wasm", "mcp_token", "mcp_issuer_pub"],
    }
    for part in parts:
        missing = [f"--{a.replace('_', '-')}" for a in needs[part] if getattr(args, a) is None]
        if missing:
            die(f"the {part} workloads need {', '.join(missing)}")
    if args.probes and "ledger" not in parts:
        die("--probes splits the ledger workloads' L2: it needs --workloads with ledger")
    if args.jwt_authn and "mcp" not in parts:
        die("--jwt-authn adds a listener to the MCP workloads: it needs --workloads with mcp")
    if args.probes:
        LEDGER.extend(PROBES)
    if args.jwt_authn:
        MCP.append("JA")
    for name in (MCP if "mcp" in parts else []) + (LEDGER if "ledger" in parts else []):
        if name not in LISTENERS:
            LISTENERS.append(name)

    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s] if "ledger" in parts else []
    filter_state = None if args.filter_state == "-" else [k for k in args.filter_state.split(",") if k]
    started = time.time()

    # The workloads, MCP first (the production shape leads the report).
    # Ledger: per size one file of two lines (clean, PII); oha picks a line
    # at random for every request, so half the requests carry PII.
    token = args.mcp_token.read_text().strip() if "mcp" in parts else ""
    workloads = (mcp_workloads(token) if "mcp" in parts else []) + ledger_workloads(sizes)
    for wl in workloads:
        wl.write(work)
    ledger = [w for w in workloads if w.part == "ledger"]
    bodies = {size: {"clean": wl.bodies[0], "pii": wl.bodies[1]} for size, wl in zip(sizes, ledger)}

    rbac, rbac_notes = None, []
    if "ledger" in parts:
        # The exact bench requests, judged natively before anything runs.
        cases = []
        for size, pair in bodies.items():
            for kind, body in pair.items():
                cases.append(
                    {
                        "name": f"{size}-{kind}",
                        "agent": AGENT,
                        "request": {
                            "method": "POST",
                            "url": f"https://{HOST}{PATH}",
                            "headers": {"content-type": "application/json"},
                            "body": body.decode(),
                        },
                        "expect": {"decision": "allow" if kind == "clean" else "sanitize"},
                    }
                )
        for case, got in zip(cases, aegis_eval(args.aegis, args.policy, cases, work / "bench-requests.cases.yaml")):
            want = case["expect"]["decision"]
            if got["decision"] != want:
                die(f"aegis eval: {case['name']} is {got['decision']} ({got.get('reason')}), expected {want}")
            if want == "sanitize" and (SSN in got["body"] or CARD in got["body"]):
                die(f"aegis eval: {case['name']} still carries PII after sanitizing")
        log(f"==> aegis eval: the {len(cases)} bench bodies are allowed (clean) / sanitized (PII)")

        # RBAC from the compiled policy.
        r = subprocess.run([args.aegis, "explain", str(args.policy), "--format", "json"], capture_output=True, text=True)
        if r.returncode != 0:
            die(f"aegis explain failed: {r.stderr}")
        rbac, rbac_notes = rbac_from_explain(json.loads(r.stdout))
        (work / "rbac.json").write_text(json.dumps(rbac, indent=2))
        (work / "rbac-notes.txt").write_text("\n".join(rbac_notes) + "\n")
        log(f"==> RBAC rules for {len(rbac['policies'])} agents: {work / 'rbac.json'} (dropped: {work / 'rbac-notes.txt'})")

    jwt_authn = None
    if "mcp" in parts:
        # The token must outlive the run by far: its expiry against a
        # generous estimate of the run time.
        head, claims = (b64url_json(x) for x in token.split(".")[:2])
        runs = sum(len(wl.listeners) + len([n for n in wl.listeners if n not in PROBES]) for wl in workloads)
        estimate = args.rounds * runs * (args.duration + 1.5) + len(workloads) * 4 * (args.warmup + 1.5) + 120
        if claims.get("exp", 0) < time.time() + 2 * estimate + 600:
            die(
                f"the agent token expires at {time.ctime(claims.get('exp', 0))}, too soon for a run of about "
                f"{estimate / 60:.0f} min: issue it with a longer --ttl"
            )
        # The exact MCP requests, judged natively with the identity each
        # listener has: MH by the agent header, MJ by the token.
        for policy, name in ((args.mcp_policy, "MH"), (args.mcp_jwt_policy, "MJ")):
            cases = []
            for wl in (w for w in workloads if w.part == "mcp"):
                headers = {"content-type": "application/json", **wl.headers_for(name)}
                cases.append(
                    {
                        "name": f"{name}-{wl.key}",
                        "request": {
                            "method": "POST",
                            "url": f"https://{wl.host}{wl.path}",
                            "headers": headers,
                            "body": wl.bodies[0].decode(),
                        },
                        "expect": {"decision": next(iter(wl.decisions))},
                    }
                )
            for case, got in zip(cases, aegis_eval(args.aegis, policy, cases, work / f"mcp-requests-{name}.cases.yaml")):
                want = case["expect"]["decision"]
                if got["decision"] != want:
                    die(f"aegis eval: {case['name']} is {got['decision']} ({got.get('reason')}), expected {want}")
        log("==> aegis eval: the MCP requests as MH and MJ send them: allowed, denied, tools/list allowed")
        if args.jwt_authn:
            jwks = jwks_from_pub(args.mcp_issuer_pub.read_text(), head["kid"])
            jwt_authn = jwt_authn_filter(claims["iss"], claims["aud"], jwks)

    admin, upstream, *lports = free_ports(2 + len(LISTENERS))
    ports = dict(zip(LISTENERS, lports))
    wasms: dict[str, Path] = {}
    if "ledger" in parts:
        probe_wasm = work / "probe.wasm"
        probe_wasm.write_bytes(with_exports_of(args.noop_wasm.read_bytes(), args.aegis_wasm.read_bytes()))
        wasms |= {
            "noop": args.noop_wasm.resolve(),
            "probe": probe_wasm,
            "L2": args.aegis_wasm.resolve(),
            "L2B": args.budget_wasm.resolve(),
        }
    control = None
    if "ledger" in parts:
        control = ControlPlane(
            args.control_port,
            args.control_token.read_text().strip(),
            args.control_admin_token.read_text().strip(),
            args.lease_calls,
            args.cost_usd,
        )
    if "mcp" in parts:
        wasms |= {"MH": args.mcp_header_wasm.resolve(), "MJ": args.mcp_jwt_wasm.resolve()}
    config = envoy_config(
        admin,
        ports,
        upstream,
        wasms,
        args.trusted_key.read_text(),
        rbac,
        filter_state,
        jwt_authn,
        args.token_cache_entries,
        control,
    )
    config_path = work / "envoy.json"
    config_path.write_text(json.dumps(config, indent=2))
    envoy_version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout.strip()
    m = re.search(r"version: \S+/([0-9.]+)/", envoy_version)
    envoy_version = m.group(1) if m else envoy_version

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        log(f"==> envoy {envoy_version} on CPU {ENVOY_CPU}, --concurrency 1; listeners {ports}, admin {admin}")
        env = Envoy(args.envoy, config_path, work, admin)

        log("==> verifying with an echo upstream")
        echo = EchoServer(upstream)
        try:
            report = []
            if "mcp" in parts:
                report += verify_mcp_with_echo(ports, echo, [w for w in workloads if w.part == "mcp"], token)
            if "ledger" in parts:
                report += verify_with_echo(ports, bodies)
                report.append(verify_control(control, env.counters().get("http.l2b.downstream_rq_2xx", 0)))
        finally:
            echo.stop()
        for line in report:
            log(f"    ok: {line}")

        log(f"==> nginx on CPU {LOAD_CPU} as the load upstream (port {upstream})")
        ngdir = work / "nginx"
        shutil.rmtree(ngdir, ignore_errors=True)
        ngdir.mkdir()
        (ngdir / "nginx.conf").write_text(nginx_conf(ngdir, upstream))
        nginx = spawn(
            [args.nginx, "-p", str(ngdir), "-e", str(ngdir / "nginx-error.log"), "-c", str(ngdir / "nginx.conf")],
            LOAD_CPU,
            ngdir / "nginx.out",
        )
        wait_port(upstream, nginx, "nginx", ngdir / "nginx-error.log")
        NGINX.append(nginx)
        for wl in workloads:
            for name in wl.listeners:
                extra = wl.headers_for(name)
                status, headers, reply = send(ports[name], wl.path, wl.bodies[-1], agent=None, host=wl.host, extra=extra)
                if wl.answered_by_aegis and name in AEGIS:
                    check_tool_error(f"{name} {wl.key} through nginx", status, headers, reply)
                elif wl.aegis_reply is not None and name in AEGIS:
                    if status != 200 or json.loads(reply) != wl.aegis_reply:
                        die(f"{name} {wl.key} through nginx: {status} {reply[:300]!r}, expected {wl.aegis_reply}")
                elif status != 200 or reply != wl.upstream_reply:
                    die(f"{name} {wl.key} through nginx: {status} {reply[:200]!r}")

        raw = {"settings": vars(args) | {"sizes": sizes, "workloads": [w.key for w in workloads]}, "runs": []}
        runs_dir = work / "runs"
        shutil.rmtree(runs_dir, ignore_errors=True)
        runs_dir.mkdir()

        if args.warmup > 0:
            log(f"==> warm-up: {args.warmup}s per listener and workload")
            for wl in workloads:
                for name in wl.listeners:
                    measure(env, args, wl, name, ports[name], args.warmup, runs_dir / "warmup.json", control=control)

        # Each round: phase 1 (closed loop, capacity) for every workload and
        # listener, then phase 2 (open loop) at `--load` x the L0 capacity
        # just measured in this round for that workload, so that the rate
        # follows the machine when other processes come and go.
        cap: dict[str, dict[str, list[dict]]] = {wl.key: {n: [] for n in wl.listeners} for wl in workloads}
        lat: dict[str, dict[str, list[dict]]] = {wl.key: {n: [] for n in wl.listeners} for wl in workloads}
        rates: dict[str, list[float]] = {wl.key: [] for wl in workloads}
        for r in range(args.rounds):
            for wl in workloads:
                for name in rotated(r, wl.listeners):
                    s = measure(
                        env, args, wl, name, ports[name], args.duration, runs_dir / f"p1-r{r}-{wl.key}-{name}.json", control=control
                    )
                    cap[wl.key][name].append(s)
                    raw["runs"].append({"phase": 1, "round": r, "workload": wl.key, "listener": name, **s})
                    extra = ""
                    if "control" in s:
                        c = s["control"]
                        extra = (
                            f", aegis {s['aegis']}; control plane: {c['lease_calls']} lease calls "
                            f"({s['lease_calls_per_req']:.2e}/req), {c['settle_calls']} settle calls"
                        )
                    elif "aegis" in s:
                        extra = f", aegis {s['aegis']}"
                    elif "jwt_authn" in s:
                        extra = f", jwt_authn {s['jwt_authn']}"
                    log(
                        f"    round {r + 1}/{args.rounds} phase 1 {wl.label:>12} {name}: {s['rps']:7.0f} req/s, "
                        f"{s['cpu_us_per_req']:6.1f} CPU-us/req; envoy worker on CPU {s['worker_on_cpu']:.0%}, "
                        f"waiting {s['worker_waiting']:.0%}; oha+nginx {s['load_us_per_req']:.1f} CPU-us/req, "
                        f"CPU {LOAD_CPU} busy {s['load_cpu_busy']:.0%}" + extra
                    )
            for wl in workloads:
                rate = args.load * cap[wl.key]["L0"][r]["rps"]
                rates[wl.key].append(rate)
                for name in (n for n in rotated(r, wl.listeners) if n not in PROBES):
                    s = measure(
                        env,
                        args,
                        wl,
                        name,
                        ports[name],
                        args.duration,
                        runs_dir / f"p2-r{r}-{wl.key}-{name}.json",
                        rate=rate,
                        control=control,
                    )
                    s["rate"] = rate
                    lat[wl.key][name].append(s)
                    raw["runs"].append({"phase": 2, "round": r, "workload": wl.key, "listener": name, **s})
                    log(
                        f"    round {r + 1}/{args.rounds} phase 2 {wl.label:>12} {name} @ {rate:.0f}/s: "
                        f"p50 {s['p50_us']:7.1f} us, p99 {s['p99_us']:7.1f} us, p99.9 {s['p99.9_us']:7.1f} us "
                        f"(got {s['rps']:.0f}/s)"
                    )
        settled = None
        if control is not None:
            log("==> L2B's budget at the control plane once the filter's tick has reported")
            settled = settle_check(env, control)
            raw["control"] = settled
            log(f"    {settled}")
        stop(nginx)
        stop(env.proc)
    finally:
        stop_all()

    elapsed = time.time() - started
    md = report_md(args, parts, workloads, sizes, cap, lat, rates, envoy_version, elapsed, report, rbac_notes, settled)
    (work / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    (work / "results.md").write_text(md)
    print(md)
    log(f"==> written: {work / 'results.md'}, {work / 'results.json'} (every run: {runs_dir})")


def report_md(args, parts, workloads, sizes, cap, lat, rates, envoy_version, elapsed, checks, rbac_notes, settled) -> str:
    rounds = range(args.rounds)

    def ratio(table, key, a, b, field):
        return median([table[key][a][r][field] / table[key][b][r][field] for r in rounds])

    def diff(table, key, a, b, field):
        return median([table[key][a][r][field] - table[key][b][r][field] for r in rounds])

    def med(table, key, name, field):
        return median([table[key][name][r][field] for r in rounds if r < len(table[key][name])])

    def own_time(key, name):
        """The filter's own histogram over the listener's measured runs of
        the workload (both phases; warm-up excluded)."""
        return hist_quantiles(cap[key].get(name, []) + lat[key].get(name, []))

    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    oha_v = subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip()
    ngx = subprocess.run([args.nginx, "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", "")
    mcp = [w for w in workloads if w.part == "mcp"]
    ledger = [w for w in workloads if w.part == "ledger"]
    L = []
    L.append("## Envoy load benchmark")
    L.append("")
    L.append(
        f"Machine: {os.cpu_count()} CPUs ({model}); Envoy {envoy_version} (`--concurrency 1`, CPU {ENVOY_CPU}); "
        f"load generator {oha_v} and upstream {ngx} on CPU {LOAD_CPU}."
    )
    L.append(
        f"Settings: {args.rounds} round{'s' if args.rounds != 1 else ''} x {args.duration:g} s per run, {args.connections} connections, "
        f"warm-up {args.warmup:g} s, open loop at {args.load:.0%} of L0's capacity in the same round "
        f"({', '.join(f'{w.label}: {rate_range(rates[w.key])} req/s' for w in workloads)}); "
        f"workloads: {', '.join(w.key for w in workloads)}; total time {elapsed / 60:.1f} min. {args.settings}".rstrip()
    )
    L.append("")

    def unsustained(wls, names):
        for w in wls:
            for n in names:
                got = median([r["rps"] / r["rate"] for r in lat[w.key].get(n, [])])
                if got < 0.97:
                    L.append(
                        f"**{n} could not sustain the open-loop rate for {w.label}** (got {got:.0%} of it): its "
                        "latency there is queueing in an overloaded proxy, not the cost of one request."
                    )

    if mcp:
        cols = " | ".join(w.label for w in mcp)
        sep = " | ".join("---:" for _ in mcp)
        ja = "JA" in MCP
        L.append("### MCP tool calls, agents with a JWT (the production shape)")
        L.append("")
        L.append(
            f"`POST {MCP_PATH}` to `{MCP_HOST}`, MCP 2026-07-28 Streamable HTTP: a JSON-RPC `tools/call` of "
            f"{MCP_SIZE} bytes for `get_weather` (allowed) or `delete_repo` (denied: MH and MJ answer it "
            "themselves, HTTP 200 with a JSON-RPC tool error), and `tools/list`. MJ = Aegis with the agent's "
            "EdDSA JWT (verified once, then found in the filter's verified-token cache; every request with "
            "`--token-cache-entries 0`), MH = the same policy naming the agent by a header (no token), "
            "L0 = bare Envoy" + (", JA = Envoy's own jwt_authn verifying the same token (cache on), no Aegis" if ja else "")
            + ". Medians over rounds of per-round ratios and differences:"
        )
        L.append("")
        L.append(f"| metric | {cols} | target (production shape) |")
        L.append(f"| --- | {sep} | --- |")

        def row(what, f, target=""):
            L.append(f"| {what} | {' | '.join(f(w) for w in mcp)} | {target} |")

        pct = f"{args.load:.0%}"
        row(
            "throughput MJ/L0",
            lambda w: fmt(ratio(cap, w.key, "MJ", "L0", "rps")),
            ">= 0.50 allowed, >= 0.60 denied",
        )
        row(
            "throughput MJ/MH (JWT over header identity)",
            lambda w: fmt(ratio(cap, w.key, "MJ", "MH", "rps")),
            ">= 0.85 (1 KB call)",
        )
        row("throughput MH/L0", lambda w: fmt(ratio(cap, w.key, "MH", "L0", "rps")))
        row(
            f"added p99 MJ-L0 at {pct} of L0's capacity (us)",
            lambda w: fmt(diff(lat, w.key, "MJ", "L0", "p99_us"), 1),
            "<= 500 us at half of MJ's capacity (about `--load 0.3`)",
        )
        row(f"added p50 MJ-L0 at {pct} (us)", lambda w: fmt(diff(lat, w.key, "MJ", "L0", "p50_us"), 1))
        row(f"added p99 MH-L0 at {pct} (us)", lambda w: fmt(diff(lat, w.key, "MH", "L0", "p99_us"), 1))
        for n in ["L0", "MH", "MJ"] + (["JA"] if ja else []):
            row(f"Envoy CPU-us/request {n}", lambda w, n=n: fmt(med(cap, w.key, n, "cpu_us_per_req"), 1))
        row("Envoy CPU-us/request MJ-MH (the token)", lambda w: fmt(diff(cap, w.key, "MJ", "MH", "cpu_us_per_req"), 1))
        row("Envoy CPU-us/request MJ-L0", lambda w: fmt(diff(cap, w.key, "MJ", "L0", "cpu_us_per_req"), 1))
        for n in ("MH", "MJ"):
            row(
                f"Aegis's own time in its callbacks {n}, P50 / P90 / P99 (us)",
                lambda w, n=n: " / ".join(fmt(own_time(w.key, n).get(q, float("nan")), 1) for q in ("P50", "P90", "P99")),
            )
        row(
            "Aegis's own time MJ-MH, P50 (us): the token (a cache hit; a check with --token-cache-entries 0)",
            lambda w: fmt(own_time(w.key, "MJ").get("P50", float("nan")) - own_time(w.key, "MH").get("P50", float("nan")), 1),
            "<= 2 us",
        )
        row(
            "open-loop rate / MJ's own capacity (above ~0.8: MJ's latency is mostly queueing)",
            lambda w: fmt(median([lat[w.key]["MJ"][r]["rate"] / cap[w.key]["MJ"][r]["rps"] for r in rounds])),
        )
        if ja:
            row("(jwt_authn) throughput JA/L0", lambda w: fmt(ratio(cap, w.key, "JA", "L0", "rps")))
            row("(jwt_authn) throughput MJ/JA", lambda w: fmt(ratio(cap, w.key, "MJ", "JA", "rps")))
            row("(jwt_authn) Envoy CPU-us/request JA-L0", lambda w: fmt(diff(cap, w.key, "JA", "L0", "cpu_us_per_req"), 1))
            row(f"(jwt_authn) added p99 JA-L0 at {pct} (us)", lambda w: fmt(diff(lat, w.key, "JA", "L0", "p99_us"), 1))
        L.append("")
        L.append("Per listener, medians over rounds (context; absolute numbers drift between machines and runs):")
        L.append("")
        per_listener(L, mcp, MCP, cap, lat, med)
        L.append(
            "Aegis's own time: its `aegis_request_latency_us` histogram (the time inside its callbacks, host "
            "calls included, as the filter measures it), read from Envoy's admin before and after each measured "
            "run of MH and MJ (phases 1 and 2, no warm-up) and added up per listener and workload, so that each "
            "listener's share is its own although all Aegis listeners record into one histogram; requests per "
            "cell: "
            + "; ".join(f"{n} {w.label} {own_time(w.key, n).get('n', 0):.0f}" for n in ("MH", "MJ") for w in mcp)
            + "."
        )
        if ja:
            j = [r.get("jwt_authn", {}) for w in mcp for r in cap[w.key]["JA"]]
            hits, miss = sum(x.get("jwt_cache_hit", 0) for x in j), sum(x.get("jwt_cache_miss", 0) for x in j)
            if hits + miss:
                L.append(
                    f"JA's jwt_authn in phase 1: {hits + miss} tokens looked up, {hits / (hits + miss):.2%} from its cache."
                )
        unsustained(mcp, ["MH", "MJ"] + (["JA"] if ja else []))
        L.append("")

    if ledger:
        cols = " | ".join(w.label for w in ledger)
        sep = " | ".join("---:" for _ in ledger)
        L.append("### Ledger tool calls, agents named by a header, DLP")
        L.append("")
        L.append(
            "JSON tool calls, half of them with PII (SSN + card number, redacted by L2). "
            "Medians over rounds of per-round ratios and differences (L2 = Aegis):"
        )
        L.append("")
        L.append(f"| metric | {cols} | target (production shape) |")
        L.append(f"| --- | {sep} | --- |")
        for b in ["L0", "L1", "L3"]:
            vals = " | ".join(fmt(ratio(cap, w.key, "L2", b, "rps")) for w in ledger)
            L.append(f"| throughput L2/{b} | {vals} | {'>= 0.85 (1 KB)' if b == 'L0' else ''} |")
        for b in ["L0", "L1", "L3"]:
            vals = " | ".join(fmt(ratio(cap, w.key, "L2", b, "cpu_us_per_req")) for w in ledger)
            L.append(f"| Envoy CPU-us/request L2/{b} | {vals} | |")
        for k in ["p50", "p99", "p99.9"]:
            for b in ["L0", "L1", "L3"]:
                vals = " | ".join(fmt(diff(lat, w.key, "L2", b, f"{k}_us"), 1) for w in ledger)
                tgt = "<= 50 us (1 KB)" if (k, b) == ("p99", "L0") else ""
                L.append(f"| added {k} L2-{b} (us) | {vals} | {tgt} |")
        vals = " | ".join(
            fmt(median([lat[w.key]["L2"][r]["rate"] / cap[w.key]["L2"][r]["rps"] for r in rounds])) for w in ledger
        )
        L.append(f"| open-loop rate / L2's own capacity (above ~0.8: L2's latency is mostly queueing) | {vals} | |")
        for a in ["L1", "L3"]:
            vals = " | ".join(fmt(ratio(cap, w.key, a, "L0", "rps")) for w in ledger)
            L.append(f"| (context) throughput {a}/L0 | {vals} | |")
        for a in ["L1", "L3"]:
            vals = " | ".join(fmt(ratio(cap, w.key, a, "L0", "cpu_us_per_req")) for w in ledger)
            L.append(f"| (context) Envoy CPU-us/request {a}/L0 | {vals} | |")
        # L2B: L2 with budget leases from the control plane.
        vals = " | ".join(fmt(ratio(cap, w.key, "L2B", "L2", "rps")) for w in ledger)
        L.append(f"| (budgets) throughput L2B/L2 | {vals} | |")
        vals = " | ".join(fmt(diff(cap, w.key, "L2B", "L2", "cpu_us_per_req"), 1) for w in ledger)
        L.append(f"| (budgets) Envoy CPU-us/request L2B-L2 | {vals} | |")
        for k in ["p50", "p99"]:
            vals = " | ".join(fmt(diff(lat, w.key, "L2B", "L2", f"{k}_us"), 1) for w in ledger)
            L.append(f"| (budgets) added {k} L2B-L2 (us) | {vals} | |")
        for what, field in (("lease", "lease_calls_per_req"), ("settle", "settle_calls_per_req")):
            vals = " | ".join(
                fmt(median([r[field] for r in cap[w.key]["L2B"] + lat[w.key]["L2B"]]) * 1000, 2) for w in ledger
            )
            L.append(f"| (budgets) {what} calls to aegis serve per 1,000 L2B requests | {vals} | |")
        L.append("")
        L.append("Per listener, medians over rounds (context; absolute numbers drift between machines and runs):")
        L.append("")
        per_listener(L, ledger, LEDGER, cap, lat, med)
        if args.probes:
            L.append(
                "Where L2's Envoy CPU over L1 goes (CPU-us per request, medians over rounds of per-round "
                "differences; the probes run the no-op filter in phase 1 only, so their latency columns read n/a):"
            )
            L.append("")
            L.append(f"| step | {cols} |")
            L.append(f"| --- | {sep} |")
            steps = [
                ("response, log and done callbacks not exported (P0 - L1)", "P0", "L1"),
                ("headers held and body buffered (P1 - P0)", "P1", "P0"),
                ("headers and body read into the VM (P2 - P1)", "P2", "P1"),
                ("clock, filter state and metric calls (P3 - P2)", "P3", "P2"),
                ("the rest: Aegis's own code in the VM, rewrites of PII bodies (L2 - P3)", "L2", "P3"),
                ("total (L2 - L1)", "L2", "L1"),
            ]
            for what, a, b in steps:
                vals = " | ".join(fmt(diff(cap, w.key, a, b, "cpu_us_per_req"), 1) for w in ledger)
                L.append(f"| {what} | {vals} |")
            L.append("")
        for name, what in [
            ("L2", "Time inside the Aegis filter's callbacks as it measures it itself (`aegis_request_latency_us`"),
            ("P3", "The same for probe P3, whose callbacks make the same host calls and no decision (`probe_latency_us`"),
        ]:
            if name not in LEDGER:
                continue
            per = []
            for w in ledger:
                q = own_time(w.key, name)
                if q:
                    quantiles = ", ".join(f"{k} {q[k]:.1f} us" for k in ("P50", "P90", "P99"))
                    per.append(f"{w.label}: {quantiles} ({q['n']:.0f} requests)")
            if per:
                L.append(f"{what}, {name}'s measured runs, warm-up excluded): {'; '.join(per)}.")
        pii = []
        for w in ledger:
            a = [r.get("aegis", {}) for r in cap[w.key]["L2"]]
            san = sum(x.get("sanitize", 0) for x in a)
            tot = sum(x.get("sanitize", 0) + x.get("allow", 0) for x in a)
            if tot:
                pii.append(f"{w.label} {san / tot:.1%}")
        L.append(f"Share of L2 requests sanitized (PII) in phase 1: {', '.join(pii)}.")
        if settled is not None:
            m = settled["metrics"]
            served = settled["served"]
            per = f"{m['lease_calls'] / served * 1000:.2f}" if served else "n/a"
            exact = round(settled["spent_usd"] * 1e6) == round(settled["want_spent_usd"] * 1e6)
            L.append(
                f"L2B (budgets): `lease_calls` {args.lease_calls}, `cost_usd` {args.cost_usd:g} per call, `settle_ms` "
                f"{SETTLE_MS}. Over the whole run (checks and warm-up included) L2B served {served} calls and made "
                f"{m['lease_calls']} lease calls ({per} per 1,000 calls; {m.get('leases.granted', 0)} granted, "
                f"{m.get('leases.empty', 0)} empty, {m['lease_errors']} not answered 200) and {m['settle_calls']} "
                f"settle calls ({m['settle_errors']} not answered 200). Afterwards aegis serve counted "
                f"{settled['spent_usd']:.4f} USD spent against {settled['want_spent_usd']:.4f} for the calls served "
                f"({'exact' if exact else '**they differ**'}), {settled['reserved_usd']:.4f} USD reserved in "
                f"{settled['open_leases']} open lease(s). Envoy's log: {settled['settles_dropped']} spent totals "
                f"dropped from a full settle queue, {settled['give_backs_dropped']} give-backs that left it, "
                f"{settled['control_failures']} failed budget checks."
            )
        unsustained(ledger, CORE)
        cond = sum(1 for n in rbac_notes if "conditions not expressible" in n)
        dlp = sum(1 for n in rbac_notes if "DLP" in n)
        L.append(
            f"L3's RBAC rules come from `aegis explain`; they cannot express the conditions of {cond} rules "
            f"and the DLP of {dlp} agents (rbac-notes.txt)."
        )
        L.append("")

    every = [r for w in workloads for n in w.listeners for r in cap[w.key][n]]

    def allmed(key):
        return median([r[key] for r in every])

    L.append(
        f"Closed loop, medians over all runs: Envoy's worker thread on CPU {allmed('worker_on_cpu'):.0%} of the "
        f"time and runnable but waiting for CPU {ENVOY_CPU} (taken by other processes) {allmed('worker_waiting'):.0%} "
        f"(max {max(r['worker_waiting'] for r in every):.0%}); "
        f"Envoy {allmed('cpu_us_per_req'):.1f} CPU-us/request against {allmed('load_us_per_req'):.1f} for "
        f"oha + nginx together; CPU {LOAD_CPU} busy {allmed('load_cpu_busy'):.0%} (all processes). "
        f"On a quiet machine the worker is on CPU ~100% and waits ~0%."
    )
    L.append("Checked before measuring: " + "; ".join(checks) + ".")
    return "\n".join(L) + "\n"


def per_listener(L: list[str], wls: list[Workload], names: list[str], cap, lat, med) -> None:
    head = ["listener"]
    for w in wls:
        head += [f"{w.label} req/s", f"{w.label} CPU-us/req", f"{w.label} p50 us", f"{w.label} p99 us", f"{w.label} p99.9 us"]
    L.append("| " + " | ".join(head) + " |")
    L.append("| --- | " + " | ".join("---:" for _ in head[1:]) + " |")
    for name in names:
        row = [f"{name} {LISTENER_DESC[name]}"]
        for w in wls:
            row += [
                fmt(med(cap, w.key, name, "rps"), 0),
                fmt(med(cap, w.key, name, "cpu_us_per_req"), 1),
                fmt(med(lat, w.key, name, "p50_us"), 1),
                fmt(med(lat, w.key, name, "p99_us"), 1),
                fmt(med(lat, w.key, name, "p99.9_us"), 1),
            ]
        L.append("| " + " | ".join(row) + " |")
    L.append("")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
