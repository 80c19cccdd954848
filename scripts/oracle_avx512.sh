#!/bin/sh
# The parity tests for the avx512 kernel set, against llama.cpp built for
# AVX-512 (scripts/setup_llama_avx512_venv.sh: built once, minutes), bit for
# bit as the avx2 set is against the AVX2 build. Where this CPU has no
# AVX-512 (VNNI, BF16) it says so and succeeds: CI hosts may be AVX2-only,
# and the avx512 set is then never picked there.
set -eu
cd "$(dirname "$0")/.."
rc=0
py=$(CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" nice -n 10 \
     scripts/setup_llama_avx512_venv.sh) || rc=$?
if [ "$rc" = 2 ]; then
    echo "oracle: this CPU has no AVX-512 (F/BW/DQ/VL/VNNI/BF16): the avx512 kernel set is not tested here" >&2
    exit 0
fi
[ "$rc" = 0 ] || exit "$rc"
LEMONPC_KERNELS=avx512 exec "$py" -m pytest -q tests/oracle/test_logits_parity.py \
    tests/oracle/test_trace_llamacpp.py tests/oracle/test_q4_0x8_llamacpp.py tests/oracle/test_kv_f16.py \
    tests/oracle/test_batch_vs_single.py "$@"
