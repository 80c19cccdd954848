#!/usr/bin/env python3
"""Writes tests/data/tokenizer_corpus.txt: the tokenizer parity corpus.

Deterministic (fixed seed, no external data): rerunning it reproduces the
committed file byte for byte. One test case per line. Escapes, undone by
the tests: \\n newline, \\t tab, \\r carriage return, \\\\ backslash (every
other character, including raw tabs and spaces, is literal). So a line
`a\\nb` is the two-line text "a<LF>b", and C code's own "\\n" is written
`\\\\n`.

    python3 tests/data/make_tokenizer_corpus.py   # rewrites the corpus
"""
import pathlib
import random

OUT = pathlib.Path(__file__).with_name("tokenizer_corpus.txt")
N_LINES = 2400

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "I don't think we've met before, have we?",
    "She said she'd come, but I'LL believe it when I see it.",
    "They're here; it's late, and you'd better hurry.",
    "We'll see. Won't we? Shouldn't've said that!",
    "HELLO WORLD!!! Is anybody out there???",
    "Tokenizers split text into pieces called tokens.",
    "Email me at someone@example.com or visit https://example.org/path?q=1&r=2.",
    "Mr. O'Brien's dog's bone — it's gone.",
    "\"Quoted text,\" he said, 'and single quotes too.'",
    "Price: $19.99 (was $25.00) - save 20%!",
    "Call 555-0123 before 9:30 a.m. on 2024-01-15.",
    "It was the best of times, it was the worst of times.",
    "camelCaseIdentifier and snake_case_name and SCREAMING_CASE",
    "A sentence ending with spaces   ",
    "ALL CAPS CONTRACTIONS: DON'T, CAN'T, WON'T, I'M, YOU'RE, THEY'VE, HE'D, SHE'LL",
    "Mixed 's 't 're 've 'm 'll 'd fragments and ' s apart",
    "tabs\there\tand\tthere",
]

ITALIAN = [
    "L'amico dell'uomo è il cane, però il gatto è più furbo.",
    "Perché non vieni con noi? Così sarà più facile.",
    "Città, virtù, gioventù: parole con l'accento.",
    "Un'altra volta, all'improvviso, nell'ombra dell'albero.",
    "Ho mangiato già tre volte oggi, è vero!",
    "C'è un po' di caffè? Sì, ce n'è ancora.",
    "Dov'è l'uscita? Qual è il tuo nome?",
    "Lo sciatore scivolò giù per la pista più ripida.",
    "È È È à ò ù ì é — maiuscole e minuscole accentate.",
    "Quell'anno l'inverno arrivò presto e nevicò per giorni.",
    "Il 25 dicembre 2023 c'erano 1.000 persone in piazza.",
    "«Benvenuti a corte», disse il re con voce profonda.",
]

OTHER_SCRIPTS = [
    "Καλημέρα κόσμε! Πώς είσαι σήμερα;",
    "Ἐν ἀρχῇ ἦν ὁ λόγος.",
    "Привет, мир! Как дела? Всё хорошо.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "你好，世界！今天天气很好。",
    "我喜欢学习新的语言和文化。",
    "こんにちは、世界。カタカナとひらがなと漢字。",
    "안녕하세요, 세계! 반갑습니다.",
    "مرحبا بالعالم! كيف حالك اليوم؟",
    "السلام عليكم ورحمة الله",
    "नमस्ते दुनिया! आप कैसे हैं?",
    "हिन्दी में संख्याएँ: १२३४५६७८९०",
    "שלום עולם! מה שלומך?",
    "Türkçe: ğüşıöç ĞÜŞİÖÇ",
    "Polski: zażółć gęślą jaźń",
    "Tiếng Việt: Xin chào thế giới",
    "ภาษาไทย สวัสดีครับ",
    "Ελληνικά και Русский и English together.",
    "Arabic digits ٠١٢٣٤٥٦٧٨٩ and Thai ๑๒๓",
    "Fullwidth: ＡＢＣ１２３！",
    "Combining: e\u0301 a\u0300 n\u0303 (decomposed accents)",
    "Superscripts x² y³ fractions ½ ¾ circled ① ② roman Ⅻ",
]

EMOJI = [
    "I love this! 😀😃😄😁",
    "Thumbs up 👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿",
    "Family: 👨‍👩‍👧‍👦 and 👩‍❤️‍👨 and 🏳️‍🌈",
    "Flags: 🇮🇹 🇺🇸 🇯🇵 🇬🇧 🇫🇷",
    "Hearts ❤️ 💔 💕 and stars ⭐ ✨",
    "🐉 dragon 🗡️ sword 🛡️ shield 🧙‍♂️ wizard 🧝‍♀️ elf",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ and ©️ ®️ ™️",
    "🤷🏽‍♀️🤦🏻‍♂️🙋🏿",
]

CODE = [
    "int main(void) {\\n    printf(\"%d\\\\n\", 42);\\n    return 0;\\n}",
    "for (size_t i = 0; i < n; i++) sum += a[i] * b[i];",
    "#include <stdio.h>\\n#define MAX(a, b) ((a) > (b) ? (a) : (b))",
    "def fib(n):\\n    if n < 2:\\n        return n\\n    return fib(n - 1) + fib(n - 2)",
    "class Npc:\\n    def __init__(self, name):\\n        self.name = name\\n\\n    def greet(self):\\n        return f\"Hi, I'm {self.name}\"",
    "{\"name\": \"Aldric\", \"level\": 12, \"hp\": 340.5, \"tags\": [\"knight\", \"loyal\"], \"alive\": true}",
    "{\\n  \"nested\": {\\n    \"a\": [1, 2, 3],\\n    \"b\": null\\n  }\\n}",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares",
    "if (x != y && y >= 0 || !flag) { return -1; }",
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name;",
    "const re = /^[a-z0-9_-]{3,16}$/i; // regex",
    "path = \"C:\\\\Users\\\\npc\\\\save.json\"",
    "\\tindented with a tab\\n\\t\\tand two tabs",
    "    four spaces\\n        eight spaces\\n            twelve",
    "<div class=\"npc\">Hello &amp; welcome</div>",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=1;g>>=2;h&=~i;",
]

FANTASY = [
    "Aldric: \"By the old oaths, I'll not let you pass, stranger.\"",
    "Mirela the Witch: Ye seek the Moonwell? 'Tis three leagues past the Thornwood.",
    "Grok: ME SMASH! Grok no like tiny humans with pointy sticks.",
    "Elowen: The elves of Sil'Vanar haven't sung since the Sundering of '42.",
    "Thrain Ironfist: Ach, the dwarven forges o' Khaz-Dûm burn hotter than dragon's breath!",
    "Queen Ysolde: Bring me the Chalice of Aeth'ryn, and the throne's debt is paid.",
    "Innkeeper: A room's 5 silver, a meal's 2, and the ale's on the house tonight.",
    "Zyx'thala whispers: ...the void remembers, little one. It always remembers.",
    "Sir Gawaine: Hold! Who goes there? State thy name and purpose!",
    "Old Bran: In my day we'd fight goblins with naught but a spoon 'n' a prayer.",
    "Merchant Tov: Finest silks from Qal'Amir — 120 gold, not a copper less!",
    "Captain Reyna: All hands! Reef the mainsail, there's a storm o'er the Saltspire.",
    "The Oracle: Three moons, two crowns, one heir... and zero mercy.",
    "Nyx: Don't trust the Archmage. He's lied to the Council 7 times that I know of.",
    "Il vecchio mago: «Non passerai!» gridò, e la terra tremò sotto l'Ombra.",
    "Drago Ignis: Le mie scaglie hanno resistito a mille frecce, umano.",
]

SPECIAL = [
    "<|im_start|>user\\nHello there!<|im_end|>\\n<|im_start|>assistant\\nGreetings, traveler.<|im_end|>",
    "<|im_start|>system\\nYou are Aldric, a loyal knight.<|im_end|>\\n<|im_start|>user\\nWho are you?<|im_end|>\\n<|im_start|>assistant\\n",
    "text before <|im_start|> and after",
    "<|im_end|><|im_end|><|im_start|><|endoftext|>",
    "broken <|im_start| and <im_end|> and <|im_end",
    "nested <|im_<|im_end|>start|> tokens",
    "<|endoftext|>The end.<|endoftext|>",
    "<filename>main.py<file_sep><reponame>lemonpc<gh_stars>100",
    "<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "  <|im_start|>  spaces around  <|im_end|>  ",
]

NUMBERS = [
    "1234567", "3.14", "1,000", "1,234,567.89", "0.000001", "42", "007", "-273.15",
    "1e10", "6.022e23", "2^64 = 18446744073709551616", "v1.2.3", "100%", "3/4",
    "12:34:56", "+39 055 1234567", "0x1F", "#FF00AA", "1st 2nd 3rd 4th", "9999999999999999999",
]

WHITESPACE = [
    "   ", "\\t", "\\t\\t\\t", "  \\t  \\t", "\\n", "\\n\\n\\n", "\\n\\n  ", " \\n \\n ",
    "\\r\\n", "word\\r\\nword", "a  b   c    d", "trailing   ", "   leading", "\\n\\n\\nblank lines above",
    "x\\n\\n\\n\\ny", "\u00a0nbsp\u00a0and\u3000ideographic\u2003em space", "a\u0085nel",
    " \\t\\n\\r mixed", "end with newline\\n", "  \\n\\n  ",
]

WORDS = ("the a of and to in is it that was he for on are as with his they at be this from "
         "have or by one had not but what all were when we there can an your which their said "
         "sword castle dragon king queen magic potion gold silver forest river mountain village "
         "knight witch elf dwarf orc goblin quest tavern ale bread cane gatto casa spada drago "
         "re regina bosco fiume città perché però così già più").split()


def esc(s):
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def random_sentence(rng):
    n = rng.randint(3, 14)
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.3:
        words[0] = words[0].capitalize()
    if rng.random() < 0.2:
        words.insert(rng.randint(0, len(words)), rng.choice(NUMBERS))
    if rng.random() < 0.15:
        words.insert(rng.randint(0, len(words)), rng.choice(["don't", "I'LL", "we've", "l'amico", "dell'uomo", "it's", "they're"]))
    sep = rng.choice([" ", " ", " ", "  ", "\t", " \n"])
    return sep.join(words) + rng.choice([".", "!", "?", "...", "", ","])


def main():
    rng = random.Random(20241126)
    fixed_raw = ENGLISH + ITALIAN + OTHER_SCRIPTS + EMOJI + FANTASY + NUMBERS
    # CODE, SPECIAL and WHITESPACE entries are already written escaped.
    lines = [esc(s) for s in fixed_raw] + CODE + SPECIAL + WHITESPACE
    # Leading/trailing whitespace variants of every fixed line.
    for s in fixed_raw:
        lines.append(esc(rng.choice([" ", "  ", "\t", "\n"]) + s + rng.choice([" ", "   ", "\t", "\n", "\n\n"])))
    pools = [ENGLISH, ITALIAN, OTHER_SCRIPTS, EMOJI, FANTASY, NUMBERS]
    escaped_pools = [CODE, SPECIAL, WHITESPACE]
    while len(lines) < N_LINES:
        kind = rng.random()
        if kind < 0.35:
            lines.append(esc(random_sentence(rng)))
        elif kind < 0.75:
            # Mix of two to four fragments from different pools.
            parts = []
            for _ in range(rng.randint(2, 4)):
                if rng.random() < 0.25:
                    parts.append(rng.choice(rng.choice(escaped_pools)))
                else:
                    parts.append(esc(rng.choice(rng.choice(pools))))
            lines.append(rng.choice([" ", "", "\\n", "  ", "\\t"]).join(parts))
        elif kind < 0.85:
            # Numbers of various lengths, alone and glued to words.
            d = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
            lines.append(esc(rng.choice(["", "x", "abc", "Level ", "£", "€", " "]) + d +
                             rng.choice(["", " gold", "km", ".5", ",000", "%", "\n"])))
        else:
            # Whitespace runs of random length around a word.
            ws = "".join(rng.choice([" ", " ", "\t", "\n"]) for _ in range(rng.randint(1, 8)))
            ws2 = "".join(rng.choice([" ", "\t", "\n"]) for _ in range(rng.randint(0, 5)))
            lines.append(esc(ws + rng.choice(WORDS) + ws2 + rng.choice(WORDS)))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(lines)} lines")


if __name__ == "__main__":
    main()
