"""What the CLI says when a user gets something wrong: each message names
what was wrong and where. No model is loaded: every case
fails before that."""
import json
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LEMONPC = ROOT / os.environ.get("LEMONPC_BUILD", "build") / "lemonpc"
SHEETS = ROOT / "examples" / "luminara"


@pytest.fixture(scope="module", autouse=True)
def built():
    assert LEMONPC.exists(), f"{LEMONPC} missing: run `make` first"


def run(*args):
    return subprocess.run([str(LEMONPC), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_help_command_is_the_commands_help():
    general = run("--help").stdout
    for cmd in ("train", "import", "merge", "chat"):
        r = run("help", cmd)
        own = run(cmd, "--help")
        assert r.returncode == 0 and own.returncode == 0, r.stderr
        assert r.stdout == own.stdout and r.stdout != general, cmd
    r = run("help", "nosuch")
    assert r.returncode == 2 and "unknown command 'nosuch'" in r.stderr


def test_import_help_lists_the_readmes_card_formats():
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `lemonpc import"))
    formats = re.findall(r"V\d|JSON|PNG|CHARX", row.split("|")[2])
    assert {"V1", "V2", "V3", "JSON", "PNG", "CHARX"} <= set(formats), row
    help_text = run("import", "--help").stdout
    summary = next(line for line in run("--help").stdout.splitlines() if line.strip().startswith("import"))
    for f in formats:
        assert f in help_text, f"import --help lacks {f}"
        assert f in summary, f"lemonpc --help's import line lacks {f}"


def test_character_folder_names_a_sheet(tmp_path):
    model = tmp_path / "m.gguf"     # never opened: the folder is refused first
    for cmd in (["generate", "-p", "hi"], ["chat"]):
        r = run(*cmd, model, "--character", SHEETS)
        assert r.returncode != 0
        assert "read error" not in r.stderr
        assert f"{SHEETS}: is a folder" in r.stderr and "characters/" in r.stderr and ".md" in r.stderr, r.stderr


def test_missing_sheet_folder_is_named(tmp_path):
    missing = tmp_path / "nonexistent"
    r = run("datagen", missing, "--character", "x", "--out", tmp_path / "o",
            "--teacher-url", "http://127.0.0.1:9/v1")
    assert r.returncode == 1
    assert "no character sheets found" not in r.stderr
    assert f"{missing}:0: error: no such folder" in r.stderr, r.stderr
    r = run("datagen", ROOT / "README.md", "--character", "x", "--out", tmp_path / "o",
            "--teacher-url", "http://127.0.0.1:9/v1")
    assert r.returncode == 1 and "README.md:0: error: not a folder" in r.stderr, r.stderr


def test_config_folder_is_named(tmp_path):
    r = run("train", "--config", tmp_path)
    assert r.returncode != 0 and f"{tmp_path}: is a folder" in r.stderr, r.stderr


def test_json_line_cut_at_its_end_gives_its_column(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "Who are you?"},
                                    {"role": "assistant", "content": "A lemon seller."}]})
    cut = '{"messages":[{"role":"user","content":"a"}'      # 42 characters, cut after a value
    data = tmp_path / "d.jsonl"
    data.write_text(good + "\n" + cut + "\n" + good + "\n")
    r = run("filter", data, tmp_path / "out.jsonl", "--character", SHEETS / "characters" / "orlando.md")
    assert f"{data}:2: invalid JSON at column {len(cut)}:" in r.stderr, r.stderr
