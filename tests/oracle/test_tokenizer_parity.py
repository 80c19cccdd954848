"""Tokenizer parity: our byte-level BPE against llama.cpp's on the real
SmolLM2 GGUF, over tests/data/tokenizer_corpus.txt (one case per line;
escapes \\n \\t \\r \\\\ as described in tests/data/make_tokenizer_corpus.py).

Our side runs through build/tools/lm_tokenize_lines in one process for
all lines (cases are sent hex-encoded, so any bytes fit on a line)."""
import subprocess

import pytest

import llama_cpp

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(line, lineno):
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            nxt = line[i + 1] if i + 1 < len(line) else ""
            if nxt not in ESCAPES:
                raise ValueError(f"tokenizer_corpus.txt:{lineno}: bad escape '\\{nxt}'")
            out.append(ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


@pytest.fixture(scope="module")
def corpus(root):
    raw = (root / "tests" / "data" / "tokenizer_corpus.txt").read_bytes().decode("utf-8")
    # Split on LF only: str.splitlines() would also cut at U+0085, U+2028...
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [unescape(s, i + 1).encode("utf-8") for i, s in enumerate(lines)]


@pytest.fixture(scope="module")
def llama(model_path):
    return llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)


def ours(tool, model_path, cases, special):
    args = [str(tool("lm_tokenize_lines")), str(model_path)]
    if not special:
        args.append("--no-special")
    stdin = "".join(c.hex() + "\n" for c in cases)
    res = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = res.stdout.split("\n")[:-1]
    assert len(out) == len(cases), f"{len(out)} result lines for {len(cases)} cases"
    result = []
    for row in out:
        ids, dec = row.split("\t")
        result.append(([int(x) for x in ids.split()], bytes.fromhex(dec)))
    return result


def compare(llama, got, cases, special):
    bad = []
    for i, (case, (ids, _)) in enumerate(zip(cases, got)):
        want = llama.tokenize(case, add_bos=False, special=special)
        if ids != want:
            bad.append((i + 1, case, ids, want))
    return bad


@pytest.mark.parametrize("special", [True, False], ids=["special", "no-special"])
def test_corpus_matches_llama_cpp(tool, model_path, llama, corpus, special):
    assert len(corpus) >= 2000
    got = ours(tool, model_path, corpus, special)
    bad = compare(llama, got, corpus, special)
    print(f"\ntokenizer parity (special={special}): {len(corpus) - len(bad)}/{len(corpus)} lines match")
    detail = "\n".join(f"line {n}: {c!r}\n  ours  {o}\n  llama {w}" for n, c, o, w in bad[:10])
    assert not bad, f"{len(bad)} of {len(corpus)} lines differ:\n{detail}"


@pytest.mark.parametrize("special", [True, False], ids=["special", "no-special"])
def test_corpus_round_trips(tool, model_path, corpus, special):
    got = ours(tool, model_path, corpus, special)
    bad = [(i + 1, c, d) for i, (c, (_, d)) in enumerate(zip(corpus, got)) if c != d]
    detail = "\n".join(f"line {n}: {c!r} -> {d!r}" for n, c, d in bad[:10])
    assert not bad, f"{len(bad)} lines do not round trip:\n{detail}"


# Invalid UTF-8 and bytes without a token: llama.cpp turns each byte that does
# not start a decodable sequence into U+FFFD and drops bytes that have no
# token; we must agree. (Overlong forms and surrogates are a documented
# difference, see docs/TOKENIZER.md, and are not listed here.)
ODD_BYTES = [
    b"\xff", b"abc\x80def", b"\xe2\x82", b"\xe2\x82 x", b"\xc3", b"caf\xc3\xa9\xff!",
    b"\xf0\x9f\x98", b"\xf0\x9f\x98 end", b"\x80\x80\x80", b"a\xfe\xfdb",
    b"a\x04b", b"\x1d", b"x\x06\x13\x14\x16y", b"\x00", b"nul\x00inside", b"\x7f\x01\x02",
    b"<|im_start|>\xff<|im_end|>", b"9\xff9", b"  \xc3\xa8\xc3",
]


@pytest.mark.parametrize("special", [True, False], ids=["special", "no-special"])
def test_odd_bytes_match_llama_cpp(tool, model_path, llama, special):
    got = ours(tool, model_path, ODD_BYTES, special)
    bad = compare(llama, got, ODD_BYTES, special)
    detail = "\n".join(f"{c!r}: ours {o} llama {w}" for _, c, o, w in bad)
    assert not bad, detail


def test_cli_ids_match_llama_cpp(lemonpc, model_path, llama):
    text = "<|im_start|>user\nCiao, l'amico! 1234 👍🏽<|im_end|>\n"
    res = subprocess.run([str(lemonpc), "tokenize", str(model_path), text, "--ids"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert [int(x) for x in res.stdout.split()] == llama.tokenize(text.encode(), add_bos=False, special=True)
    res = subprocess.run([str(lemonpc), "tokenize", str(model_path), text, "--ids", "--no-special"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert [int(x) for x in res.stdout.split()] == llama.tokenize(text.encode(), add_bos=False, special=False)


def test_chat_template_matches_jinja(tool, model_path, llama):
    """Our ChatML rendering against the GGUF's own Jinja template."""
    import jinja2
    tmpl = llama.metadata["tokenizer.chat_template"]
    env = jinja2.Environment()
    convs = [
        ([("user", "Hi there")], True),
        ([("user", "Hi there")], False),
        ([("system", "You are Aldric."), ("user", "Who are you?")], True),
        ([("user", "a"), ("assistant", "b"), ("user", "c")], True),
        ([], True),
    ]
    for msgs, gen in convs:
        want = env.from_string(tmpl).render(
            messages=[{"role": r, "content": c} for r, c in msgs], add_generation_prompt=gen)
        args = [str(tool("lm_chat_render")), str(model_path)] + (["--gen"] if gen else [])
        for r, c in msgs:
            args += [r, c]
        res = subprocess.run(args, capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.decode() == want, (msgs, gen)


def _lenient_in_llama_cpp(b):
    """True if b holds a sequence llama.cpp decodes leniently and we treat as
    invalid (overlong, surrogate, above U+10FFFF): the documented difference."""
    i = 0
    while i < len(b):
        c = b[i]
        n = 2 if 0xC0 <= c < 0xE0 else 3 if 0xE0 <= c < 0xF0 else 4 if 0xF0 <= c < 0xF8 else 0
        if n and i + n <= len(b) and all(0x80 <= x < 0xC0 for x in b[i + 1:i + n]):
            if (c in (0xC0, 0xC1) or (c == 0xE0 and b[i + 1] < 0xA0) or (c == 0xED and b[i + 1] >= 0xA0)
                    or (c == 0xF0 and b[i + 1] < 0x90) or (c == 0xF4 and b[i + 1] >= 0x90) or c >= 0xF5):
                return True
            i += n
        else:
            i += 1
    return False


def _random_cases(seed, n):
    import random
    rng = random.Random(seed)
    ascii_bits = list(" \t\n  abcxyz'sllve0123456789.,!?-_()[]{}<>|") + [
        "<|im_start|>", "<|im_end|>", "\u00a0", "\u0085", "\u3000", "\u2028"]
    cases = []
    while len(cases) < n:
        if rng.random() < 0.5:
            # Random code points (letters, marks, numbers of many scripts).
            parts = []
            for _ in range(rng.randint(1, 12)):
                k = rng.random()
                cp = (None if k < 0.5 else rng.randint(0x80, 0x2FFF) if k < 0.8
                      else rng.randint(0x3000, 0xFFFD) if k < 0.9 else rng.randint(0x10000, 0x3134F))
                parts.append(rng.choice(ascii_bits) if cp is None else chr(cp))
            try:
                cases.append("".join(parts).encode())
            except UnicodeEncodeError:  # lone surrogates
                pass
        else:
            # Random bytes, biased towards UTF-8 lead and continuation bytes.
            b = bytes(rng.choice([rng.randint(0, 255), rng.choice(b"ab '1\n"), rng.randint(0x80, 0xBF),
                                  rng.randint(0xC2, 0xF4)]) for _ in range(rng.randint(1, 10)))
            if not _lenient_in_llama_cpp(b):
                cases.append(b)
    return cases


@pytest.mark.parametrize("special", [True, False], ids=["special", "no-special"])
def test_random_strings_match_llama_cpp(tool, model_path, llama, special):
    cases = _random_cases(20241126, 6000)
    got = ours(tool, model_path, cases, special)
    bad = compare(llama, got, cases, special)
    detail = "\n".join(f"{c!r}: ours {o} llama {w}" for _, c, o, w in bad[:10])
    assert not bad, f"{len(bad)} of {len(cases)} random cases differ:\n{detail}"
