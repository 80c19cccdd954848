"""Our repacked Q4_0 matmul against llama.cpp's, bit for bit.

llama.cpp repacks Q4_0 weights 8 rows at a time on AVX2 machines and
multiplies them with ggml_gemm_q4_0_8x8_q8_0 (groups of 4 activation rows,
quantized by ggml_quantize_mat_q8_0_4x8) and ggml_gemv_q4_0_8x8_q8_0 (the
rows left over, quantized by quantize_row_q8_0). Those functions are
exported by the libggml-cpu.so that llama-cpp-python ships; this test calls
them through ctypes on random weights and activations, the way
forward_mul_mat in ggml-cpu/repack.cpp does, and requires our
lm_q4x8_matmul tool to give the same floats exactly. Skipped where the
library or its AVX2 path is not there (the symbols are internal to ggml).
"""
import ctypes
import os
import pathlib
import subprocess

import numpy as np
import pytest

import llama_cpp

QK = 32
BLOCK_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


def load_ggml():
    lib = pathlib.Path(llama_cpp.__file__).parent / "lib"
    try:
        ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
        for name in ("ggml_cpu_init", "ggml_quantize_mat_q8_0_4x8", "quantize_row_q8_0",
                     "ggml_gemm_q4_0_8x8_q8_0", "ggml_gemv_q4_0_8x8_q8_0", "ggml_cpu_has_avx2"):
            getattr(cpu, name)
    except (OSError, AttributeError) as e:
        pytest.fail(f"llama.cpp's repacked Q4_0 kernels are not reachable: {e}")
    if not cpu.ggml_cpu_has_avx2():
        pytest.fail("llama.cpp was built without AVX2 (scripts/install_test_deps.sh builds it with): "
                    "it does not repack Q4_0 8x8 here")
    cpu.ggml_cpu_init()  # fills the f16 table its gemv reads scales through
    return cpu


def repack_like_llamacpp(w, n, k):
    """block_q4_0x8 as make_block_q4_0x8 builds it: 8 f16 scales, then the
    16-byte quant arrays of the 8 rows in 8-byte chunks, nibbles xor 8."""
    nb = k // QK
    blocks = w.reshape(n // 8, 8, nb)
    out = bytearray()
    for g in range(n // 8):
        for b in range(nb):
            rows = blocks[g, :, b]
            out += rows["d"].astype("<f2").tobytes()
            qs = rows["qs"] ^ 0x88
            for i in range(16):
                out += qs[i % 8, (i // 8) * 8:(i // 8) * 8 + 8].tobytes()
    return bytes(out)


def llamacpp_matmul(cpu, w, x, m, n, k):
    vx = ctypes.create_string_buffer(repack_like_llamacpp(w, n, k))
    nb = k // QK
    row_q8 = nb * 34
    xq = ctypes.create_string_buffer(row_q8 * m)
    xc = np.ascontiguousarray(x, dtype=np.float32)
    fptr = ctypes.POINTER(ctypes.c_float)
    m4 = m - m % 4
    for r in range(0, m4, 4):
        cpu.ggml_quantize_mat_q8_0_4x8(xc[r:].ctypes.data_as(fptr),
                                       ctypes.byref(xq, r * row_q8), ctypes.c_int64(k))
    for r in range(m4, m):
        cpu.quantize_row_q8_0(xc[r:].ctypes.data_as(fptr), ctypes.byref(xq, r * row_q8),
                              ctypes.c_int64(k))
    y = np.zeros((m, n), dtype=np.float32)
    yp = y.ctypes.data_as(fptr)
    if m4:
        cpu.ggml_gemm_q4_0_8x8_q8_0(ctypes.c_int(k), yp, ctypes.c_size_t(n), vx, xq,
                                    ctypes.c_int(m4), ctypes.c_int(n))
    for r in range(m4, m):
        cpu.ggml_gemv_q4_0_8x8_q8_0(ctypes.c_int(k), y[r:].ctypes.data_as(fptr),
                                    ctypes.c_size_t(n), vx, ctypes.byref(xq, r * row_q8),
                                    ctypes.c_int(1), ctypes.c_int(n))
    return y


@pytest.mark.parametrize("m,n,k", [(1, 64, 576), (3, 8, 64), (37, 192, 576), (21, 576, 1536)])
def test_repacked_q4_0_matches_llamacpp(tool, tmp_path, m, n, k):
    if os.environ.get("LEMONPC_KERNELS") == "scalar":
        pytest.skip("the scalar set rounds each product before adding it (no fma): "
                    "only the SIMD sets match llama.cpp's AVX2 kernels bit for bit")
    cpu = load_ggml()
    rng = np.random.default_rng(m * 1000 + n + k)
    w = np.zeros(n * (k // QK), dtype=BLOCK_Q4_0)
    w["d"] = rng.uniform(0.002, 0.05, size=w.shape).astype(np.float16)
    w["qs"] = rng.integers(0, 256, size=(w.shape[0], 16), dtype=np.uint8)
    # per-block magnitudes that vary, and outliers, as activations have
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 4.0, size=(m, k // QK)).repeat(QK, 1))
    x = x.astype(np.float32)
    x[:, 5] *= 20
    want = llamacpp_matmul(cpu, w, x, m, n, k)
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    (tmp_path / "x.bin").write_bytes(x.tobytes())
    for threads in (1, 2):
        out = tmp_path / f"y{threads}.bin"
        subprocess.run([str(tool("lm_q4x8_matmul")), str(tmp_path / "w.bin"),
                        str(tmp_path / "x.bin"), str(m), str(n), str(k), str(threads), str(out)],
                       check=True)
        got = np.fromfile(out, dtype=np.float32).reshape(m, n)
        diff = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
        assert diff.size == 0, (f"{diff.size} of {m * n} outputs differ from llama.cpp's, first "
                                f"at {divmod(int(diff[0]), n)}: {got.flat[diff[0]]!r} vs "
                                f"{want.flat[diff[0]]!r}")
