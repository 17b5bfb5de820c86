"""Fixtures of the real-client suite: one gateway (Envoy with the Aegis
blob, local upstreams) for the whole session, started only when a test
needs it. See harness.py."""

from __future__ import annotations

import os

import pytest

from harness import Gateway

# The SDKs (requests, httpx) read proxies from the environment; the suite
# sets every proxy itself.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.lower(), None)

_gateway: Gateway | None = None


@pytest.fixture(scope="session")
def gateway():
    global _gateway
    _gateway = Gateway.start()
    try:
        yield _gateway
    finally:
        _gateway.stop(failed=_gateway.failed)
        _gateway = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _gateway is not None:
        _gateway.failed = True
        report.sections.append(("gateway logs (tail)", _gateway.tail(25)))
