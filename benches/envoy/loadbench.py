#!/usr/bin/env python3
"""The Envoy load benchmark (benches/envoy/README.md): one Envoy, four
listeners that differ only in their HTTP filter chain, measured side by
side in interleaved rounds.

  L0  router only
  L1  a no-op proxy-wasm filter (benches/envoy/noop-filter) + router
  L2  the Aegis filter (the bench policy, `aegis build`) + router
  L3  Envoy's native RBAC filter with the policy's header-level rules + router

Phase 1 (closed loop): capacity in requests/s with a fixed number of
connections, and Envoy's CPU time per request (/proc/<pid>/stat).
Phase 2 (open loop): latency percentiles at 50% of L0's capacity.
Every number in the summary is a median over rounds of a per-round
ratio (or difference) between listeners measured in that round.

run.sh builds the pieces and calls this script; it is not meant to be run
alone (it needs the paths run.sh passes). Standard library only.
"""

from __future__ import annotations

import argparse
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

CORE = ["L0", "L1", "L2", "L3"]
# With --probes: the no-op filter in the mode named (see noop-filter/),
# measured in phase 1 only, to split what L2 adds over L1. The probes'
# module exports only what the Aegis blob exports (compiler/build.rs drops
# the callbacks the filter does not use; Envoy skips a stream callback the
# module does not export); L1 keeps every callback the SDK exports.
PROBES = {"P0": "noop", "P1": "hold", "P2": "read", "P3": "calls"}
LISTENERS = list(CORE)  # extended by --probes
LISTENER_DESC = {
    "L0": "router only",
    "L1": "no-op proxy-wasm filter",
    "L2": "Aegis filter",
    "L3": "native RBAC filter",
    "P0": "probe: no-op, with only the callbacks Aegis exports",
    "P1": "probe: P0 + headers held, body buffered",
    "P2": "probe: P1 + headers and body read into the VM",
    "P3": "probe: P2 + Aegis's other host calls",
}
AGENT = "bookkeeping-agent"
HOST = "ledger.acme.internal"
PATH = "/v1/journal_entries"
WRONG_PATH = "/v1/journal_entries/je_1042/void"
SSN = "123-45-6789"
CARD = "4111 1111 1111 1111"
ENVOY_CPU = "0"  # Envoy alone on CPU 0
LOAD_CPU = "1"  # load generator and upstream share CPU 1

CHILDREN: list[subprocess.Popen] = []
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


def aegis_configuration(trusted_key: str, filter_state: list[str] | None) -> dict:
    conf = {"trusted_keys": [trusted_key], "allow_on_headers_stop_iteration": True}
    if filter_state is not None:
        conf["filter_state"] = filter_state
    return conf


def envoy_config(
    admin: int,
    ports: dict[str, int],
    upstream: int,
    noop_wasm: Path,
    probe_wasm: Path,
    aegis_wasm: Path,
    trusted_key: str,
    rbac: dict,
    filter_state: list[str] | None,
) -> dict:
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

    chains = {
        "L0": [router],
        "L1": [wasm("noop", noop_wasm, "{}"), router],
        "L2": [
            wasm(
                "aegis",
                aegis_wasm,
                json.dumps(aegis_configuration(trusted_key, filter_state)),
            ),
            router,
        ],
        **{p: [wasm(f"probe-{mode}", probe_wasm, mode), router] for p, mode in PROBES.items()},
        "L3": [
            {
                "name": "envoy.filters.http.rbac",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": rbac},
            },
            router,
        ],
    }
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
                                    "http_filters": chains[name],
                                },
                            }
                        ]
                    }
                ],
            }
        )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}}
                                ]
                            }
                        ],
                    },
                }
            ],
        },
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

    def filter_latency(self, name: str) -> dict[str, float]:
        """Quantiles (P50, P90, P99) of a filter's own latency histogram
        (`aegis_request_latency_us`: the time inside the Aegis filter's
        callbacks, host calls included; `probe_latency_us`: the same for
        probe P3), over every request since Envoy started."""
        status, text = self.get(f"/stats?filter={name}$")
        out: dict[str, float] = {}
        if status != 200:
            return out
        for q in ("P50", "P90", "P99"):
            m = re.search(rf"\b{q}\([^,]*,([0-9.]+)\)", text)
            if m:
                out[q] = float(m.group(1))
        return out

    def counters(self) -> dict[str, int]:
        """Downstream request counters per listener and the Aegis decision
        counters, by name."""
        status, text = self.get("/stats?usedonly")
        if status != 200:
            die(f"envoy /stats answered {status}")
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if re.fullmatch(r"http\.[lp][0-9]\.downstream_rq_(completed|2xx|4xx|5xx)", name):
                out[name] = int(value)
            elif name.endswith("aegis_decision_total"):
                m = re.search(r"decision=\.=([a-z_]+);", name)
                if m:
                    key = f"aegis.{m.group(1)}"
                    out[key] = out.get(key, 0) + int(value)
        return out


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
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


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
    headers = {"host": host, "x-aegis-agent": agent, **(extra or {})}
    if body is not None:
        headers["content-type"] = content_type
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def verify_with_echo(ports: dict[str, int], upstream: int, bodies: dict[int, dict[str, bytes]]) -> list[str]:
    """Every listener forwards the bench requests (200 through the
    upstream); L2 rewrites the PII bodies and nothing else; L2 and L3 deny a
    path the policy does not allow and an unknown agent."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", upstream), Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    report = []
    try:
        for size, pair in bodies.items():
            for kind, body in pair.items():
                for name in LISTENERS:
                    status, headers, echoed = send(ports[name], PATH, body)
                    if status != 200:
                        die(f"{name} {size} B {kind}: status {status}: {echoed[:300]!r}")
                    if name == "L2" and kind == "pii":
                        text = echoed.decode()
                        if SSN in text or CARD in text:
                            die(f"L2 forwarded PII unredacted ({size} B)")
                        if "[REDACTED:ssn]" not in text or "[REDACTED:credit_card]" not in text:
                            die(f"L2 did not redact as expected ({size} B): {text[:300]}")
                        want = json.loads(body)
                        want["memo"] = want["memo"].replace(SSN, "[REDACTED:ssn]").replace(CARD, "[REDACTED:credit_card]")
                        if json.loads(echoed) != want:
                            die(f"L2 changed more than the PII ({size} B): {text[:300]}")
                    elif echoed != body:
                        die(f"{name} {size} B {kind}: the upstream got another body")
        report.append(
            "every listener answers 200 through the upstream for the 1 KB and 16 KB bodies; "
            "only L2 rewrote them: the PII bodies arrived with [REDACTED:ssn] and "
            "[REDACTED:credit_card], the clean ones byte for byte"
        )
        body = next(iter(bodies.values()))["clean"]
        expect = {"L2": 403, "L3": 403}  # the others: 200
        for name in LISTENERS:
            want = expect.get(name, 200)
            status, headers, reply = send(ports[name], WRONG_PATH, body)
            if status != want:
                die(f"{name}: POST {WRONG_PATH} gave {status}, expected {want}: {reply[:300]!r}")
            if name == "L2" and headers.get("x-aegis-decision") != "deny":
                die(f"L2: no `x-aegis-decision: deny` on the denied request: {headers}")
            status, _, reply = send(ports[name], PATH, body, agent="intern-agent")
            if status != want:
                die(f"{name}: unknown agent gave {status}, expected {want}: {reply[:300]!r}")
        report.append(
            f"POST {WRONG_PATH} and an unknown agent: 200 on L0/L1, 403 on L2 (x-aegis-decision: deny) and L3 (RBAC)"
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
    finally:
        server.shutdown()
        server.server_close()
    return report


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
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    default_type application/json;
    location / {{ return 200 '{{"ok":true}}'; }}
  }}
}}
"""


# ---------------------------------------------------------------- oha


def oha(
    binary: str, port: int, bodies: Path, duration: float, connections: int, out: Path, rate: float | None = None
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
        HOST,
        "-H",
        f"x-aegis-agent: {AGENT}",
        "-Z",
        str(bodies),
    ]
    if rate is not None:
        args += ["-q", f"{rate:.0f}", "--latency-correction"]
    args.append(f"http://127.0.0.1:{port}{PATH}")
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


def measure(env: Envoy, args, port_name: str, port: int, bodies: Path, duration: float, out: Path, rate=None) -> dict:
    before = env.counters()
    ticks0 = cpu_ticks(env.proc.pid)
    sched0 = worker_sched(env.proc.pid)
    ngx0 = cpu_ticks(NGINX[0].pid) if NGINX else 0
    load0 = cpu_idle(LOAD_CPU)
    t0 = time.monotonic()
    res = oha(args.oha, port, bodies, duration, args.connections, out, rate)
    wall = time.monotonic() - t0
    ticks1 = cpu_ticks(env.proc.pid)
    sched1 = worker_sched(env.proc.pid)
    ngx1 = cpu_ticks(NGINX[0].pid) if NGINX else 0
    load1 = cpu_idle(LOAD_CPU)
    after = env.counters()
    s = oha_summary(res)
    prefix = f"http.{port_name.lower()}"
    completed = after.get(f"{prefix}.downstream_rq_completed", 0) - before.get(f"{prefix}.downstream_rq_completed", 0)
    ok2xx = after.get(f"{prefix}.downstream_rq_2xx", 0) - before.get(f"{prefix}.downstream_rq_2xx", 0)
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
    if port_name == "L2":
        s["aegis"] = {
            k.split(".", 1)[1]: after.get(k, 0) - before.get(k, 0)
            for k in set(after) | set(before)
            if k.startswith("aegis.")
        }
    problems = []
    if s["other_status"] or s["errors"]:
        problems.append(f"non-200 answers {s['other_status']} / errors {s['errors']}")
    if ok2xx != completed or completed < s["ok"]:
        problems.append(f"envoy counted {completed} requests, {ok2xx} 2xx; oha got {s['ok']} x 200")
    if port_name == "L2":
        a = s["aegis"]
        judged = a.get("allow", 0) + a.get("sanitize", 0)
        if judged != completed or any(v for k, v in a.items() if k not in ("allow", "sanitize")):
            problems.append(f"aegis decisions {a} do not add up to {completed} allowed/sanitized requests")
    if problems:
        die(f"{port_name}: " + "; ".join(problems))
    return s


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def rotated(r: int) -> list[str]:
    k = r % len(LISTENERS)
    return LISTENERS[k:] + LISTENERS[:k]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--nginx", required=True)
    ap.add_argument("--aegis", required=True, help="the aegis binary (for eval and explain)")
    ap.add_argument("--aegis-wasm", required=True, type=Path)
    ap.add_argument("--trusted-key", required=True, type=Path, help="the .pub of the blob's signing key")
    ap.add_argument("--noop-wasm", required=True, type=Path)
    ap.add_argument("--policy", required=True, type=Path)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per listener and body size")
    ap.add_argument("--sizes", default="1024,16384", help="body sizes in bytes")
    ap.add_argument("--load", type=float, default=0.5, help="open-loop rate as a fraction of L0's capacity")
    ap.add_argument(
        "--filter-state",
        default="-",
        help="the Aegis listener's `filter_state` keys, comma-separated ('' for none, '-' for the default: all)",
    )
    ap.add_argument(
        "--probes",
        action="store_true",
        help="also run the no-op filter as P0-P3 (phase 1 only) to split what L2 adds over L1",
    )
    ap.add_argument("--settings", default="", help="how the run was started (for the report)")
    args = ap.parse_args()
    if args.probes:
        LISTENERS.extend(PROBES)

    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    filter_state = None if args.filter_state == "-" else [k for k in args.filter_state.split(",") if k]
    started = time.time()

    # Bodies: per size one file of two lines (clean, PII); oha picks a line
    # at random for every request, so half the requests carry PII.
    bodies: dict[int, dict[str, bytes]] = {}
    body_files: dict[int, Path] = {}
    for size in sizes:
        bodies[size] = {"clean": tool_call(size, False), "pii": tool_call(size, True)}
        f = work / f"bodies-{size}.lines"
        f.write_bytes(bodies[size]["clean"] + b"\n" + bodies[size]["pii"] + b"\n")
        body_files[size] = f

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
    cases_file = work / "bench-requests.cases.yaml"
    cases_file.write_text(json.dumps(cases, indent=1))
    r = subprocess.run([args.aegis, "eval", str(args.policy), "--cases", str(cases_file)], capture_output=True, text=True)
    if r.returncode != 0:
        die(f"aegis eval failed: {r.stderr}")
    for case, line in zip(cases, r.stdout.splitlines()):
        got = json.loads(line)
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

    admin, upstream, *lports = free_ports(2 + len(LISTENERS))
    ports = dict(zip(LISTENERS, lports))
    probe_wasm = work / "probe.wasm"
    probe_wasm.write_bytes(with_exports_of(args.noop_wasm.read_bytes(), args.aegis_wasm.read_bytes()))
    config = envoy_config(
        admin,
        ports,
        upstream,
        args.noop_wasm.resolve(),
        probe_wasm,
        args.aegis_wasm.resolve(),
        args.trusted_key.read_text(),
        rbac,
        filter_state,
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
        report = verify_with_echo(ports, upstream, bodies)
        for line in report:
            log(f"    ok: {line}")

        log(f"==> nginx on CPU {LOAD_CPU} as the load upstream (port {upstream})")
        ngdir = work / "nginx"
        shutil.rmtree(ngdir, ignore_errors=True)
        ngdir.mkdir()
        (ngdir / "nginx.conf").write_text(NGINX_CONF.format(dir=ngdir, port=upstream))
        nginx = spawn(
            [args.nginx, "-p", str(ngdir), "-e", str(ngdir / "nginx-error.log"), "-c", str(ngdir / "nginx.conf")],
            LOAD_CPU,
            ngdir / "nginx.out",
        )
        wait_port(upstream, nginx, "nginx", ngdir / "nginx-error.log")
        NGINX.append(nginx)
        for name in LISTENERS:
            for size in sizes:
                status, _, reply = send(ports[name], PATH, bodies[size]["pii"])
                if status != 200 or reply != b'{"ok":true}':
                    die(f"{name} through nginx: {status} {reply[:200]!r}")

        raw = {"settings": vars(args) | {"sizes": sizes}, "runs": []}
        runs_dir = work / "runs"
        shutil.rmtree(runs_dir, ignore_errors=True)
        runs_dir.mkdir()

        if args.warmup > 0:
            log(f"==> warm-up: {args.warmup}s per listener and size")
            for size in sizes:
                for name in LISTENERS:
                    measure(env, args, name, ports[name], body_files[size], args.warmup, runs_dir / "warmup.json")

        # Each round: phase 1 (closed loop, capacity) for every size and
        # listener, then phase 2 (open loop) at `--load` x the L0 capacity
        # just measured in this round, so that the rate follows the machine
        # when other processes come and go.
        cap: dict[int, dict[str, list[dict]]] = {s: {n: [] for n in LISTENERS} for s in sizes}
        lat: dict[int, dict[str, list[dict]]] = {s: {n: [] for n in LISTENERS} for s in sizes}
        rates: dict[int, list[float]] = {s: [] for s in sizes}
        for r in range(args.rounds):
            for size in sizes:
                for name in rotated(r):
                    s = measure(
                        env, args, name, ports[name], body_files[size], args.duration, runs_dir / f"p1-r{r}-{size}-{name}.json"
                    )
                    cap[size][name].append(s)
                    raw["runs"].append({"phase": 1, "round": r, "size": size, "listener": name, **s})
                    log(
                        f"    round {r + 1}/{args.rounds} phase 1 {size_label(size):>6} {name}: {s['rps']:7.0f} req/s, "
                        f"{s['cpu_us_per_req']:6.1f} CPU-us/req; envoy worker on CPU {s['worker_on_cpu']:.0%}, "
                        f"waiting {s['worker_waiting']:.0%}; oha+nginx {s['load_us_per_req']:.1f} CPU-us/req, "
                        f"CPU {LOAD_CPU} busy {s['load_cpu_busy']:.0%}"
                        + (f", aegis {s['aegis']}" if name == "L2" else "")
                    )
            for size in sizes:
                rate = args.load * cap[size]["L0"][r]["rps"]
                rates[size].append(rate)
                for name in (n for n in rotated(r) if n in CORE):
                    s = measure(
                        env,
                        args,
                        name,
                        ports[name],
                        body_files[size],
                        args.duration,
                        runs_dir / f"p2-r{r}-{size}-{name}.json",
                        rate=rate,
                    )
                    s["rate"] = rate
                    lat[size][name].append(s)
                    raw["runs"].append({"phase": 2, "round": r, "size": size, "listener": name, **s})
                    log(
                        f"    round {r + 1}/{args.rounds} phase 2 {size_label(size):>6} {name} @ {rate:.0f}/s: "
                        f"p50 {s['p50_us']:7.1f} us, p99 {s['p99_us']:7.1f} us, p99.9 {s['p99.9_us']:7.1f} us "
                        f"(got {s['rps']:.0f}/s)"
                    )
        filter_latency = {
            "L2": env.filter_latency("aegis_request_latency_us"),
            "P3": env.filter_latency("probe_latency_us") if args.probes else {},
        }
        stop(nginx)
        stop(env.proc)
    finally:
        stop_all()

    elapsed = time.time() - started
    md = report_md(args, sizes, cap, lat, rates, envoy_version, elapsed, report, rbac_notes, filter_latency)
    (work / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    (work / "results.md").write_text(md)
    print(md)
    log(f"==> written: {work / 'results.md'}, {work / 'results.json'} (every run: {runs_dir})")


def report_md(args, sizes, cap, lat, rates, envoy_version, elapsed, checks, rbac_notes, filter_latency) -> str:
    rounds = range(args.rounds)

    def ratio(table, size, a, b, key):
        return median([table[size][a][r][key] / table[size][b][r][key] for r in rounds])

    def diff(table, size, a, b, key):
        return median([table[size][a][r][key] - table[size][b][r][key] for r in rounds])

    def med(table, size, name, key):
        return median([table[size][name][r][key] for r in rounds if r < len(table[size][name])])

    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    oha_v = subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip()
    ngx = subprocess.run([args.nginx, "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", "")
    cols = " | ".join(size_label(s) for s in sizes)
    sep = " | ".join("---:" for _ in sizes)
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
        f"({', '.join(f'{size_label(s)}: {rate_range(rates[s])} req/s' for s in sizes)}); "
        f"JSON tool calls, half of them with PII (SSN + card number, redacted by L2); "
        f"total time {elapsed / 60:.1f} min. {args.settings}".rstrip()
    )
    L.append("")
    L.append("Medians over rounds of per-round ratios and differences (L2 = Aegis):")
    L.append("")
    L.append(f"| metric | {cols} | target (DESIGN.md 9) |")
    L.append(f"| --- | {sep} | --- |")
    for b in ["L0", "L1", "L3"]:
        vals = " | ".join(fmt(ratio(cap, s, "L2", b, "rps")) for s in sizes)
        L.append(f"| throughput L2/{b} | {vals} | {'>= 0.85 (1 KB)' if b == 'L0' else ''} |")
    for b in ["L0", "L1", "L3"]:
        vals = " | ".join(fmt(ratio(cap, s, "L2", b, "cpu_us_per_req")) for s in sizes)
        L.append(f"| Envoy CPU-us/request L2/{b} | {vals} | |")
    for k in ["p50", "p99", "p99.9"]:
        for b in ["L0", "L1", "L3"]:
            vals = " | ".join(fmt(diff(lat, s, "L2", b, f"{k}_us"), 1) for s in sizes)
            tgt = "<= 50 us (1 KB)" if (k, b) == ("p99", "L0") else ""
            L.append(f"| added {k} L2-{b} (us) | {vals} | {tgt} |")
    vals = " | ".join(fmt(median([lat[s]["L2"][r]["rate"] / cap[s]["L2"][r]["rps"] for r in rounds])) for s in sizes)
    L.append(f"| open-loop rate / L2's own capacity (above ~0.8: L2's latency is mostly queueing) | {vals} | |")
    for a in ["L1", "L3"]:
        vals = " | ".join(fmt(ratio(cap, s, a, "L0", "rps")) for s in sizes)
        L.append(f"| (context) throughput {a}/L0 | {vals} | |")
    for a in ["L1", "L3"]:
        vals = " | ".join(fmt(ratio(cap, s, a, "L0", "cpu_us_per_req")) for s in sizes)
        L.append(f"| (context) Envoy CPU-us/request {a}/L0 | {vals} | |")
    L.append("")
    L.append("Per listener, medians over rounds (context; absolute numbers drift between machines and runs):")
    L.append("")
    head = ["listener"]
    for s in sizes:
        lab = size_label(s)
        head += [f"{lab} req/s", f"{lab} CPU-us/req", f"{lab} p50 us", f"{lab} p99 us", f"{lab} p99.9 us"]
    L.append("| " + " | ".join(head) + " |")
    L.append("| --- | " + " | ".join("---:" for _ in head[1:]) + " |")
    for name in LISTENERS:
        row = [f"{name} {LISTENER_DESC[name]}"]
        for s in sizes:
            row += [
                fmt(med(cap, s, name, "rps"), 0),
                fmt(med(cap, s, name, "cpu_us_per_req"), 1),
                fmt(med(lat, s, name, "p50_us"), 1),
                fmt(med(lat, s, name, "p99_us"), 1),
                fmt(med(lat, s, name, "p99.9_us"), 1),
            ]
        L.append("| " + " | ".join(row) + " |")
    L.append("")
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
            vals = " | ".join(fmt(diff(cap, s, a, b, "cpu_us_per_req"), 1) for s in sizes)
            L.append(f"| {what} | {vals} |")
        L.append("")
    def allmed(key):
        return median([r[key] for s in sizes for n in LISTENERS for r in cap[s][n]])

    L.append(
        f"Closed loop, medians over all runs: Envoy's worker thread on CPU {allmed('worker_on_cpu'):.0%} of the "
        f"time and runnable but waiting for CPU {ENVOY_CPU} (taken by other processes) {allmed('worker_waiting'):.0%} "
        f"(max {max(r['worker_waiting'] for s in sizes for n in LISTENERS for r in cap[s][n]):.0%}); "
        f"Envoy {allmed('cpu_us_per_req'):.1f} CPU-us/request against {allmed('load_us_per_req'):.1f} for "
        f"oha + nginx together; CPU {LOAD_CPU} busy {allmed('load_cpu_busy'):.0%} (all processes). "
        f"On a quiet machine the worker is on CPU ~100% and waits ~0%."
    )
    for s in sizes:
        for n in CORE:
            got = median([r["rps"] / r["rate"] for r in lat[s][n]])
            if got < 0.97:
                L.append(
                    f"**{n} could not sustain the open-loop rate at {size_label(s)}** (got {got:.0%} of it): its "
                    "latency there is queueing in an overloaded proxy, not the cost of one request."
                )
    for name, what in [
        ("L2", "Time inside the Aegis filter's callbacks as it measures it itself (`aegis_request_latency_us`"),
        ("P3", "The same for probe P3, whose callbacks make the same host calls and no decision (`probe_latency_us`"),
    ]:
        if filter_latency[name]:
            quantiles = ", ".join(f"{q} {v:g} us" for q, v in filter_latency[name].items())
            L.append(f"{what}, every {name} request of the run, all sizes): {quantiles}.")
    pii = []
    for s in sizes:
        a = [r.get("aegis", {}) for r in cap[s]["L2"]]
        san = sum(x.get("sanitize", 0) for x in a)
        tot = sum(x.get("sanitize", 0) + x.get("allow", 0) for x in a)
        if tot:
            pii.append(f"{size_label(s)} {san / tot:.1%}")
    L.append(f"Share of L2 requests sanitized (PII) in phase 1: {', '.join(pii)}.")
    L.append("Checked before measuring: " + "; ".join(checks) + ".")
    cond = sum(1 for n in rbac_notes if "conditions not expressible" in n)
    dlp = sum(1 for n in rbac_notes if "DLP" in n)
    L.append(
        f"L3's RBAC rules come from `aegis explain`; they cannot express the conditions of {cond} rules "
        f"and the DLP of {dlp} agents (rbac-notes.txt)."
    )
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
