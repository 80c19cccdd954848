"""Fixtures for the PyTorch gradient oracle. Run with Debian's interpreter,
which has python3-torch: `/usr/bin/python3 -m pytest -q tests/torch`
(`make oracle-torch`)."""
import os
import pathlib
import subprocess
import time

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


@pytest.fixture(scope="session")
def kernel_sets(tool):
    """The kernel sets each C check runs under: LEMONPC_KERNELS alone when it
    is set, else every set this machine runs (lm_gradcheck --kernel-sets:
    the C side's own CPUID/XCR0 probe), so one reference serves avx512,
    avx2 and scalar."""
    forced = os.environ.get("LEMONPC_KERNELS")
    if forced:
        return [forced]
    r = subprocess.run([str(tool("lm_gradcheck")), "--kernel-sets"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sets = r.stdout.split()
    assert "scalar" in sets, sets
    return sets


@pytest.fixture(scope="session")
def run_per_set(tool, kernel_sets):
    """run(name, *args) -> [(set, CompletedProcess)]: the tool once under
    each kernel set, its output printed. skip: sets left out unless
    LEMONPC_KERNELS names one (the real model's check skips scalar, the
    slowest, to keep the suite minutes long; the small models cover it)."""
    def run(name, *args, skip=()):
        out = []
        for ks in kernel_sets:
            if ks in skip and not os.environ.get("LEMONPC_KERNELS"):
                continue
            env = dict(os.environ, LEMONPC_KERNELS=ks)
            t0 = time.time()
            r = subprocess.run([str(tool(name))] + [str(a) for a in args], capture_output=True,
                               text=True, timeout=1200, env=env)
            print(f"--- {name} with LEMONPC_KERNELS={ks} ({time.time() - t0:.1f}s)\n"
                  f"{r.stdout}{r.stderr}")
            out.append((ks, r))
        return out
    run.sets = kernel_sets
    return run
