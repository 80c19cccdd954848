"""Prints the per-stage cost table of one or more `lemonpc build` folders
(wall time and peak RSS from their build.json) as markdown, for
BENCHMARKS.md:

    python3 bench/build_costs.py build/orlando/lora build/orlando/full
"""
import json
import pathlib
import sys

STAGES = ["check", "dataset", "train", "eval", "export"]


def main(dirs):
    print("| build | mode | " + " | ".join(f"{s} s / MB" for s in STAGES) + " | total s |")
    print("|---|---|" + "---|" * (len(STAGES) + 1))
    for d in dirs:
        doc = json.loads((pathlib.Path(d) / "build.json").read_text())
        st, cfg = doc["stages"], doc["settings"]
        cells, total = [], 0.0
        for s in STAGES:
            x = st.get(s)
            if not x or not x.get("done"):
                cells.append("--")
                continue
            total += x["wall_s"]
            cells.append(f"{x['wall_s']:.0f} / {x['peak_rss_mb']:.0f}")
        mode = cfg["mode"] + (f" r{cfg['lora_rank']}" if cfg["mode"] == "lora" else "")
        print(f"| {d} | {mode}, {cfg['persona']} persona | " + " | ".join(cells) + f" | {total:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["build/orlando/lora"])
