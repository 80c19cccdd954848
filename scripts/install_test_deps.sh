#!/usr/bin/env bash
# What `make test` needs beyond the build: the Debian packages
# (install_deps.sh), the Python test oracles of tests/requirements.txt for
# the python3 on PATH (pip keeps built wheels in its cache, so a second run
# installs nothing: llama-cpp-python compiles llama.cpp once per machine),
# and the model. Quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
if ! python3 - <<'PY' 2>/dev/null
import importlib.metadata as md, re, sys
for line in open("tests/requirements.txt"):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, ver = re.sub(r"\[.*\]", "", line).partition("==")
    have = md.version(name.strip())   # raises (exit 1) when it is missing
    if ver and have != ver.strip():
        sys.exit(1)
PY
then
    echo "installing the Python test oracles (tests/requirements.txt; llama-cpp-python builds llama.cpp, minutes)" >&2
    python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
scripts/fetch_model.sh > /dev/null
