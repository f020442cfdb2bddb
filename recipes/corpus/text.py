"""Utterance texts: sentences from installed gettext catalogues and words from w* word lists."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOCALE_ROOT = Path("/usr/share/locale")
DICT_ROOT = Path("/usr/share/dict")
# text language -> (locale folders with .mo catalogues, /usr/share/dict word list)
LANGUAGE_TEXT = {
    "en": ((), "american-english"),
    "de": (("de",), "ngerman"),
    "fr": (("fr",), "french"),
    "es": (("es",), "spanish"),
    "it": (("it",), "italian"),
    "pt": (("pt", "pt_PT"), "portuguese"),
    "pt_BR": (("pt_BR",), None),
    "nl": (("nl",), "dutch"),
    "sv": (("sv",), "swedish"),
    "da": (("da",), "danish"),
    "nb": (("nb", "nb_NO", "no"), None),
    "fi": (("fi",), None),
    "cs": (("cs",), None),
    "pl": (("pl",), None),
    "ru": (("ru",), None),
    "uk": (("uk",), None),
    "ca": (("ca",), "catalan"),
    "el": (("el",), None),
    "ro": (("ro",), None),
    "hu": (("hu",), None),
    "sk": (("sk",), None),
    "tr": (("tr",), None),
    "hr": (("hr",), None),
    "sl": (("sl",), None),
    "bg": (("bg",), None),
    "lt": (("lt",), None),
    "et": (("et",), None),
    "eu": (("eu",), None),
}
# English source strings (msgid) are read from the catalogues of this locale
ENGLISH_MSGID_LOCALES = ("de", "fr")
LICENSE_TEXTS = Path("/usr/share/common-licenses")


@dataclass
class TextBank:
    """Sentences and words of one language, to build utterance texts from."""

    sentences: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return len(self.sentences) >= 20 or len(self.words) >= 200


def read_mo_catalogue(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a GNU gettext .mo file; [] when it cannot be parsed."""
    try:
        data = path.read_bytes()
        magic = data[:4]
        order = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}.get(magic)
        if order is None:
            return []
        _, count, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])
        pairs = []
        for k in range(count):
            id_len, id_off = struct.unpack(order + "2I", data[ids_at + 8 * k : ids_at + 8 * k + 8])
            st_len, st_off = struct.unpack(
                order + "2I", data[strs_at + 8 * k : strs_at + 8 * k + 8]
            )
            msgid = data[id_off : id_off + id_len].split(b"\0")[0].decode("utf-8", "replace")
            msgstr = data[st_off : st_off + st_len].split(b"\0")[0].decode("utf-8", "replace")
            if msgid and msgstr:
                pairs.append((msgid, msgstr))
        return pairs
    except (OSError, struct.error):
        return []


_MARKUP = re.compile(
    r"%(\([^)]*\))?[-+ #0-9.*$]*[a-zA-Z]|\{[^}]*\}|<[^>]*>|\$\{?\w+\}?|&\w+;|https?://\S+"
)
_BAD_CHARS = re.compile(r"[/\\=_<>\[\]{}|@#*~`^\"“”„«»()%$&+;0-9]")
_EMPTY_QUOTE = re.compile(r"['‘’]\s*['‘’]|\s['‘’.,]|\.\w")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def clean_sentences(text: str) -> list[str]:
    """Natural-language sentences (4..24 words, letters and light punctuation) found in text."""
    text = _MARKUP.sub(" ", text.replace("\\n", "\n"))
    out = []
    for piece in _SENTENCE_END.split(text):
        piece = " ".join(piece.split()).strip(" :-–—,")
        if not piece or _BAD_CHARS.search(piece) or "--" in piece or _EMPTY_QUOTE.search(piece):
            continue
        words = piece.split()
        if not 4 <= len(words) <= 24:
            continue
        letters = sum(ch.isalpha() for ch in piece)
        if letters < 0.75 * len(piece.replace(" ", "")):
            continue
        if sum(w.isupper() and len(w) > 1 for w in words) > 1:
            continue
        if piece[-1] not in ".!?":
            piece += "."
        out.append(piece[0].upper() + piece[1:])
    return out


def read_word_list(path: Path) -> list[str]:
    """Lower-case plain words (2..14 letters) of a /usr/share/dict word list."""
    words = []
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                w = line.strip()
                if 2 <= len(w) <= 14 and w.isalpha() and w.islower():
                    words.append(w)
    except OSError:
        return []
    return words


def build_text_bank(language: str) -> TextBank:
    """Sentences from installed gettext catalogues (and licence texts for English) + words."""
    locales, dict_name = LANGUAGE_TEXT[language]
    sentences: set[str] = set()
    if language == "en":
        for loc in ENGLISH_MSGID_LOCALES:
            for mo in sorted((LOCALE_ROOT / loc / "LC_MESSAGES").glob("*.mo")):
                for msgid, _ in read_mo_catalogue(mo):
                    sentences.update(clean_sentences(msgid))
        for lic in sorted(LICENSE_TEXTS.glob("*")):
            if lic.is_file():
                sentences.update(clean_sentences(lic.read_text(errors="replace")))
    else:
        for loc in locales:
            for mo in sorted((LOCALE_ROOT / loc / "LC_MESSAGES").glob("*.mo")):
                if mo.name.startswith("iso_"):
                    continue  # lists of names, not sentences
                for _, msgstr in read_mo_catalogue(mo):
                    sentences.update(clean_sentences(msgstr))
    words = read_word_list(DICT_ROOT / dict_name) if dict_name else []
    if not words:  # words harvested from the sentences themselves
        found = {w.strip(".,!?:").lower() for s in sentences for w in s.split()}
        words = [w for w in found if w.isalpha() and 2 <= len(w) <= 14]
    return TextBank(sorted(sentences), sorted(set(words)))


def compose_text(bank: TextBank, rng: np.random.Generator, encoding: str | None = None) -> str:
    """One utterance text: real sentence(s) (70 %) or a random word sequence, 5..20 words."""
    for _ in range(50):
        if bank.sentences and (rng.random() < 0.7 or len(bank.words) < 200):
            text = bank.sentences[rng.integers(len(bank.sentences))]
            while len(text.split()) < 6 and rng.random() < 0.8:
                text += " " + bank.sentences[rng.integers(len(bank.sentences))]
        else:
            n = int(rng.integers(5, 15))
            picks = [bank.words[i] for i in rng.integers(0, len(bank.words), n)]
            if n > 8:
                picks[int(rng.integers(3, n - 3))] += ","
            text = " ".join(picks)
            text = text[0].upper() + text[1:] + "."
        if len(text.split()) > 22:
            continue
        if encoding is not None:
            try:
                text.encode(encoding)
            except UnicodeEncodeError:
                continue
        return text
    raise RuntimeError("no encodable text found")

