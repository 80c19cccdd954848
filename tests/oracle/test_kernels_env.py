"""LEMONPC_KERNELS through the CLI and the public API it loads models with
(lemonpc generate -> lemonpc_model_load): a set this CPU runs is the set
that runs (-v says which); an unknown name, or a set the CPU lacks, fails
the load with a message naming the value, never a silent fallback."""
import os
import subprocess

import pytest


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = cpu_flags()
# What matmul.c checks (CPUID; XCR0 is the OS's side, which /proc/cpuinfo
# reflects: the kernel clears the avx512 flags when it does not enable them).
SUPPORTED = {
    "scalar": True,
    "avx2": {"avx2", "fma", "f16c"} <= FLAGS,
    "avx512": {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
               "avx512_vnni", "avx512_bf16"} <= FLAGS,
}


def generate(lemonpc, model_path, kernels):
    env = dict(os.environ)
    if kernels is None:
        env.pop("LEMONPC_KERNELS", None)
    else:
        env["LEMONPC_KERNELS"] = kernels
    return subprocess.run([str(lemonpc), "generate", str(model_path), "-p", "Hi", "-n", "2",
                           "-v", "--threads", "1"], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_named_set_runs_or_fails_loudly(name, lemonpc, model_path):
    r = generate(lemonpc, model_path, name)
    if SUPPORTED[name]:
        assert r.returncode == 0, r.stderr
        assert f"kernels: {name}\n" in r.stderr, r.stderr
    else:
        assert r.returncode != 0
        assert f"LEMONPC_KERNELS={name}: this CPU (or its OS) does not support" in r.stderr, r.stderr


def test_default_is_the_widest_set(lemonpc, model_path):
    r = generate(lemonpc, model_path, None)
    assert r.returncode == 0, r.stderr
    best = next(n for n in ("avx512", "avx2", "scalar") if SUPPORTED[n])
    assert f"kernels: {best}\n" in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["avx1024", "AVX2", "native"])
def test_unknown_set_is_an_error(value, lemonpc, model_path):
    r = generate(lemonpc, model_path, value)
    assert r.returncode != 0
    assert f"LEMONPC_KERNELS={value}: unknown kernel set" in r.stderr, r.stderr
    assert "kernels:" not in r.stderr  # failed at load, before anything ran
