"""The example game (examples/tavern): two NPCs of the Luminara world on one
base model, a world event only one of them witnesses, and a world file that
keeps everything across a restart. Built with `make tavern` against the
runtime archive and include/lemonpc.h alone, as a game would link."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = ROOT / os.environ.get("LEMONPC_BUILD", "build")


@pytest.fixture(scope="module")
def tavern():
    subprocess.run(["make", "-s", "--no-print-directory", "tavern"], cwd=ROOT, check=True)
    return BUILD / "examples" / "tavern"


def play(tavern, model_path, world, script):
    r = subprocess.run([str(tavern), str(model_path), "--world-file", str(world)], cwd=ROOT,
                       input="".join(line + "\n" for line in script), capture_output=True,
                       text=True, timeout=600, env={**os.environ, "TAVERN_GREEDY": "1"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def memory_of(out, name):
    """The lines /memory printed for the NPC named name (the last listing)."""
    block = out.split(f"{name} remembers:\n")[-1]
    return [l for l in block.splitlines() if l.startswith("   - ")]


def test_tavern_remembers_across_runs(tavern, model_path, tmp_path):
    world = tmp_path / "bell.world"
    out1 = play(tavern, model_path, world, [
        "I am Wren, and I carry sealed letters for the royal archive.",
        "/rider",
        "/go elena",
        "Good evening. Is there any news?",
        "/quit"])
    # a reply from each NPC, by name, and the event told in the room
    assert "Orlando Marlo: " in out1 and "Elena Solwind: " in out1
    assert "Orlando Marlo hears it" in out1
    for reply in [l for l in out1.splitlines() if l.startswith(("Orlando Marlo: ", "Elena Solwind: "))]:
        assert len(reply.split(": ", 1)[1].strip()) > 0, reply

    # a new process: everything comes back from the world file
    out2 = play(tavern, model_path, world, [
        "/memory",
        "/go elena",
        "/memory",
        "The bell tower of Saint Aurel burned down last night.",
        "/memory"])
    orlando = memory_of(out2.split("You walk over to Elena")[0], "Orlando Marlo")
    assert any("sealed letters for the royal archive" in l for l in orlando), orlando
    assert any("[event]" in l and "bell tower" in l for l in orlando), orlando
    elena_before = memory_of(out2.split("The bell tower of Saint Aurel burned")[0], "Elena Solwind")
    assert any("Is there any news?" in l for l in elena_before), elena_before
    assert not any("sealed letters" in l for l in elena_before), elena_before   # told Orlando only
    assert not any("[event]" in l for l in elena_before), elena_before          # she was outside
    elena_after = memory_of(out2, "Elena Solwind")
    assert any("bell tower of Saint Aurel burned" in l for l in elena_after), elena_after
