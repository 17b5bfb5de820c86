"""The gateway the client suite talks to: Envoy with the Aegis blob in
front of local upstreams, all on loopback, in a temporary folder.

`Gateway.start()` does, in order:

1. a temporary work folder;
2. the issuer key (`aegis keygen`) and an Identity document next to it;
3. the blob: `aegis build e2e/clients/policies WORKDIR/identity.yaml`
   signed with the demo key (derived as `envoy/demo-blob.sh` derives it;
   the gateway config trusts its public key);
4. one token per agent (`aegis token issue`);
5. the upstreams (`upstreams/rest_api.py` for Stripe and OpenAI,
   `upstreams/mcp_server.py`) on free loopback ports, each recording the
   requests it receives;
6. the gateway config `envoy/agent-gateway.yaml`, rendered by text
   substitution: the blob and secrets paths (`out/envoy/filter.wasm`,
   `envoy/secrets/`, or `/etc/aegis/`) go to the work folder and every fixed
   port (listeners 10000-10003, admin 9901, upstreams 8081-8083) a free
   one; the secret files it reads (`secrets/*.yaml`, the tools' real keys)
   are written to the work folder;
7. Envoy, until `/ready` answers 200.

`stop()` ends every process it started and removes the work folder
(kept when a test failed, or with AEGIS_CLIENTS_KEEP=1). Paths can be
overridden: AEGIS_BIN (the `aegis` binary), AEGIS_ENVOY (the `envoy`
binary), AEGIS_CLIENTS_GATEWAY_CONFIG (the config to render).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POLICIES = HERE / "policies"
UPSTREAMS = HERE / "upstreams"

ISSUER = "https://tokens.clients.aegis.test"
AUDIENCE = "aegis-gateway"
KID = "clients-2026"
AGENTS = ("finance-agent", "chat-agent", "mcp-agent")

# The tools' real keys, as the gateway injects them (the values of the
# secrets it reads; the agents never hold them).
INJECTED = {
    "stripe": "Bearer sk_test_aegis_injected_stripe",
    "openai": "Bearer sk-aegis-injected-openai",
    "mcp": "Bearer mcp-aegis-injected",
}


def assert_real_key_only(tool: str, seen: list[dict], token: str) -> None:
    """Every request the tool's upstream saw carries the key the gateway
    injects for that tool, and the agent's Aegis token nowhere."""
    assert seen, f"the {tool} upstream saw no request"
    for entry in seen:
        auth = [v for k, v in entry["headers"] if k == "authorization"]
        assert auth == [INJECTED[tool]], f"{entry['method']} {entry['body'][:80]}: authorization upstream {auth}"
        leaked = [(k, v) for k, v in entry["headers"] if token in v]
        assert not leaked, f"the Aegis token reached the {tool} upstream in {leaked}"


def assert_forwarded_with_real_key(tool: str, seen: list[dict], token: str) -> dict:
    """The one request the tool's upstream saw, checked as above."""
    assert len(seen) == 1, f"the upstream saw {len(seen)} requests: {seen}"
    assert_real_key_only(tool, seen, token)
    return seen[0]

# Fixed ports of envoy/agent-gateway.yaml and what they are.
CONFIG_PORTS = {
    "proxy": 10000,
    "stripe_base": 10001,
    "openai_base": 10002,
    "mcp_base": 10003,
    "admin": 9901,
    "stripe": 8081,
    "openai": 8082,
    "mcp": 8083,
}

# Same derivation as envoy/demo-blob.sh: the Ed25519 seed is SHA-256 of
# this public text; PKCS#8 v1 (RFC 8410) is a fixed prefix plus the seed.
DEMO_KEY_LABEL = b"aegis envoy demo key: public, never trust it in production"
PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")

READY_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0


class HarnessError(RuntimeError):
    pass


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports nobody listens on right now."""
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the test process dies, so a
    killed run leaves no Envoy or upstream behind (Linux; elsewhere a no-op)."""
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def write_demo_key(path: Path) -> None:
    seed = hashlib.sha256(DEMO_KEY_LABEL).digest()
    der = PKCS8_ED25519_PREFIX + seed
    pem = "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n" % base64.b64encode(der).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pem)


def run(cmd: list[str], **kw) -> str:
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL, **kw
        )
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"`{' '.join(cmd)}` did not finish in {COMMAND_TIMEOUT:.0f} s") from e
    if out.returncode != 0:
        raise HarnessError(f"`{' '.join(cmd)}` failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return out.stdout


def aegis_binary() -> Path:
    path = Path(os.environ.get("AEGIS_BIN", REPO / "target" / "debug" / "aegis"))
    if not path.is_file():
        raise HarnessError(
            f"no aegis binary at {path}: run `cargo build --locked -p aegis-compiler --bin aegis` "
            "(scripts/test-clients.sh does)"
        )
    return path


def envoy_binary() -> Path:
    if os.environ.get("AEGIS_ENVOY"):
        return Path(os.environ["AEGIS_ENVOY"])
    out = run([str(REPO / "scripts" / "install-envoy.sh")])
    return Path(out.strip().splitlines()[-1])


def gateway_config() -> Path:
    path = Path(os.environ.get("AEGIS_CLIENTS_GATEWAY_CONFIG", REPO / "envoy" / "agent-gateway.yaml"))
    if not path.is_file():
        raise HarnessError(f"no gateway config at {path}")
    return path


# Where a config run from the repository root finds the blob and the
# secrets (envoy/demo-blob.sh writes the blob there), and what they become.
REPO_RELATIVE_PATHS = {"out/envoy/filter.wasm": "filter.wasm", "envoy/secrets/": "secrets/"}


def render_config(text: str, workdir: Path, ports: dict[str, int]) -> str:
    """`/etc/aegis/` -> WORKDIR/, and each fixed port -> its free one.

    The repository-relative paths of a config meant to run from the
    repository root (`out/envoy/filter.wasm`, `envoy/secrets/`) are mapped
    into WORKDIR the same way. A port is replaced wherever it stands as a
    number of its own (not part of a longer number): `port_value: 10001`,
    `127.0.0.1:10001`, ...
    """
    text = text.replace("/etc/aegis/", str(workdir) + "/")
    for old, new in REPO_RELATIVE_PATHS.items():
        target = str(workdir / new) + ("/" if old.endswith("/") else "")
        text = re.sub(r"(?<![\w./-])" + re.escape(old), lambda _, target=target: target, text)
    by_old = {CONFIG_PORTS[name]: new for name, new in ports.items()}
    pattern = re.compile(r"(?<![\d.])(%s)(?!\d)" % "|".join(str(p) for p in by_old))
    return pattern.sub(lambda m: str(by_old[int(m.group(1))]), text)


def secret_file(name: str, value: str) -> str:
    """An SDS file holding one generic secret."""
    doc = {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": name,
                "generic_secret": {"secret": {"inline_string": value}},
            }
        ]
    }
    return json.dumps(doc, indent=2) + "\n"


@dataclass
class Upstream:
    name: str
    proc: subprocess.Popen
    port: int
    record: Path
    log: Path

    def requests(self) -> list[dict]:
        if not self.record.exists():
            return []
        with open(self.record, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


@dataclass
class Gateway:
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    envoy: subprocess.Popen | None = None
    envoy_log: Path | None = None
    access_log: Path | None = None
    keep: bool = False
    failed: bool = False
    _files: list = field(default_factory=list)

    # -- addresses the clients use ---------------------------------------

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    def base_url(self, tool: str) -> str:
        """The SDK's base URL in base-URL mode (the gateway itself)."""
        port = self.ports[f"{tool}_base"]
        return {
            "stripe": f"http://127.0.0.1:{port}",
            "openai": f"http://127.0.0.1:{port}/v1",
            "mcp": f"http://127.0.0.1:{port}/mcp",
        }[tool]

    @staticmethod
    def tool_url(tool: str) -> str:
        """The SDK's base URL in proxy mode (the tool's own host, plain http)."""
        return {
            "stripe": "http://api.stripe.com",
            "openai": "http://api.openai.com/v1",
            "mcp": "http://mcp.tools.internal/mcp",
        }[tool]

    def __repr__(self) -> str:
        return f"Gateway({self.workdir})"

    def token(self, agent: str) -> str:
        return self.tokens[agent]

    # -- what the upstreams saw ------------------------------------------

    def mark(self, tool: str) -> int:
        return len(self.upstreams[tool].requests())

    def seen_since(self, tool: str, mark: int) -> list[dict]:
        return self.upstreams[tool].requests()[mark:]

    # -- lifecycle -------------------------------------------------------

    @classmethod
    def start(cls) -> "Gateway":
        workdir = Path(tempfile.mkdtemp(prefix="aegis-clients-"))
        gw = cls(workdir=workdir, keep=bool(os.environ.get("AEGIS_CLIENTS_KEEP")))
        try:
            gw._start()
        except BaseException:
            gw.stop(failed=True)
            raise
        return gw

    def _start(self) -> None:
        aegis = str(aegis_binary())
        envoy = envoy_binary()
        config_src = gateway_config()
        w = self.workdir

        write_demo_key(w / "demo.key")
        run([aegis, "keygen", "--out", str(w / "issuer")])
        (w / "identity.yaml").write_text(
            "kind: Identity\n"
            f"issuer: {ISSUER}\n"
            f"audience: {AUDIENCE}\n"
            "keys:\n"
            f"  - kid: {KID}\n"
            "    public_key_file: issuer.pub\n"
        )
        run(
            [
                aegis,
                "build",
                str(POLICIES),
                str(w / "identity.yaml"),
                "--key",
                str(w / "demo.key"),
                "-o",
                str(w / "filter.wasm"),
            ]
        )
        for agent in AGENTS:
            self.tokens[agent] = run(
                [
                    aegis,
                    "token",
                    "issue",
                    "--key",
                    str(w / "issuer.key"),
                    "--kid",
                    KID,
                    "--issuer",
                    ISSUER,
                    "--audience",
                    AUDIENCE,
                    "--agent",
                    agent,
                    "--ttl",
                    "30m",
                ]
            ).strip()

        self.ports = dict(zip(CONFIG_PORTS, free_ports(len(CONFIG_PORTS)), strict=True))

        self._start_upstream("stripe", [str(UPSTREAMS / "rest_api.py"), "--kind", "stripe"])
        self._start_upstream("openai", [str(UPSTREAMS / "rest_api.py"), "--kind", "openai"])
        self._start_upstream("mcp", [str(UPSTREAMS / "mcp_server.py")])

        (w / "secrets").mkdir()
        for tool, value in INJECTED.items():
            (w / "secrets" / f"{tool}.yaml").write_text(secret_file(f"{tool}-key", value))
        config = w / "agent-gateway.yaml"
        config.write_text(render_config(config_src.read_text(), w, self.ports))

        self.envoy_log = w / "envoy.log"
        self.access_log = w / "access.log"
        self.envoy = subprocess.Popen(
            [
                str(envoy),
                "-c",
                str(config),
                "--disable-hot-restart",
                "-l",
                "warning",
                "--component-log-level",
                "wasm:info",
                "--base-id",
                str(random.randint(1000, 2**30)),
                "--file-flush-interval-msec",
                "50",
            ],
            cwd=w,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            stdout=self._open(self.access_log),
            stderr=self._open(self.envoy_log),
        )
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{self.ports['admin']}/ready"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if self.envoy.poll() is not None:
                raise HarnessError(f"envoy exited ({self.envoy.returncode}) before it was ready:\n{self.tail()}")
            try:
                with opener.open(url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"envoy was not ready after {READY_TIMEOUT:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def _open(self, path: Path):
        f = open(path, "wb")
        self._files.append(f)
        return f

    def _start_upstream(self, name: str, argv: list[str]) -> None:
        port = self.ports[name]
        record = self.workdir / f"{name}.requests.jsonl"
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, *argv, "--port", str(port), "--record", str(record)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            stdout=self._open(log),
            stderr=subprocess.STDOUT,
        )
        self.upstreams[name] = Upstream(name, proc, port, record, log)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise HarnessError(f"upstream {name} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"upstream {name} did not listen on {port} in {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        """The last lines of Envoy's log, its access log and the upstreams' logs."""
        parts = []
        for title, path in [("envoy log", self.envoy_log), ("access log", self.access_log)] + [
            (f"{u.name} upstream log", u.log) for u in self.upstreams.values()
        ]:
            if path is None or not path.exists():
                continue
            text = path.read_text(errors="replace").splitlines()[-lines:]
            if text:
                parts.append(f"--- {title} ({path}) ---\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, failed: bool = False) -> None:
        procs = [u.proc for u in self.upstreams.values()]
        if self.envoy is not None:
            procs.insert(0, self.envoy)
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for f in self._files:
            f.close()
        if failed or self.keep:
            print(f"aegis client suite: work folder kept at {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
