#!/bin/sh
# Builds (once) the AVX-512 llama.cpp oracle: a venv on the python3 of PATH
# (its numpy, pytest, gguf through system site packages) whose own
# llama-cpp-python is compiled for AVX-512 F/BW/DQ/VL + VNNI + BF16 on top of
# AVX2/FMA/F16C: what our avx512 kernel set is compared with
# (LEMONPC_KERNELS=avx512, tests/oracle). Never AMX (a VM may list it without
# granting it) and never -march=native (the build must not depend on the
# host beyond the flags named here).
#
# Only on hosts with those instructions: elsewhere it says so and exits 2
# (the library would die with SIGILL). The venv's directory is keyed by the
# version and the flags, so changing either builds a new one; a venv whose
# llama_cpp imports and reports AVX512 = 1 is reused. Compiling takes
# minutes on 2 cores (run under nice). Prints the venv's python on success.
set -eu
VERSION=$(sed -n 's/^llama-cpp-python\(\[.*\]\)\{0,1\}==//p' "$(dirname "$0")/../tests/requirements.txt")
ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
KEY=$(printf '%s %s' "$VERSION" "$ARGS" | sha256sum | cut -c1-12)
VENV="${LEMONPC_LLAMA_AVX512_VENV:-${LEMONPC_CACHE:-$HOME/.cache/lemonpc}/llama-avx512-$KEY}"

for f in avx512f avx512bw avx512dq avx512vl avx512_vnni avx512_bf16; do
    grep -qw "$f" /proc/cpuinfo 2>/dev/null || {
        echo "setup_llama_avx512_venv: this CPU lacks $f; no AVX-512 oracle here" >&2; exit 2; }
done

check='import llama_cpp, sys
info = llama_cpp.llama_print_system_info().decode()
f = {k.strip(): v.strip() for k, _, v in (x.partition("=") for x in info.replace("\n", "|").split("|")) if v}
want = ("AVX2", "FMA", "F16C", "AVX512", "AVX512_VNNI", "AVX512_BF16")
sys.exit(0 if all(f.get(k) == "1" for k in want)
         and not any(k.startswith("AMX") and v == "1" for k, v in f.items()) else 1)'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check" 2>/dev/null; then
    echo "$VENV/bin/python"; exit 0
fi
rm -rf "$VENV"
python3 -m venv --system-site-packages "$VENV" >&2
# --no-deps: its dependencies (numpy, jinja2, diskcache) are the system
# site's, the ones the AVX2 oracle runs with. --ignore-installed: the
# system site's AVX2 llama-cpp-python of the same version would satisfy pip.
# --no-cache-dir: pip's wheel cache does not key wheels by CMAKE_ARGS.
CMAKE_ARGS="$ARGS" FORCE_CMAKE=1 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --root-user-action=ignore --no-deps --no-cache-dir --ignore-installed "llama-cpp-python==$VERSION" >&2
"$VENV/bin/python" -c "$check" || {
    echo "setup_llama_avx512_venv: the build does not report AVX512 = 1" >&2; exit 1; }
echo "$VENV/bin/python"
