#!/usr/bin/env bash
# The main job on the bundled example: installs what is missing, fetches
# SmolLM2-135M-Instruct, builds, and has Orlando Marlo (examples/luminara)
# answer a player.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
model=$(scripts/fetch_model.sh)
make -s -j2 build/lemonpc
sheet=examples/luminara/characters/orlando.md
./build/lemonpc check examples/luminara
ask() {
    printf '\n\033[1mPlayer:\033[0m %s\n\033[1mOrlando:\033[0m ' "$1"
    ./build/lemonpc generate "$model" --character "$sheet" --seed 7 -n 120 --repeat-penalty 1.15 -p "$1"
    echo
}
echo
echo "SmolLM2-135M, not fine-tuned yet, answering as Orlando from his sheet alone (the persona"
echo "becomes the system message). Fine-tuning on his dataset (lemonpc datagen, lemonpc train)"
echo "is what teaches it to stay in character, e.g. on the last question."
ask "Who are you, and what do you want for Luminara?"
ask "What do you think of the Order of Solar Truth?"
ask "Can you show me how to use a smartphone?"
echo
echo "Chat with him yourself: ./build/lemonpc chat $model --character $sheet"
