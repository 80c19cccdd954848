"""`lemonpc review` driven end to end through a pseudo-terminal: accept,
reject, edit (EDITOR = a script that rewrites the file), quit, rerun resumes,
SIGTERM restores the terminal, --export holds exactly the accepted/edited
samples, and no terminal means a clear refusal."""
import json
import os
import pathlib
import pty
import select
import signal
import stat
import subprocess
import termios
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("LEMONPC_BIN", ROOT / os.environ.get("LEMONPC_BUILD", "build") / "lemonpc"))

QA = [
    ("Where were you born?", "In the house of Marlo, under the cathedral bells."),
    ("What do you fear?", "Only the silence of Solaris, friend."),
    ("Do you like wine?", "A cup at feasts, no more."),
    ("Who is the king?", "Aldric, fourth of his name."),
]


@pytest.fixture(scope="module", autouse=True)
def built():
    if not BIN.exists():
        pytest.skip(f"{BIN} not built (make)")


@pytest.fixture
def dataset(tmp_path):
    p = tmp_path / "set.jsonl"
    with open(p, "w") as f:
        for i, (q, a) in enumerate(QA):
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}],
                                "meta": {"kind": "in-world", "n": i}}) + "\n")
    return p


class Tui:
    def __init__(self, *args, env=None):
        self.master, self.slave = pty.openpty()
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([str(BIN), "review", *map(str, args)], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, start_new_session=True,
                                     env=env)
        self.buf = b""

    # Limits only: waits end as soon as the screen is there. Generous, so a
    # busy machine cannot turn a slow redraw into a failure.
    def wait_for(self, text, timeout=60):
        """Reads until text appears after the last screen clear; returns that screen."""
        want = text.encode()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.buf.rsplit(b"\x1b[2J", 1)[-1]
            # a screen is complete once its key help line is out
            if want in screen and b"q quit" in screen:
                return screen.decode(errors="replace")
            r, _, _ = select.select([self.master], [], [], 0.1)
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    break
        raise AssertionError(f"{text!r} not on screen; last output: {self.buf[-1500:]!r}")

    def key(self, ch):
        os.write(self.master, ch.encode())

    def finish(self, timeout=60):
        rc = self.proc.wait(timeout=timeout)
        try:
            while select.select([self.master], [], [], 0.1)[0]:
                self.buf += os.read(self.master, 65536)
        except OSError:
            pass
        after = termios.tcgetattr(self.slave)
        os.close(self.master)
        os.close(self.slave)
        return rc, after


def test_review_accept_reject_edit_resume_export(dataset, tmp_path):
    editor = tmp_path / "ed.sh"
    editor.write_text("#!/bin/sh\nprintf 'The writer rewrote this answer.\\n' > \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, EDITOR=str(editor))

    t = Tui(dataset, env=env)
    s = t.wait_for("sample 1/4")
    assert QA[0][0] in s and QA[0][1] in s and "undecided 4" in s
    t.key("a")
    s = t.wait_for("sample 2/4")
    assert "accepted 1" in s
    t.key("r")
    t.wait_for("sample 3/4")
    t.key("e")
    s = t.wait_for("sample 4/4")
    assert "accepted 2  rejected 1  edited 1" in s
    t.key("q")
    rc, after = t.finish()
    assert rc == 0
    assert after[3] == t.before[3], "local modes (echo, canonical) restored on quit"
    assert b"accepted 2, rejected 1, edited 1" in t.buf

    dec = dataset.with_name("set.decisions.jsonl")
    actions = [json.loads(l)["action"] for l in dec.read_text().splitlines()]
    assert actions == ["accept", "reject", "edit"]

    # rerun: resumes at the first undecided sample; SIGTERM restores the terminal
    t = Tui(dataset, env=env)
    s = t.wait_for("sample 4/4")
    assert QA[3][0] in s
    t.proc.send_signal(signal.SIGTERM)
    rc, after = t.finish()
    assert rc == 0
    assert after[3] == t.before[3], "local modes restored after SIGTERM"

    # export without a terminal: exactly the accepted and the edited sample
    out = tmp_path / "out.jsonl"
    p = subprocess.run([str(BIN), "review", str(dataset), "--export", str(out)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["meta"]["n"] for r in rows] == [0, 2]
    assert rows[0]["messages"][1]["content"] == QA[0][1]
    assert rows[0]["meta"]["review"] == "accepted"
    assert rows[1]["messages"][1]["content"] == "The writer rewrote this answer."
    assert rows[1]["messages"][0]["content"] == QA[2][0]
    assert rows[1]["meta"]["review"] == "edited"


def test_review_undo_promote_skip(dataset, tmp_path):
    t = Tui(dataset)
    t.wait_for("sample 1/4")
    t.key("p")
    t.wait_for("sample 2/4")
    t.key("s")
    t.wait_for("sample 3/4")
    t.key("u")  # undoes the promotion of sample 1
    s = t.wait_for("undone")
    assert "sample 1/4" in s and "promoted 0" in s
    t.key("r")
    s = t.wait_for("sample 2/4")
    assert "rejected 1" in s
    t.key("\x03")  # Ctrl-C quits like q
    rc, after = t.finish()
    assert rc == 0 and after[3] == t.before[3]
    prom = dataset.with_name("set.promoted.jsonl")
    assert prom.read_text() == ""  # promoted, then undone


def test_review_refuses_without_terminal(dataset):
    p = subprocess.run([str(BIN), "review", str(dataset)], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 1
    assert "needs a terminal" in p.stderr and "--export" in p.stderr
    assert not dataset.with_name("set.decisions.jsonl").exists()


def test_review_editor_failure_keeps_answer(dataset, tmp_path):
    t = Tui(dataset, "--editor", "false")
    t.wait_for("sample 1/4")
    t.key("e")
    s = t.wait_for("editor 'false' failed")
    assert "sample 1/4" in s and QA[0][1] in s
    t.key("q")
    rc, _ = t.finish()
    assert rc == 0
    assert dataset.with_name("set.decisions.jsonl").read_text() == ""
