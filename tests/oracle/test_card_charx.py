"""CHARX cards written by Python's zipfile (independent of our libzip code),
laid out as the CCv3 spec says: card.json at the root, assets under
assets/{type}/{images,audio,...}/ referred to by embeded:// URIs, an
application file at the root. `lemonpc import` then `lemonpc export` must
give back the same card.json (as JSON) and every asset byte for byte, and
zipfile must find our archive sound (CRCs, names)."""
import io
import json
import pathlib
import random
import subprocess
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

ASSETS = {
    "assets/icon/images/main.png": b"\x89PNG\r\n\x1a\n" + bytes(random.Random(1).randrange(256) for _ in range(4000)),
    "assets/emotion/images/angry.png": bytes(range(256)) * 8,
    "assets/emotion/images/\u00e9tonn\u00e9.webp": b"RIFF\x00\x00\x00\x00WEBP" + b"\x00" * 100,
    "assets/background/audio/rain.mp3": b"ID3" + bytes(random.Random(2).randrange(256) for _ in range(2000)),
    "assets/other/other/empty.bin": b"",
    "x_app_data.json": b'{"frontend": "elsewhere", "v": 2}',
}


def card():
    c = json.loads((ROOT / "tests/data/cards/v3_brann.json").read_text())
    c["data"]["assets"] = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}] + [
        {"type": n.split("/")[1], "uri": "embeded://" + n, "name": n.rsplit("/", 1)[1].split(".")[0],
         "ext": n.rsplit(".", 1)[1]}
        for n in ASSETS if n.startswith("assets/")
    ]
    return c


class Unseekable(io.RawIOBase):
    """A write-only stream without tell/seek: zipfile then writes data
    descriptors after each entry, as streaming zippers do."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def write_charx(path, entries, streamed=False):
    if streamed:
        sink = Unseekable()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in entries:
                with z.open(name, "w") as f:
                    f.write(data)
        path.write_bytes(bytes(sink.buf))
        return
    with zipfile.ZipFile(path, "w") as z:
        for i, (name, data) in enumerate(entries):
            z.writestr(name, data, zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED)


def run(lemonpc, *args, ok=True):
    r = subprocess.run([str(lemonpc), *map(str, args)], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("streamed", [False, True])
def test_round_trip(lemonpc, tmp_path, streamed):
    want = card()
    src = tmp_path / "brann.charx"
    write_charx(src, [("card.json", json.dumps(want, indent=1).encode())] + list(ASSETS.items()), streamed)
    if streamed:
        with zipfile.ZipFile(src) as z:
            assert all(i.flag_bits & 0x08 for i in z.infolist())  # data descriptors really used
    out = tmp_path / "sheets"
    md = pathlib.Path(run(lemonpc, "import", src, out).stdout.strip())
    folder = md.with_suffix(".assets")
    for name, data in ASSETS.items():
        assert (folder / name).read_bytes() == data
    assert not (folder / "card.json").exists()

    back = tmp_path / "back.charx"
    run(lemonpc, "export", md, back)
    with zipfile.ZipFile(back) as z:
        assert z.testzip() is None
        names = z.namelist()
        assert names[0] == "card.json"
        assert sorted(names[1:]) == sorted(ASSETS)
        assert json.loads(z.read("card.json")) == want
        for name, data in ASSETS.items():
            assert z.read(name) == data
        # every embeded:// URI of the card resolves inside the archive
        for a in json.loads(z.read("card.json"))["data"]["assets"]:
            if a["uri"].startswith("embeded://"):
                assert a["uri"][len("embeded://"):] in names


def refused(lemonpc, tmp_path, entries, *want):
    src = tmp_path / "bad.charx"
    write_charx(src, entries)
    out = tmp_path / "out"
    r = run(lemonpc, "import", src, out, ok=False)
    assert r.returncode == 1
    for w in ("bad.charx",) + want:
        assert w in r.stderr, r.stderr
    assert not out.exists()


def test_hostile(lemonpc, tmp_path):
    cj = json.dumps(card()).encode()
    refused(lemonpc, tmp_path, [("assets/a.png", b"x")], "no card.json")
    refused(lemonpc, tmp_path, [("card.json", b'{"spec": "chara_card_v3", "data": {')], "(card.json):1:", "invalid JSON")
    refused(lemonpc, tmp_path, [("card.json", cj), ("../../evil.png", b"x")], "'../../evil.png'", "'..'")
    refused(lemonpc, tmp_path, [("card.json", cj), ("/tmp/evil.png", b"x")], "'/tmp/evil.png'", "absolute")
    with pytest.warns(UserWarning):  # zipfile knows duplicates are wrong, and writes them anyway
        refused(lemonpc, tmp_path, [("card.json", cj), ("assets/a.png", b"1"), ("assets/a.png", b"2")], "same name")
    # 17 MiB of card.json in a few KiB
    bomb = b'{"spec":"chara_card_v3","data":{"name":"x"}}' + b" " * (17 << 20)
    src = tmp_path / "bad.charx"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("card.json", bomb)
    assert src.stat().st_size < 100_000
    r = run(lemonpc, "import", src, tmp_path / "out", ok=False)
    assert "'card.json'" in r.stderr and "limit for card.json" in r.stderr
    # a truncated archive
    write_charx(src, [("card.json", cj)] + list(ASSETS.items()))
    src.write_bytes(src.read_bytes()[:-100])
    r = run(lemonpc, "import", src, tmp_path / "out", ok=False)
    assert r.returncode == 1 and "bad.charx" in r.stderr and "ZIP" in r.stderr
    assert not (tmp_path / "out").exists()
