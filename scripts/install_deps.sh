#!/usr/bin/env bash
# Installs the Debian packages LeMoNPC needs; no apt-get run when all are
# there. Needs root (or sudo).
#   scripts/install_deps.sh          what `make test` needs: the build, the C
#                                    tests, fuzzing, the Python oracles' base
#   scripts/install_deps.sh --demo   what `make demo` runs: a C compiler, the
#                                    libraries lemonpc links, python3 and pip
#                                    (scripts/fetch_model.sh)
#   scripts/install_deps.sh --bench  the test set plus the training benchmarks'
#                                    baseline BLAS (OpenBLAS: PyTorch on Debian's
#                                    reference BLAS is ~9x slower, no fair baseline)
# apt's own output (hundreds of lines) goes to a log that is shown only when
# apt fails.
set -euo pipefail
demo=(build-essential libpcre2-dev libsqlite3-dev libjansson-dev libpng-dev libzip-dev
      libcurl4-openssl-dev libmicrohttpd-dev python3 python3-pip)
# Debian's python: the PyTorch oracle (tests/torch)
test=(clang libclang-rt-14-dev pkg-config cmake libcmocka-dev python3-venv python3-torch
      python3-pytest python3-numpy)
bench=(libopenblas0-openmp)
case "${1:-}" in
    --demo) pkgs=("${demo[@]}") ;;
    --bench) pkgs=("${demo[@]}" "${test[@]}" "${bench[@]}") ;;
    "") pkgs=("${demo[@]}" "${test[@]}") ;;
    *) echo "usage: scripts/install_deps.sh [--demo|--bench]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
log=$(mktemp "${TMPDIR:-/tmp}/lemonpc-apt.XXXXXX")
echo "installing ${#missing[@]} Debian packages (${missing[*]}); apt's log: $log" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install_deps: apt-get failed (the whole log: $log)" >&2
    exit 1
fi
rm -f "$log"
