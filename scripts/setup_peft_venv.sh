#!/bin/sh
# Builds (once) a venv for the PEFT interop test: Debian's torch 1.13
# (system site packages of /usr/bin/python3) + transformers/peft/safetensors
# versions whose requirements accept torch 1.13. Idempotent: a venv whose
# stamp matches the pins is reused. Prints the venv's python on success.
set -eu
VENV="${LEMONPC_PEFT_VENV:-${LEMONPC_CACHE:-$HOME/.cache/lemonpc}/peft-venv}"
PINS="transformers==4.40.2 gguf==0.19.0 safetensors==0.4.3 tokenizers==0.19.1 huggingface-hub==0.23.4 psutil pyyaml tqdm packaging"
# peft and accelerate without their dependencies: their torch>=1.13 pin does
# not accept Debian's "1.13.0a0" and pip would pull a 2 GB CUDA torch.
NODEPS="peft==0.10.0 accelerate==0.30.1"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.pins" 2>/dev/null)" = "$PINS $NODEPS" ] &&
   "$VENV/bin/python" -c "import torch, transformers, peft, safetensors, gguf" 2>/dev/null; then
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
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps $NODEPS >&2
"$VENV/bin/python" -c "import torch, transformers, peft, safetensors, gguf" >&2
echo "$PINS $NODEPS" > "$VENV/.pins"
echo "$VENV/bin/python"
