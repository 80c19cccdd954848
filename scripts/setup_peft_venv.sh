#!/bin/sh
# Builds (once) a venv for the PEFT interop test: Debian's torch 1.13
# (system site packages of /usr/bin/python3) + transformers/peft/safetensors
# versions whose requirements accept torch 1.13. Idempotent: a venv whose
# stamp matches the pins is reused. Prints the venv's python on success.
set -eu
VENV="${LEMONPC_PEFT_VENV:-${LEMONPC_CACHE:-$HOME/.cache/lemonpc}/peft-venv}"
PINS="transformers==4.40.2 peft==0.10.0 safetensors==0.4.3 accelerate==0.30.1 tokenizers==0.19.1 huggingface-hub==0.23.4"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$PINS" ] &&
   "$VENV/bin/python" -c "import torch, transformers, peft, safetensors" 2>/dev/null; then
    echo "$VENV/bin/python"; exit 0
fi
/usr/bin/python3 -c "import torch" >/dev/null 2>&1 || {
    echo "setup_peft_venv: /usr/bin/python3 has no torch (apt-get install python3-torch)" >&2; exit 1; }
rm -rf "$VENV"
/usr/bin/python3 -m venv --system-site-packages "$VENV" >&2
# numpy stays Debian's (torch 1.13 was built against it): constrain it.
NP=$(/usr/bin/python3 -c "import numpy; print(numpy.__version__)")
echo "numpy==$NP" > "$VENV/constraints.txt"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$VENV/constraints.txt" $PINS >&2
"$VENV/bin/python" -c "import torch, transformers, peft, safetensors" >&2
echo "$PINS" > "$VENV/.pins"
echo "$VENV/bin/python"
