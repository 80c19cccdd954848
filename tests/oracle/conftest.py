"""Shared fixtures for oracle tests: our C code against llama.cpp
(llama-cpp-python) and PyTorch. The C side is reached through the built
`lemonpc` binary and small tools in build/tools/."""
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(model_path, tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on the real model (a
    teacher nobody here wrote), on a free port; a failure without its extras
    (tests/requirements.txt installs llama-cpp-python[server])."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as e:
        pytest.fail(f"llama_cpp.server cannot be imported ({e}); "
                    "pip install fastapi uvicorn sse-starlette starlette-context pydantic-settings")
    port = free_port()
    log = open(tmp_path_factory.mktemp("llama_server") / "server.log", "w")
    # n_ctx 2048: an answer request is up to ~1400 prompt tokens + 320 new.
    p = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
                          "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                          "--n_threads", "2", "--seed", "0"],
                         stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        t0 = time.monotonic()
        while True:
            assert p.poll() is None, f"llama_cpp.server exited; see {log.name}"
            try:
                urllib.request.urlopen(base + "/models", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() - t0 < 120, "llama_cpp.server did not come up in 120 s"
                time.sleep(0.5)
        yield base
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()
