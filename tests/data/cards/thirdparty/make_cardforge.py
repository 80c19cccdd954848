#!/usr/bin/env python3
"""Writes brann.card-forge.json and brann.card-forge.png with card-forge
0.4.0 (PyPI, MIT), the way its command line writes them:
`card-forge build --format json` (json.dump of the pydantic model's
model_dump(), every unset optional field as null) and `card-forge build
--format png --legacy` (Pillow saves the base picture with the model's JSON,
base64, in a `ccv3` and a `chara` tEXt chunk).
Then the same JSON the other ways Pillow stores text, as some tools do: a
compressed zTXt `chara` chunk (brann.pillow-ztxt.png) and an iTXt one
(brann.pillow-itxt.png), on palette pictures.

card-forge needs Pillow and pydantic, which the test machines do not have,
so the output is kept here. To remake (from this folder):
    python3 -m venv /tmp/cf && /tmp/cf/bin/pip install card-forge==0.4.0
    /tmp/cf/bin/python make_cardforge.py"""
import json

import base64

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from forge.helper import embed_card_data
from forge.models import CharacterCardV3

card = CharacterCardV3.model_validate({
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Brannoc Greyhollow",
        "nickname": "Brann",
        "description": "A former stonemason who organizes the Unblessed of the Hollow Quarter.\n\n"
                       "He is broad, grey-bearded and missing two fingers on his left hand.",
        "personality": "Blunt, protective, suspicious of nobles, soft with children.",
        "scenario": "{{user}} comes to the Hollow Quarter looking for work.",
        "first_mes": "*A big man blocks the alley.* You're not from the Quarter. Talk fast.",
        "mes_example": "<START>\n{{user}}: Are you planning a revolt?\n{{char}}: I'm planning supper. "
                       "For forty people. That's revolt enough in this city.\n<START>\n"
                       "{{user}}: What happened to your hand?\n{{char}}: A noble's scaffold.\n"
                       "He paid for the stone. Not for the fingers.",
        "creator_notes": "Made with card-forge for LeMoNPC's import tests.",
        "creator_notes_multilingual": {"en": "Made with card-forge for LeMoNPC's import tests.",
                                       "it": "Creato con card-forge per i test di LeMoNPC."},
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["Back again? Sit. Eat first, talk later."],
        "group_only_greetings": ["Right. All of you, inside, before the patrol comes."],
        "tags": ["fantasy", "city", "rebel"],
        "creator": "lemonpc tests",
        "character_version": "2.0",
        "source": ["local:brann"],
        "creation_date": 1700000000,
        "modification_date": 1700003600,
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
        "extensions": {"depth_prompt": {"prompt": "", "depth": 4, "role": "system"}},
        "character_book": {
            "name": "Aurelion",
            "entries": [
                {"keys": ["Hollow Quarter", "the Quarter"], "content":
                 "The Hollow Quarter lies below the walls of Aurelion.\nIts people are the Unblessed.",
                 "extensions": {}, "enabled": True, "insertion_order": 1, "use_regex": False,
                 "constant": False, "comment": "the district"},
                {"keys": ["^patrol(s)?$"], "content": "@@depth 3\nPatrols pass every second hour.",
                 "extensions": {"risu": {"folder": None}}, "enabled": True, "insertion_order": 2,
                 "use_regex": True, "selective": True, "secondary_keys": ["night"],
                 "position": "after_char", "priority": 5, "id": 7},
            ],
            "extensions": {},
        },
    },
})

with open("brann.card-forge.json", "w", encoding="utf-8") as f:
    json.dump(card.model_dump(), f, indent=2, ensure_ascii=False)

base = Image.new("RGB", (48, 40))
base.putdata([(x * 5, y * 6, 128) for y in range(40) for x in range(48)])
base.save("/tmp/brann_base.png")
embed_card_data(metadata=card.model_dump_json(indent=2), image_path="/tmp/brann_base.png",
                output_path="brann.card-forge.png", legacy=True)

b64 = base64.b64encode(card.model_dump_json().encode("utf-8")).decode("ascii")
for kind in ("ztxt", "itxt"):
    pic = Image.new("P", (24, 16))
    pic.putpalette([(i * 7) % 256 for i in range(768)])
    pic.putdata([(x + y * 3) % 64 for y in range(16) for x in range(24)])
    info = PngInfo()
    if kind == "ztxt":
        info.add_text("chara", b64, zip=True)
    else:
        info.add_itxt("chara", b64, zip=True)
    pic.save(f"brann.pillow-{kind}.png", pnginfo=info)
