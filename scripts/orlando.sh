#!/usr/bin/env bash
# Rebuilds Orlando from the committed dataset and regenerates the report in
# examples/luminara/report/: the NPCs below answer the held-out questions
# (examples/luminara/eval/orlando.jsonl) and are compared side by side.
#
#   base + full persona   SmolLM2 as shipped, the sheet as its system turn
#   lora                  `lemonpc build` defaults: LoRA r16, short persona (the shipped adapter)
#   full                  the same data, all weights fine-tuned
#   lora, no persona      the seed's second mode: no persona in training or use
#
# Each build is resumable (run the script again after a kill). On 2 cores
# the whole run takes about two hours; ONLY=lora builds just the shipped one.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
model=$(scripts/fetch_model.sh)
make -s -j2 build/lemonpc
out=${OUT:-build/orlando}
mkdir -p "$out"
lp=./build/lemonpc
sheet=examples/luminara/characters/orlando.md
q=examples/luminara/eval/orlando.jsonl
t0=$(date +%s)

$lp build examples/luminara --character orlando --model "$model" --out "$out/lora"
cp "$out/lora/export/orlando.adapter.gguf" examples/luminara/npc/orlando.adapter.gguf
if [ "${ONLY:-}" = lora ]; then
    echo "rebuilt examples/luminara/npc/orlando.adapter.gguf in $(( $(date +%s) - t0 )) s"
    exit 0
fi
$lp build examples/luminara --character orlando --model "$model" --out "$out/full" --full --epochs 2
$lp build examples/luminara --character orlando --model "$model" --out "$out/lora-nopersona" --persona none
$lp eval "$model" "$q" --out "$out/base-full" --character "$sheet" --persona full \
    --label "base + full persona"

$lp eval --compare "$out/base-full" "$out/lora/eval/heldout" "$out/full/eval/heldout" \
    "$out/lora-nopersona/eval/heldout" --out examples/luminara/report
cp "$out/lora/eval/test/report.md" examples/luminara/report/lora-test-split.md
cp "$out/full/eval/test/report.md" examples/luminara/report/full-test-split.md
for b in lora full lora-nopersona; do cp "$out/$b/build.json" "examples/luminara/report/build-$b.json"; done
echo "examples/luminara/report/compare.md regenerated in $(( $(date +%s) - t0 )) s"
