#!/usr/bin/env bash
# Installs the Debian packages LeMoNPC builds and tests with (skips the
# apt-get run when all are present). Needs root (or sudo).
set -euo pipefail
pkgs=(build-essential clang libclang-rt-14-dev pkg-config cmake
      libpcre2-dev libsqlite3-dev libutf8proc-dev libjansson-dev libcmocka-dev
      libpng-dev zlib1g-dev libzip-dev libcurl4-openssl-dev libmicrohttpd-dev python3 python3-pip
      python3-venv python3-torch python3-pytest python3-numpy)  # Debian python: PyTorch oracle (tests/torch)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
