#!/usr/bin/env bash
# The main job on the bundled example: installs what is missing, fetches
# SmolLM2-135M-Instruct, builds, and has Orlando Marlo (examples/luminara)
# answer three questions twice: the base model with his sheet as its system
# turn, then the model with his fine-tuned adapter
# (examples/luminara/npc/orlando.adapter.gguf, made by `lemonpc build` from
# his 959 hand-written conversations, then trained on blind readers' verdicts;
# `ONLY=lora make orlando` rebuilds it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --demo
model=$(scripts/fetch_model.sh)
make -s -j2 build/lemonpc
sheet=examples/luminara/characters/orlando.md
adapter=examples/luminara/npc/orlando.adapter.gguf
./build/lemonpc check examples/luminara
# Greedy decoding, as the evaluation reads them; the same repetition penalty
# for both, so the base model is not judged by its loops alone.
gen=(--temp 0 --repeat-penalty 1.1 -n 120 --asker "a traveller" --place "the road to Aurelion")
ask() {
    printf '\n\033[1mPlayer:\033[0m %s\n' "$1"
    printf '\033[2mbase + sheet:\033[0m '
    ./build/lemonpc generate "$model" --character "$sheet" --persona full "${gen[@]}" -p "$1"
    printf '\n\033[1mOrlando (fine-tuned):\033[0m '
    # no --persona: the adapter carries the one it was trained with (short)
    ./build/lemonpc generate "$model" --character "$sheet" --adapter "$adapter" "${gen[@]}" -p "$1"
    echo
}
echo
echo "The same three questions to SmolLM2-135M with Orlando's whole sheet as its system turn, and"
echo "to SmolLM2-135M with his LoRA adapter (fine-tuned by \`lemonpc build\` on his curated dialogues)."
ask "What do you think of the Order of Solar Truth?"
ask "My cat keeps sleeping on my bread. What should I do?"
ask "Can you show me how to use a smartphone?"
echo
echo "Chat with him yourself:"
echo "  ./build/lemonpc chat $model --character $sheet --adapter $adapter"
echo "The evaluation behind him: examples/luminara/report/README.md (read blind: report/v9-best-of/, report/v11-veto/)"
