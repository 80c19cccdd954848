"""The lorebook block lemonpc_say puts before a player's line, worked out here
from the sheets' markdown (docs/SHEETS.md) and llama.cpp's tokenizer rather
than by our parser and tokenizer: what training data, eval questions and
preference pairs are checked against."""
import functools
import pathlib
import re


def lore_entries(*sheets):
    """(keys, secondary keys, constant, text) of each enabled `## Lore` entry of
    the sheets, read here from the markdown (docs/SHEETS.md), not by our
    parser. Secondary keys count only with `Selective: yes`."""
    out = []
    for path in sheets:
        text = pathlib.Path(path).read_text()
        if "\n## Lore" not in text:
            continue
        body = text.split("\n## Lore", 1)[1].split("\n## ", 1)[0]
        for chunk in body.split("\n### ")[1:]:
            head, _, rest = chunk.partition("\n")
            keys = [k.strip() for k in head.split(",") if k.strip()]
            first, _, after = rest.strip().partition("\n\n")
            lines = first.splitlines()
            flags = dict(l.split(":", 1) for l in lines if ":" in l) if after and all(
                l.split(":")[0] in ("Secondary keys", "Enabled", "Constant", "Selective", "Insertion order",
                                    "Comment") for l in lines) else {}
            txt = after.strip() if flags else rest.strip()
            flag = {k.strip(): v.strip() for k, v in flags.items()}
            if flag.get("Enabled") == "no":
                continue
            sec = [k.strip() for k in flag.get("Secondary keys", "").split(",") if k.strip()]
            out.append((keys, sec if flag.get("Selective") == "yes" else [], flag.get("Constant") == "yes", txt))
    return out


@functools.lru_cache(maxsize=None)
def key_pattern(key):
    """A key as a whole word, any case (ASCII), as the runtime looks for it."""
    return re.compile(r"(?<![0-9A-Za-z\x80-\U0010ffff])" + re.escape(key.strip()) +
                      r"(?![0-9A-Za-z\x80-\U0010ffff])", re.I | re.A)


def mentions(key, texts):
    return any(key_pattern(key).search(t) for t in texts)


def check_block(block, want, ntok):
    """A lorebook block holds the texts of the entries that apply, except ones
    that did not fit the 256-token budget (counted here by llama.cpp's
    tokenizer, ntok): an entry left out must not fit beside what the block
    holds."""
    assert block.startswith("Things you know:\n- "), block
    lines = block.split("\n")[1:]
    assert all(l.startswith("- ") and l[2:] in want for l in lines), (lines, want)
    assert ntok(block) <= 256 + 2
    for t in want:
        if "- " + t not in lines:
            assert ntok(block) + ntok("- " + t + "\n") > 256 - 2, (t, block)


def check_lore_blocks(conversations, entries, ntok):
    """Each conversation has a lorebook block just before its last user turn
    exactly when an entry's keys are in that turn or the 4 before it (and,
    for an entry with secondary keys, one of those too). Returns how many
    have one."""
    n = 0
    for c in conversations:
        ms = c["messages"]
        last = max(i for i, m in enumerate(ms) if m["role"] == "user")
        turns = [m["content"] for m in ms[:last] if m["role"] != "system"]
        scan = turns[-4:] + [ms[last]["content"]]
        want = [t for keys, sec, const, t in entries
                if const or (any(mentions(k, scan) for k in keys) and (not sec or any(mentions(k, scan) for k in sec)))]
        blocks = [m["content"] for m in ms if m["content"].startswith("Things you know:")]
        if not want:
            assert not blocks, (c["meta"], blocks)
            continue
        n += 1
        assert len(blocks) == 1 and ms[last - 1]["role"] == "system", c
        check_block(ms[last - 1]["content"], want, ntok)
    return n


def tokens_counter(model_path):
    import llama_cpp
    vocab = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))
