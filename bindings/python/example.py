#!/usr/bin/env python3
"""Orlando Marlo, knight of the Sunguard, answers a player through the
lemonpc Python binding; the reply streams to the terminal.

    python3 bindings/python/example.py MODEL.gguf ["Who are the Unblessed?" ...]
    python3 bindings/python/example.py MODEL.gguf --no-adapter

MODEL defaults to $LEMONPC_MODEL. With the fine-tuned adapter the persona
mode it was trained with ("short", stamped in the file) is used; without
it the base model gets the full condensed sheet. Each line is a turn of one
conversation; Ctrl-C cancels a reply (the conversation stays as it was)."""
import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lemonpc  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHEET = ROOT / "examples/luminara/characters/orlando.md"
ADAPTER = ROOT / "examples/luminara/npc/orlando.adapter.gguf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=os.environ.get("LEMONPC_MODEL"),
                    help="base model GGUF (default $LEMONPC_MODEL)")
    ap.add_argument("lines", nargs="*", default=["Who are the Unblessed?"],
                    help="what the player says, one turn each")
    ap.add_argument("--no-adapter", action="store_true", help="the base model alone")
    ap.add_argument("--greedy", action="store_true", help="temperature 0: the same reply each run")
    a = ap.parse_intermixed_args()
    if not a.model:
        ap.error("give MODEL or set LEMONPC_MODEL (scripts/fetch_model.sh prints its path)")

    sampling = lemonpc.Sampling(temperature=0 if a.greedy else None, max_tokens=120)
    try:
        with lemonpc.Model(a.model) as model, \
             lemonpc.Npc(model, SHEET, adapter=None if a.no_adapter else ADAPTER,
                         sampling=sampling) as orlando, \
             orlando.open(player="Mira, a young acolyte", place="the Great Cathedral") as conv:
            if orlando.warning:
                print(f"warning: {orlando.warning}", file=sys.stderr)
            for line in a.lines:
                print(f"Mira: {line}\n{orlando.name}: ", end="", flush=True)
                try:
                    _, info = conv.say(line, on_text=lambda s: print(s, end="", flush=True))
                except KeyboardInterrupt:
                    print(" [cancelled]")
                    continue
                print(f"\n  [{info.n_generated} tokens in {info.total_seconds:.2f} s, "
                      f"{info.n_reused} reused from the cache, stop: {info.stop.name.lower()}]\n")
    except lemonpc.LemonpcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
