#!/usr/bin/env bash
# What `make test` needs beyond the build: the Debian packages
# (install_deps.sh), the Python test oracles of tests/requirements.txt for
# the python3 on PATH, and the model. Quiet when everything is already there.
#
# llama-cpp-python compiles llama.cpp on install. It is built for the
# instruction set of our avx2 kernel set (AVX2 + FMA + F16C; no AVX-512, no
# AMX, never -march=native), so the parity tests (LEMONPC_KERNELS=avx2) are
# bit-exact on every x86 host and nothing dies with SIGILL on a VM that
# lists AMX without granting it. The avx512 set has its own oracle, built in
# its own venv on hosts with AVX-512 (scripts/setup_llama_avx512_venv.sh,
# run by scripts/oracle_avx512.sh).
# A llama_cpp built otherwise (pip's default is native) is rebuilt; pip's
# wheel cache is not used for it, since it does not key wheels by flags.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"

# 0: all there; 1: a package missing or of another version; 2: llama_cpp built for another ISA
state=0
python3 - <<'PY' 2>/dev/null || state=$?
import importlib.metadata as md, re, sys
for line in open("tests/requirements.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, ver = re.sub(r"\[.*\]", "", line).partition("==")
    try:
        have = md.version(name.strip())
    except md.PackageNotFoundError:
        sys.exit(1)
    if ver and have != ver.strip():
        sys.exit(1)
import llama_cpp
info = llama_cpp.llama_print_system_info().decode()
flags = {k.strip(): v.strip() for k, _, v in (f.partition("=") for f in info.replace("\n", "|").split("|")) if v}
if flags.get("AVX2") != "1" or any(k.startswith(("AVX512", "AMX")) and v == "1" for k, v in flags.items()):
    sys.exit(2)
PY
if [ "$state" != 0 ]; then
    echo "installing the Python test oracles (tests/requirements.txt; llama-cpp-python compiles llama.cpp for AVX2, minutes)" >&2
    pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
    grep -v '^llama-cpp-python' tests/requirements.txt > "${TMPDIR:-/tmp}/lemonpc-reqs.txt"
    "${pip[@]}" -r "${TMPDIR:-/tmp}/lemonpc-reqs.txt"
    llama=$(grep '^llama-cpp-python' tests/requirements.txt)
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" FORCE_CMAKE=1 "${pip[@]}" --force-reinstall --no-deps --no-cache-dir "$llama"
    # its dependencies (server extras) without touching the build above
    "${pip[@]}" "$llama"
fi
scripts/fetch_model.sh > /dev/null
