"""Shared fixtures for oracle tests: our C code against llama.cpp
(llama-cpp-python) and PyTorch. The C side is reached through the built
`lemonpc` binary and small tools in build/tools/."""
import os
import pathlib
import subprocess

# llama.cpp's OpenMP threads spin-wait by default; on a busy 2-core machine
# that makes the oracle ~20x slower. Must be set before libgomp loads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")


@pytest.fixture(scope="session")
def root():
    return ROOT


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
def model_path():
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (fetched, never downloaded
    at test time beyond the project's fetch script)."""
    p = os.environ.get("LEMONPC_MODEL")
    if not p:
        p = subprocess.run([str(ROOT / "scripts" / "fetch_model.sh")], check=True,
                           capture_output=True, text=True).stdout.strip()
    return pathlib.Path(p)


@pytest.fixture(scope="session")
def tmp_models(tmp_path_factory):
    return tmp_path_factory.mktemp("models")
