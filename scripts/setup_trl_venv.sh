#!/bin/sh
# Builds (once) a venv for the TRL column of bench/bench_train.py: the PEFT
# venv's stack (Debian's torch 1.13 + transformers 4.40 + peft 0.10 +
# accelerate 0.30, built by scripts/setup_peft_venv.sh into this venv's
# path) plus TRL 0.8.6, the last TRL of that transformers generation, and
# the `datasets` it imports. Optional: the bench runs without it. Idempotent:
# a venv whose stamp matches the pins is reused. Prints the venv's python.
set -eu
VENV="${LEMONPC_TRL_VENV:-${LEMONPC_CACHE:-$HOME/.cache/lemonpc}/trl-venv}"
PINS="datasets==2.19.1 pyarrow==16.1.0 pandas==2.2.2 tyro==0.8.4"
# trl without its dependencies: none of them is torch today, but a resolver
# that ever decides Debian's "1.13.0a0" misses a pin would pull a 2 GB CUDA
# torch; its real dependencies are all listed above or in the PEFT venv.
NODEPS="trl==0.8.6"
CHECK="import torch, transformers, peft, datasets, trl; from trl import SFTTrainer"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.trl-pins" 2>/dev/null)" = "$PINS $NODEPS" ] &&
   "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    echo "$VENV/bin/python"; exit 0
fi
# The base stack; it keeps its own stamp (.pins) and rebuilds the venv from
# scratch when its pins change, which also drops our stamp.
LEMONPC_PEFT_VENV="$VENV" "$(dirname "$0")/setup_peft_venv.sh" >/dev/null
TORCH=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$VENV/constraints.txt" $PINS >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps $NODEPS >&2
"$VENV/bin/python" -c "$CHECK" >&2
# Still Debian's torch (a PyPI torch would shadow it from the venv).
[ "$("$VENV/bin/python" -c "import torch; print(torch.__version__)")" = "$TORCH" ] || {
    echo "setup_trl_venv: torch changed from $TORCH: remove $VENV" >&2; exit 1; }
echo "$PINS $NODEPS" > "$VENV/.trl-pins"
echo "$VENV/bin/python"
