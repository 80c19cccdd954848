#!/usr/bin/env python3
"""Writes the PNG test cards from the JSON ones with a hand-rolled chunk
writer (struct + zlib), independent of the libpng code under test.
Run from this folder: python3 make_pngs.py"""
import base64
import json
import struct
import zlib


def chunk(kind, body, crc=None):
    c = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", c & 0xFFFFFFFF)


def png(width, height, color_type, pixels_per_row, before=(), after=()):
    channels = {0: 1, 2: 3, 6: 4}[color_type]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(pixels_per_row(y)) for y in range(height))
    assert all(len(pixels_per_row(y)) == width * channels for y in range(height))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    out += b"".join(before) + chunk(b"IDAT", zlib.compress(raw)) + b"".join(after)
    return out + chunk(b"IEND", b"")


def text(key, value):
    return chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value)


def b64json(obj):
    return base64.b64encode(json.dumps(obj, ensure_ascii=False).encode("utf-8"))


aria = json.load(open("v2_aria.json", encoding="utf-8"))
brann = json.load(open("v3_brann.json", encoding="utf-8"))
rgb = lambda y: [(x * 30) % 256 for x in range(8 * 3)]

# V2 card, its chunk after IDAT (allowed, and easy to miss), RGB pixels.
open("v2_aria.png", "wb").write(png(8, 6, 2, rgb, before=[text("Software", b"hand-made")],
                                    after=[text("chara", b64json(aria))]))
# V3 card with a V2 backfill, grayscale pixels: ccv3 must win.
v2 = {"spec": "chara_card_v2", "spec_version": "2.0",
      "data": {k: v for k, v in brann["data"].items()
               if k not in ("nickname", "creator_notes_multilingual", "source", "group_only_greetings",
                            "creation_date", "modification_date", "assets")}}
v2["data"]["name"] = "Backfilled V2 (must not be used)"
gray = lambda y: [y * 40 + x for x in range(5)]
open("v3_brann.png", "wb").write(png(5, 5, 0, gray, before=[text("chara", b64json(v2)),
                                                         text("ccv3", b64json(brann))]))
rgba = lambda y: [255, 0, 0, 128] * 4
open("no_card.png", "wb").write(png(4, 4, 6, rgba))
whole = open("v2_aria.png", "rb").read()
idat = whole.index(b"IDAT")
open("truncated.png", "wb").write(whole[: idat + 20])
open("bad_base64.png", "wb").write(png(4, 4, 6, rgba, before=[text("chara", b"eyJuYW1l*not base64!")]))
open("bad_crc.png", "wb").write(png(4, 4, 6, rgba, before=[
    chunk(b"tEXt", b"chara\x00" + b64json(aria), crc=12345)]))
open("bad_json_in_png.png", "wb").write(png(4, 4, 6, rgba, before=[
    text("chara", base64.b64encode(b'{"spec": "chara_card_v2",\n "data": {"name": }}'))]))
