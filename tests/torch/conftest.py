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


@pytest.fixture(scope="session")
def real_model():
    """SmolLM2-135M-Instruct GGUF if present (LEMONPC_MODEL, else the cache
    scripts/fetch_model.sh fills); the test is skipped without it, since
    nothing may download weights at test time."""
    p = os.environ.get("LEMONPC_MODEL")
    if not p:
        cache = os.environ.get("LEMONPC_CACHE", os.path.expanduser("~/.cache/lemonpc"))
        p = os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(p):
        pytest.skip(f"{p} not present: run scripts/fetch_model.sh")
    return pathlib.Path(p)
