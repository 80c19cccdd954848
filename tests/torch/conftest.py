"""Fixtures for the PyTorch gradient oracle. Run with Debian's interpreter,
which has python3-torch: `/usr/bin/python3 -m pytest -q tests/torch`
(`make oracle-torch`)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")
TOOLS = pathlib.Path(os.environ.get("LEMONPC_TOOLS", BUILD / "tools"))


@pytest.fixture(scope="session")
def tool():
    def path(name):
        exe = TOOLS / name
        assert exe.exists(), f"{exe} missing: run `make` first"
        return exe
    return path
