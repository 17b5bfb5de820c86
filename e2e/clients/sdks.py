"""Which SDKs this run tests.

scripts/test-clients.sh runs the suite twice and says which run this is
with AEGIS_CLIENTS_SUITE:

- `mcp2`: the .venv/clients-mcp2 virtualenv: stripe, openai and mcp 2.x;
- `mcp1`: the .venv/clients-mcp1 virtualenv: mcp 1.x only.

A test whose SDK belongs to the run must run: when the SDK cannot be
imported, or is the wrong major version, the test fails. Tests of SDKs
that belong to the other run are skipped. Without AEGIS_CLIENTS_SUITE
(a run by hand), every test whose SDK can be imported runs.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version

import pytest

SUITES = {
    "mcp2": {"stripe": None, "openai": None, "mcp": 2},
    "mcp1": {"mcp": 1},
}

SUITE = os.environ.get("AEGIS_CLIENTS_SUITE") or None
if SUITE is not None and SUITE not in SUITES:
    raise RuntimeError(f"AEGIS_CLIENTS_SUITE must be one of {sorted(SUITES)}, not {SUITE!r}")


def major(package: str) -> int:
    return int(version(package).split(".")[0])


def require(package: str):
    """Imports the SDK `package` for a test module, or skips the module
    when this run does not test it (see the module docstring)."""
    if SUITE is None:
        module = pytest.importorskip(package)
        return module
    wanted = SUITES[SUITE]
    if package not in wanted:
        pytest.skip(f"{package} is tested in another run than {SUITE}", allow_module_level=True)
    module = importlib.import_module(package)  # an ImportError fails the run, as it must
    want_major = wanted[package]
    try:
        have = major(package)
    except PackageNotFoundError as e:
        raise RuntimeError(f"{package} is importable but has no distribution metadata") from e
    if want_major is not None and have != want_major:
        raise RuntimeError(f"the {SUITE} run needs {package} {want_major}.x, found {version(package)}")
    return module
