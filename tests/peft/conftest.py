"""Fixtures for the PEFT interop test. It needs torch + transformers + peft
(+ gguf), which scripts/setup_peft_venv.sh installs into a venv on top of
Debian's torch 1.13; run it with that venv's python:
    "$(scripts/setup_peft_venv.sh)" -m pytest -q tests/peft"""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")


@pytest.fixture(scope="session")
def lemonpc():
    exe = BUILD / "lemonpc"
    assert exe.exists(), f"{exe} missing: run `make` first"
    return exe


@pytest.fixture(scope="session")
def tool():
    def path(name):
        exe = BUILD / "tools" / name
        assert exe.exists(), f"{exe} missing: run `make` first"
        return exe
    return path


@pytest.fixture(scope="session")
def real_model():
    p = os.environ.get("LEMONPC_MODEL")
    if not p:
        cache = os.environ.get("LEMONPC_CACHE", os.path.expanduser("~/.cache/lemonpc"))
        p = os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(p):
        pytest.skip(f"{p} not present: run scripts/fetch_model.sh")
    return pathlib.Path(p)
