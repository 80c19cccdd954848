"""`lemonpc filter` over a small dataset: the prototype's own failed
questions (from the LeMoNPC blog post) are rejected as restating the sheet,
clean samples pass with meta.filters_passed, rejected ones carry reasons,
and bad input is reported with its line."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("LEMONPC_BIN", ROOT / os.environ.get("LEMONPC_BUILD", "build") / "lemonpc"))

SHEET = """# Orlando Marlo

## Backstory

Born into the noble house of Marlo, Orlando grew up witnessing both the splendor and corruption
within Luminara's halls of power.

## Values

- Justice tempered with mercy
"""

# The blog post's examples of what went wrong: a summary of Orlando before the question.
ELENA = ("Orlando Marlo... a name well-known even amongst those who reside outside the realm of "
         "Luminara's grandeur. Tell me, what is your assessment of Seraphina's vision regarding the "
         "kingdom's future? Do you believe her words carry an inherent warning or merely political commentary?")
ISABELLA = ("Orlando Marlo. I hear whispers of your family, their long history intertwined with this land. "
            "But what drove them - specifically you - towards a life dedicated to upholding both Solaris and the crown?")


def sample(q, a, **meta):
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                       "meta": meta})


@pytest.fixture(scope="module", autouse=True)
def built():
    if not BIN.exists():
        pytest.skip(f"{BIN} not built (make)")


def test_filter_cli(tmp_path):
    (tmp_path / "orlando.md").write_text(SHEET)
    good = "The harvest was thin, friend, but we have seen leaner years."
    lines = [
        sample("What do you make of this year's harvest?", good, kind="in-world", id="a"),
        sample(ELENA, good + " Truly.", kind="in-world", id="b"),
        sample(ISABELLA, "My father's last words, and my faith.", kind="in-world", id="c"),
        sample("What is the internet?", "The internet is a network of machines, my lord.", kind="protective", id="d"),
        sample("What do you make of this year's harvest?", "Another answer, about rain and rye.", id="e"),
        "{not json",
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    p = subprocess.run([str(BIN), "filter", "in.jsonl", "out.jsonl", "--character", "orlando.md",
                        "--rejected", "rej.jsonl", "--report"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert "1 of 5 samples passed (1 unreadable lines skipped)" in p.stdout
    assert "in.jsonl:6:" in p.stderr
    out = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["meta"]["id"] for o in out] == ["a"]
    assert "restates-sheet" in out[0]["meta"]["filters_passed"]
    assert "near-duplicate" in out[0]["meta"]["filters_passed"]
    rej = {json.loads(l)["meta"]["id"]: json.loads(l)["meta"] for l in (tmp_path / "rej.jsonl").read_text().splitlines()}
    assert set(rej) == {"b", "c", "d", "e"}
    for k in "bc":
        assert "restates-sheet" in rej[k]["filters_failed"], rej[k]
        assert any("opens with a summary of the character: 'Orlando Marlo" in n for n in rej[k]["filter_notes"])
    assert rej["d"]["filters_failed"] == ["modern-knowledge"]
    assert rej["e"]["filter_notes"] == ["near-duplicate: question is an exact duplicate of accepted sample 0"]


def test_filter_cli_errors(tmp_path):
    (tmp_path / "in.jsonl").write_text(sample("A question here?", "An answer there.") + "\n")
    p = subprocess.run([str(BIN), "filter", "in.jsonl", "out.jsonl", "--character", "missing.md"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "missing.md" in p.stderr
    assert not (tmp_path / "out.jsonl").exists()
    p = subprocess.run([str(BIN), "filter", "in.jsonl"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "usage" in p.stderr
