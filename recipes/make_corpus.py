#!/usr/bin/env python3
"""Build a speaker-disjoint speech + noise corpus for diffsep from Debian packages.

Sources: TTS voices (espeak-ng, flite, festival + festvox voices) speaking generated text,
real recorded speech (ktuberling-data word clips, Asterisk IVR prompts), real noise
(gcompris-qt-data sound effects, bucklespring keyboard samples) and synthetic noise.
Everything is written as 16 kHz mono PCM16 WAV, silence-trimmed and level-normalised,
split speaker-disjoint into train / valid / test, listed in ``manifest.csv``, and turned
into fixed evaluation sets ``sep-8k/{valid,test}/{mix,s1,s2}`` and
``enh-16k/{valid,test}/{noisy,clean}``.

    python recipes/make_corpus.py --out data/corpus --apt-install      # full corpus
    python recipes/make_corpus.py --out /tmp/corpus --small            # smoke test, < 1 min

Deterministic given ``--seed``; re-running skips files that already exist.
See recipes/README.md for the layout and the licences of the sources.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

CORPUS_RATE = 16000
SEPARATION_RATE = 8000
SPLITS = ("train", "valid", "test")
SPEECH_LEVEL_DBFS = -26.0  # active speech level after normalisation
NOISE_LEVEL_DBFS = -30.0  # RMS level of every noise file
PEAK_LIMIT = 0.97

# Only the packages below are ever installed or read (the project's held-out test packages,
# listed in recipes/README.md, are not among them and must never be added).
APT_PACKAGES = (
    # TTS engines and voices
    "espeak-ng",
    "flite",
    "festival",
    "festlex-cmu",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "festvox-italp16k",
    "festvox-itapc16k",
    "festvox-suopuhe-lj",
    "festvox-suopuhe-mv",
    "festvox-czech-dita",
    "festvox-czech-krb",
    "festvox-czech-machac",
    "festvox-czech-ph",
    "festvox-ru",
    "festvox-ca-ona-hts",
    # real recorded speech (G.722 prompts are decoded with ffmpeg)
    "ktuberling-data",
    "ffmpeg",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-es-g722",
    "asterisk-core-sounds-fr-g722",
    "asterisk-core-sounds-it-g722",
    "asterisk-core-sounds-ru-g722",
    # real noise
    "gcompris-qt-data",
    "bucklespring-data",
    # text: word lists
    "wamerican",
    "wbritish",
    "wngerman",
    "wfrench",
    "wspanish",
    "witalian",
    "wcatalan",
    "wswedish",
    "wdutch",
    "wportuguese",
    "wdanish",
)

# ---------------------------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------------------------

# espeak-ng voice -> text language (a key of LANGUAGE_TEXT). English gets more weight below.
ESPEAK_LANGUAGES = {
    "en-us": "en",
    "en-gb": "en",
    "en-gb-scotland": "en",
    "en-gb-x-rp": "en",
    "en-029": "en",
    "en-gb-x-gbcwmd": "en",
    "en-us-nyc": "en",
    "de": "de",
    "fr-fr": "fr",
    "fr-be": "fr",
    "es": "es",
    "es-419": "es",
    "it": "it",
    "pt": "pt",
    "pt-br": "pt_BR",
    "nl": "nl",
    "sv": "sv",
    "da": "da",
    "nb": "nb",
    "fi": "fi",
    "cs": "cs",
    "pl": "pl",
    "ru": "ru",
    "uk": "uk",
    "ca": "ca",
    "el": "el",
    "ro": "ro",
    "hu": "hu",
    "sk": "sk",
    "tr": "tr",
    "hr": "hr",
    "sl": "sl",
    "bg": "bg",
    "lt": "lt",
    "et": "et",
    "eu": "eu",
}
ENGLISH_SHARE = 0.4

# espeak-ng variant files that sound like a person (robots, whisper and effects left out).
ESPEAK_VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt5",
    "klatt6",
    "croak",
    "adam",
    "Alex",
    "Alicia",
    "Andrea",
    "Andy",
    "Annie",
    "antonio",
    "aunty",
    "belinda",
    "benjamin",
    "boris",
    "caleb",
    "david",
    "Denis",
    "Diogo",
    "ed",
    "edward",
    "edward2",
    "Gene",
    "Gene2",
    "gustave",
    "Henrique",
    "Hugo",
    "iven",
    "iven2",
    "iven3",
    "iven4",
    "Jacky",
    "john",
    "kaukovalta",
    "Lee",
    "linda",
    "marcelo",
    "Marco",
    "Mario",
    "max",
    "Michael",
    "michel",
    "miguel",
    "Mike",
    "Nguyen",
    "pablo",
    "paul",
    "pedro",
    "quincy",
    "rob",
    "robert",
    "steph",
    "steph2",
    "steph3",
    "zac",
    "anika",
    "grandpa",
    "grandma",
    "norbert",
    "sandro",
    "shelby",
    "travis",
    "victor",
)

# flite voice -> person (the same recorded person as a festival voice shares the group).
FLITE_VOICES = {"kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}


@dataclass(frozen=True)
class FestivalVoice:
    function: str  # festival (voice_<function>)
    folder: str  # /usr/share/festival/voices/<language>/<folder>
    language: str  # key of LANGUAGE_TEXT
    encoding: str  # text encoding the voice's front end expects
    person: str


FESTIVAL_VOICES = (
    FestivalVoice("kal_diphone", "english/kal_diphone", "en", "latin-1", "kal"),
    FestivalVoice("ked_diphone", "english/ked_diphone", "en", "latin-1", "ked"),
    FestivalVoice("cmu_us_slt_arctic_hts", "us/cmu_us_slt_arctic_hts", "en", "latin-1", "slt"),
    FestivalVoice("lp_diphone", "italian/lp_diphone", "it", "latin-1", "it-lp"),
    FestivalVoice("pc_diphone", "italian/pc_diphone", "it", "latin-1", "it-pc"),
    FestivalVoice("suo_fi_lj_diphone", "finnish/suo_fi_lj_diphone", "fi", "latin-1", "fi-lj"),
    FestivalVoice("hy_fi_mv_diphone", "finnish/hy_fi_mv_diphone", "fi", "latin-1", "fi-mv"),
    FestivalVoice("czech_dita", "czech/czech_dita", "cs", "iso-8859-2", "cs-dita"),
    FestivalVoice("czech_krb", "czech/czech_krb", "cs", "iso-8859-2", "cs-krb"),
    FestivalVoice("czech_machac", "czech/czech_machac", "cs", "iso-8859-2", "cs-machac"),
    FestivalVoice("czech_ph", "czech/czech_ph", "cs", "iso-8859-2", "cs-ph"),
    FestivalVoice("msu_ru_nsh_clunits", "russian/msu_ru_nsh_clunits", "ru", "utf-8", "ru-nsh"),
    FestivalVoice("upc_ca_ona_hts", "catalan/upc_ca_ona_hts", "ca", "latin-1", "ca-ona"),
)
FESTIVAL_ROOT = Path("/usr/share/festival/voices")

# Speed perturbation (resampling: pitch, formants and tempo move together) makes new speakers
# from one TTS voice, as in Kaldi's speed perturbation.
TTS_SPEEDS = (0.88, 0.94, 1.0, 1.06, 1.12)

KTUBERLING_ROOT = Path("/usr/share/ktuberling/sounds")
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
# folder -> recorded person (Allison Smith recorded both the English and the Spanish prompts)
ASTERISK_PEOPLE = {
    "en_US_f_Allison": "allison",
    "es_MX_f_Allison": "allison",
    "fr_CA_f_June": "june",
    "it_IT_m_Carlo": "carlo",
    "ru_RU_f_IvrvoiceRU": "ivrvoice-ru",
}
ASTERISK_LANGUAGES = {
    "en_US_f_Allison": "en",
    "es_MX_f_Allison": "es",
    "fr_CA_f_June": "fr",
    "it_IT_m_Carlo": "it",
    "ru_RU_f_IvrvoiceRU": "ru",
}

# prompts that are tones or animal noises, not speech
ASTERISK_NOT_SPEECH = {"ascending-2tone", "descending-2tone", "beep", "beeperr", "tt-monkeys"}

GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
# activities whose sounds are musical notes, speech or jingles: not used as noise
GCOMPRIS_EXCLUDE = re.compile(
    r"/(instruments|melody|play_rhythm|piano_composition|ballcatch|chronos|note_names)/|/intro\.ogg$"
)
BUCKLESPRING_ROOT = Path("/usr/share/buckle/wav")

# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Signal helpers (numpy only)
# ---------------------------------------------------------------------------------------------


def stable_seed(*parts: object) -> list[int]:
    """Entropy for np.random.default_rng from any printable parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_seed(*parts))


def to_mono(x: np.ndarray) -> np.ndarray:
    """(N,) or (N, C) -> (N,) float64."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=1) if x.ndim == 2 else x


def resample(x: np.ndarray, rate_in: float, rate_out: int) -> np.ndarray:
    """(N,) float -> (M,) at rate_out with soxr (HQ)."""
    if abs(rate_in - rate_out) < 1e-9:
        return np.asarray(x, dtype=np.float64)
    return soxr.resample(np.asarray(x, dtype=np.float64), rate_in, rate_out, quality="HQ")


def frame_power_db(x: np.ndarray, rate: int, frame_s: float = 0.02) -> np.ndarray:
    """Power (dB) of consecutive non-overlapping frames of x."""
    hop = max(1, int(rate * frame_s))
    n = len(x) // hop
    if n == 0:
        return np.full(1, 10 * np.log10(np.mean(x**2) + 1e-20) if len(x) else -200.0)
    frames = x[: n * hop].reshape(n, hop)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def trim_silence(x: np.ndarray, rate: int, below_peak_db: float = 40.0, margin_s: float = 0.06):
    """x without leading/trailing frames quieter than (loudest frame - below_peak_db)."""
    hop = int(rate * 0.02)
    power = frame_power_db(x, rate)
    active = np.flatnonzero(power > power.max() - below_peak_db)
    if len(active) == 0:
        return x[:0]
    margin = int(margin_s * rate)
    start = max(0, active[0] * hop - margin)
    stop = min(len(x), (active[-1] + 1) * hop + margin)
    return x[start:stop]


def active_level_db(x: np.ndarray, rate: int) -> float:
    """Mean power (dB) over frames within 30 dB of the loudest one (a simple active level)."""
    power = frame_power_db(x, rate)
    active = power[power > power.max() - 30.0]
    return float(10 * np.log10(np.mean(10 ** (active / 10)) + 1e-20))


def set_level(x: np.ndarray, level_db: float, target_db: float) -> np.ndarray:
    """x scaled from level_db to target_db, then scaled down if its peak exceeds PEAK_LIMIT."""
    y = x * 10 ** ((target_db - level_db) / 20)
    peak = np.max(np.abs(y)) if len(y) else 0.0
    return y * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else y


def finish_speech(x: np.ndarray, rate: float, speed: float = 1.0) -> np.ndarray:
    """Raw TTS/recorded audio -> 16 kHz mono, speed-perturbed, trimmed, level-normalised."""
    y = resample(to_mono(x), rate * speed, CORPUS_RATE)
    y = trim_silence(y, CORPUS_RATE)
    if len(y) < 0.4 * CORPUS_RATE:
        raise ValueError("utterance shorter than 0.4 s after trimming")
    return set_level(y, active_level_db(y, CORPUS_RATE), SPEECH_LEVEL_DBFS)


def split_at_pauses(x: np.ndarray, rate: int, max_s: float, min_s: float) -> list[np.ndarray]:
    """x cut into pieces of at most max_s seconds, at the quietest 20 ms frame of each
    window [min_s, max_s] after the previous cut; a remainder shorter than min_s is dropped."""
    hop = int(0.02 * rate)
    power = frame_power_db(x, rate)
    pieces = []
    start = 0  # in frames
    total = len(power)
    max_f, min_f = int(max_s / 0.02), int(min_s / 0.02)
    while total - start > max_f:
        window = power[start + min_f : start + max_f]
        cut = start + min_f + int(np.argmin(window))
        pieces.append(x[start * hop : cut * hop])
        start = cut
    if total - start >= min_f or not pieces:
        pieces.append(x[start * hop :])
    return pieces


def finish_noise(x: np.ndarray, rate: float) -> np.ndarray:
    """Raw noise -> 16 kHz mono with RMS at NOISE_LEVEL_DBFS (peak-limited)."""
    y = resample(to_mono(x), rate, CORPUS_RATE)
    y = y - np.mean(y)
    power_db = 10 * np.log10(np.mean(y**2) + 1e-20)
    return set_level(y, power_db, NOISE_LEVEL_DBFS)


def write_pcm16(path: Path, x: np.ndarray, rate: int) -> None:
    """Atomic PCM16 WAV write (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, np.clip(x, -1.0, 1.0).astype(np.float32), rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def write_int16(path: Path, x: np.ndarray, rate: int) -> None:
    """Atomic PCM16 WAV write of int16 samples (bit-exact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(tmp, x.astype(np.int16), rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def read_any(path: Path) -> tuple[np.ndarray, float]:
    """Decode an audio file to (samples (N,) float64, rate); G.722 through ffmpeg."""
    if path.suffix == ".g722":
        raw = subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "g722",
                "-i",
                str(path),
                "-f",
                "s16le",
                "-ac",
                "1",
                "-ar",
                str(CORPUS_RATE),
                "-",
            ],
            check=True,
            capture_output=True,
        ).stdout
        return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0, CORPUS_RATE
    x, rate = sf.read(str(path), dtype="float64", always_2d=False)
    return to_mono(x), rate


# ---------------------------------------------------------------------------------------------
# Speakers and jobs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """One speaker setting: a TTS voice with its perturbation, or one recorded voice folder."""

    id: str  # folder name under speech/<split>/
    group: str  # identity of the underlying person/voice; splits never share a group
    source: str  # espeak | flite | festival | ktuberling | asterisk
    language: str
    engine_voice: str = ""
    variant: str = ""  # espeak-ng voice variant
    pitch: int = 50
    rate: int = 175
    speed: float = 1.0
    stretch: float = 1.0
    encoding: str | None = None


@dataclass(frozen=True)
class SpeechJob:
    speaker: Speaker
    index: int
    out: str
    text: str = ""
    clips: tuple[str, ...] = ()
    seed: int = 0


def available_espeak_voices() -> set[str]:
    try:
        out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {line.split()[1] for line in out.stdout.splitlines()[1:] if len(line.split()) > 1}


def available_espeak_variants() -> set[str]:
    try:
        out = subprocess.run(
            ["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return set()
    found = set()
    for line in out.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            found.add(cols[4][3:])
    return found


def available_flite_voices() -> set[str]:
    try:
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return set()
    return set(out.stdout.replace("Voices available:", "").split())


def plan_espeak(count: int, banks: dict[str, TextBank], seed: int) -> list[Speaker]:
    """`count` distinct (language, variant, pitch, rate) espeak-ng speakers; group = variant."""
    voices = sorted(
        v
        for v in available_espeak_voices()
        if v in ESPEAK_LANGUAGES and banks.get(ESPEAK_LANGUAGES[v])
    )
    variants = sorted(set(ESPEAK_VARIANTS) & available_espeak_variants())
    if not voices or not variants or count <= 0:
        return []
    english = [v for v in voices if ESPEAK_LANGUAGES[v] == "en"]
    others = [v for v in voices if ESPEAK_LANGUAGES[v] != "en"]
    rng = rng_for(seed, "espeak-plan")
    speakers: dict[str, Speaker] = {}
    order = list(rng.permutation(variants))
    k = 0
    while len(speakers) < count and k < 50 * count:
        variant = order[k % len(order)]  # cycle through variants so that groups stay balanced
        k += 1
        pool = english if (english and (not others or rng.random() < ENGLISH_SHARE)) else others
        voice = pool[rng.integers(len(pool))]
        pitch = int(5 * rng.integers(4, 17))  # 20..80
        rate = int(5 * rng.integers(27, 41))  # 135..200 words per minute
        sid = f"espeak_{voice}_{variant}_p{pitch}_s{rate}"
        speakers.setdefault(
            sid,
            Speaker(
                sid,
                f"espeak-{variant}",
                "espeak",
                ESPEAK_LANGUAGES[voice],
                voice,
                variant,
                pitch,
                rate,
            ),
        )
    return sorted(speakers.values(), key=lambda s: s.id)


def plan_tts(
    settings_per_voice: int, max_voices: int | None, seed: int, banks: dict[str, TextBank]
) -> list[Speaker]:
    """flite and festival speakers: each voice at `settings_per_voice` speed/tempo settings."""
    rng = rng_for(seed, "tts-plan")
    base: list[tuple[str, str, str, str, str | None]] = []  # source, voice, person, lang, enc
    flite = available_flite_voices()
    base += [("flite", v, p, "en", "ascii") for v, p in FLITE_VOICES.items() if v in flite]
    if shutil.which("text2wave"):
        base += [
            ("festival", fv.function, fv.person, fv.language, fv.encoding)
            for fv in FESTIVAL_VOICES
            if (FESTIVAL_ROOT / fv.folder).is_dir() and banks.get(fv.language)
        ]
    if max_voices is not None:
        base = [base[i] for i in sorted(rng.permutation(len(base))[:max_voices])]
    speakers = []
    for source, voice, person, lang, enc in base:
        speeds = [1.0] + [float(s) for s in rng.permutation([s for s in TTS_SPEEDS if s != 1.0])]
        for speed in speeds[:settings_per_voice]:
            stretch = round(float(rng.uniform(0.9, 1.15)), 2)
            sid = f"{source}_{voice}_x{round(speed * 100)}_d{round(stretch * 100)}"
            speakers.append(
                Speaker(
                    sid,
                    f"person-{person}",
                    source,
                    lang,
                    voice,
                    speed=speed,
                    stretch=stretch,
                    encoding=enc,
                )
            )
    return speakers


def ktuberling_folders() -> list[tuple[str, list[Path]]]:
    """(language, clips) per ktuberling folder; folders with identical recordings merged."""
    if not KTUBERLING_ROOT.is_dir():
        return []
    by_content: dict[str, tuple[str, list[Path]]] = {}
    for folder in sorted(p for p in KTUBERLING_ROOT.iterdir() if p.is_dir()):
        clips = sorted(p for p in folder.iterdir() if p.suffix in (".ogg", ".wav", ".flac"))
        if not clips:
            continue
        digest = hashlib.sha256()
        for clip in clips:
            digest.update(clip.read_bytes())
        by_content.setdefault(digest.hexdigest(), (folder.name, clips))
    return sorted(by_content.values())


def asterisk_folders() -> list[tuple[str, list[Path]]]:
    if not ASTERISK_ROOT.is_dir():
        return []
    out = []
    for name in sorted(ASTERISK_PEOPLE):
        folder = ASTERISK_ROOT / name
        clips = sorted(
            p
            for p in folder.rglob("*.g722")
            if "silence" not in p.parts and p.stem not in ASTERISK_NOT_SPEECH
        )
        if clips:
            out.append((name, clips))
    return out


def plan_recorded(
    seed: int, max_folders: int | None, max_utts: int | None, have_ffmpeg: bool
) -> list[tuple[Speaker, list[list[Path]]]]:
    """Recorded-voice speakers with their utterances, each a list of clips to concatenate."""
    rng = rng_for(seed, "recorded-plan")
    plans = []
    kt = ktuberling_folders()
    ast = asterisk_folders() if have_ffmpeg else []
    if max_folders is not None:
        kt = [kt[i] for i in sorted(rng.permutation(len(kt))[:max_folders])]
        ast = [ast[i] for i in sorted(rng.permutation(len(ast))[:max_folders])]
    for name, clips in kt:
        safe = name.replace("@", "-")
        spk = Speaker(f"ktuberling_{safe}", f"ktuberling-{safe}", "ktuberling", name.split("@")[0])
        plans.append((spk, group_clips(clips, rng_for(seed, spk.id), 3, 5, max_utts)))
    for name, clips in ast:
        spk = Speaker(
            f"asterisk_{name}",
            f"asterisk-{ASTERISK_PEOPLE[name]}",
            "asterisk",
            ASTERISK_LANGUAGES[name],
        )
        plans.append(
            (spk, group_clips(clips, rng_for(seed, spk.id), 1, 3, max_utts, min_bytes=24000))
        )  # G.722: 8000 bytes per second
    return plans


def group_clips(
    clips: Sequence[Path],
    rng: np.random.Generator,
    lo: int,
    hi: int,
    max_utts: int | None,
    min_bytes: int = 0,
) -> list[list[Path]]:
    """Shuffled clips cut into consecutive utterances of lo..hi clips (and >= min_bytes)."""
    order = [clips[i] for i in rng.permutation(len(clips))]
    utts: list[list[Path]] = []
    k = 0
    while k < len(order):
        n = int(rng.integers(lo, hi + 1))
        utt = order[k : k + n]
        k += n
        while min_bytes and sum(p.stat().st_size for p in utt) < min_bytes and k < len(order):
            utt.append(order[k])
            k += 1
        utts.append(utt)
    return utts[:max_utts] if max_utts is not None else utts


def assign_splits(groups: dict[str, str], seed: int, valid_frac: float, test_frac: float):
    """group -> split, drawn separately per source so that every split sees every kind."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for group, source in sorted(groups.items()):
        by_source[source].append(group)
    split_of = {}
    for source, members in sorted(by_source.items()):
        order = [members[i] for i in rng_for(seed, "split", source).permutation(len(members))]
        n = len(order)
        n_test = max(1, round(n * test_frac)) if n >= 3 else 0
        n_valid = max(1, round(n * valid_frac)) if n >= 3 else 0
        for i, g in enumerate(order):
            split_of[g] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return split_of


# ---------------------------------------------------------------------------------------------
# Workers (top-level functions: they run in a process pool)
# ---------------------------------------------------------------------------------------------


def synthesize(spk: Speaker, text: str, workdir: Path) -> tuple[np.ndarray, float]:
    """Raw TTS audio for text."""
    wav = workdir / "tts.wav"
    if spk.source == "espeak":
        cmd = [
            "espeak-ng",
            "-v",
            f"{spk.engine_voice}+{spk.variant}",
            "-p",
            str(spk.pitch),
            "-s",
            str(spk.rate),
            "-w",
            str(wav),
            text,
        ]
    elif spk.source == "flite":
        cmd = [
            "flite",
            "-voice",
            spk.engine_voice,
            "--setf",
            f"duration_stretch={spk.stretch}",
            "-t",
            text,
            "-o",
            str(wav),
        ]
    elif spk.source == "festival":
        txt = workdir / "text.txt"
        txt.write_bytes(text.encode(spk.encoding or "latin-1"))
        cmd = [
            "text2wave",
            "-eval",
            f"(voice_{spk.engine_voice})",
            "-eval",
            f"(Parameter.set 'Duration_Stretch {spk.stretch})",
            "-o",
            str(wav),
            str(txt),
        ]
    else:
        raise ValueError(f"not a TTS source: {spk.source}")
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    x, rate = sf.read(str(wav), dtype="float64", always_2d=False)
    return to_mono(x), rate


MAX_UTTERANCE_S = 12.0
MIN_PIECE_S = 2.0


def piece_path(out: Path, k: int) -> Path:
    """File of the k-th piece of an utterance longer than MAX_UTTERANCE_S (k = 0: `out`)."""
    return out if k == 0 else out.with_name(f"{out.stem}-{k}{out.suffix}")


def render_speech(job: SpeechJob) -> list[tuple[str, float, str]]:
    """Make one utterance (cut at pauses into pieces of <= 12 s when longer).

    Returns [(path, duration s, '')] per written file, or [(path, 0, error message)].
    """
    out = Path(job.out)
    if out.exists():
        found, k = [], 0
        while piece_path(out, k).exists():
            found.append((str(piece_path(out, k)), sf.info(str(piece_path(out, k))).duration, ""))
            k += 1
        return found
    try:
        if job.clips:
            rng = rng_for(job.seed, job.speaker.id, job.index, "pauses")
            parts = []
            for k, clip in enumerate(job.clips):
                x, rate = read_any(Path(clip))
                y = trim_silence(resample(x, rate, CORPUS_RATE), CORPUS_RATE)
                if len(y) < 0.1 * CORPUS_RATE:
                    continue
                y = set_level(y, active_level_db(y, CORPUS_RATE), SPEECH_LEVEL_DBFS)
                if parts:
                    parts.append(np.zeros(int(rng.uniform(0.12, 0.45) * CORPUS_RATE)))
                parts.append(y)
            if not parts:
                raise ValueError("all clips silent")
            y = finish_speech(np.concatenate(parts), CORPUS_RATE)
        else:
            with tempfile.TemporaryDirectory(prefix="diffsep-tts-") as tmp:
                x, rate = synthesize(job.speaker, job.text, Path(tmp))
            y = finish_speech(x, rate, job.speaker.speed)
        pieces = [y]
        if len(y) > MAX_UTTERANCE_S * CORPUS_RATE:
            cuts = split_at_pauses(y, CORPUS_RATE, MAX_UTTERANCE_S, MIN_PIECE_S)
            pieces = [finish_speech(piece, CORPUS_RATE) for piece in cuts]
        results = []
        for k in reversed(range(len(pieces))):  # `out` last: it marks the job as done
            write_pcm16(piece_path(out, k), pieces[k], CORPUS_RATE)
            results.append((str(piece_path(out, k)), len(pieces[k]) / CORPUS_RATE, ""))
        return results[::-1]
    except (OSError, ValueError, RuntimeError, subprocess.SubprocessError, sf.LibsndfileError) as e:
        message = str(e).splitlines()[0] if str(e) else ""
        return [(job.out, 0.0, f"{type(e).__name__}: {message}")]


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------


def shaped_noise(n: int, rng: np.random.Generator, tilt: float) -> np.ndarray:
    """Gaussian noise with a 1/f^tilt power spectrum and a random smooth EQ, (n,)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / CORPUS_RATE)
    f = np.maximum(freqs, 20.0)
    gain = f ** (-tilt / 2)
    logf = np.log2(f)
    for _ in range(int(rng.integers(0, 5))):  # a few broad EQ bumps or dips in log frequency
        centre = rng.uniform(np.log2(80), np.log2(7000))
        gain *= 10 ** (
            rng.uniform(-12, 12)
            / 20
            * np.exp(-0.5 * ((logf - centre) / rng.uniform(0.3, 1.5)) ** 2)
        )
    return np.fft.irfft(spec * gain, n)


def smooth_envelope(n: int, rng: np.random.Generator, rate_hz: float, depth: float) -> np.ndarray:
    """Slowly varying positive gain curve around 1 (random knots, linear interpolation)."""
    knots = max(2, int(n / CORPUS_RATE * rate_hz) + 2)
    values = 1.0 + depth * rng.uniform(-1, 1, knots)
    return np.interp(np.arange(n), np.linspace(0, n - 1, knots), values)


def synth_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic noise signal of n samples at 16 kHz (not yet level-normalised)."""
    t = np.arange(n) / CORPUS_RATE
    if kind == "colored":  # white .. pink .. brown, with EQ and slow level changes
        return shaped_noise(n, rng, rng.uniform(0.0, 2.2)) * smooth_envelope(
            n, rng, 0.5, rng.uniform(0, 0.5)
        )
    if kind == "hum":  # mains hum with harmonics over a faint noise floor
        f0 = rng.choice([50.0, 60.0]) * (1 + rng.uniform(-0.01, 0.01))
        x = sum(
            rng.uniform(0.1, 1.0)
            / k ** rng.uniform(0.3, 1.5)
            * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, 25)
            if f0 * k < CORPUS_RATE / 2
        )
        noise = shaped_noise(n, rng, rng.uniform(0.5, 2.0))
        return x / np.std(x) + noise / np.std(noise) * 10 ** (rng.uniform(-25, -8) / 20)
    if kind == "machine":  # engine-like harmonic tone with jitter and amplitude modulation
        f0 = rng.uniform(25, 250) * (1 + 0.02 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n))
        phase = 2 * np.pi * np.cumsum(f0) / CORPUS_RATE
        x = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 16))
        am = 1 + rng.uniform(0.1, 0.7) * np.sin(2 * np.pi * rng.uniform(1, 20) * t)
        noise = shaped_noise(n, rng, rng.uniform(0.5, 1.8))
        return x * am / np.std(x) + noise / np.std(noise) * 10 ** (rng.uniform(-15, 0) / 20)
    if kind == "bursts":  # noise switched on and off
        x = shaped_noise(n, rng, rng.uniform(0.0, 2.0))
        gate = np.zeros(n)
        pos = 0
        while pos < n:
            length = int(rng.uniform(0.05, 1.2) * CORPUS_RATE)
            gate[pos : pos + length] = rng.uniform(0.3, 1.0)
            pos += length + int(rng.uniform(0.05, 1.5) * CORPUS_RATE)
        ramp = np.hanning(int(0.01 * CORPUS_RATE))
        gate = np.convolve(gate, ramp / ramp.sum(), mode="same")
        return x * (gate + 10 ** (rng.uniform(-40, -20) / 20))
    if kind == "clicks":  # impulsive events (rain, crackle, typing-like) on a faint floor
        x = np.zeros(n)
        events = rng.poisson(rng.uniform(2, 60) * n / CORPUS_RATE)
        for pos in rng.integers(0, n, events):
            length = int(rng.uniform(0.002, 0.04) * CORPUS_RATE)
            burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
            end = min(n, pos + length)
            x[pos:end] += rng.uniform(0.2, 1.0) * burst[: end - pos]
        floor = shaped_noise(n, rng, rng.uniform(0.5, 2.0))
        return x + floor / np.std(floor) * np.std(x) * 10 ** (rng.uniform(-30, -10) / 20)
    raise ValueError(f"unknown noise kind {kind}")


SYNTH_KINDS = ("colored", "colored", "hum", "machine", "bursts", "clicks")


@dataclass(frozen=True)
class NoiseJob:
    out: str
    kind: str  # a SYNTH_KINDS entry, 'babble', 'typing' or 'file'
    seed: int
    index: int
    seconds: float
    inputs: tuple[str, ...] = ()  # babble utterances, key samples or the source file
    inner: str = ""  # path inside a gcompris .rcc archive


def render_noise(job: NoiseJob) -> tuple[str, float, str]:
    out = Path(job.out)
    if out.exists():
        return job.out, sf.info(str(out)).duration, ""
    try:
        out_path = Path(job.out)  # seeded by split and name, not by where the corpus lives
        rng = rng_for(job.seed, "noise", out_path.parent.name, out_path.name)
        n = int(job.seconds * CORPUS_RATE)
        if job.kind in SYNTH_KINDS:
            x = synth_noise(job.kind, n, rng)
        elif job.kind == "babble":
            x = np.zeros(n)
            for path in job.inputs:
                y, _ = sf.read(path, dtype="float64")
                y = np.tile(y, int(np.ceil(n / len(y))) + 1)
                start = int(rng.integers(0, len(y) - n + 1))
                x += y[start : start + n] * 10 ** (rng.uniform(-4, 4) / 20)
        elif job.kind == "typing":
            x = typing_noise(n, [Path(p) for p in job.inputs], rng)
        elif job.kind == "file":
            data = read_rcc_file(Path(job.inputs[0]), job.inner) if job.inner else None
            if data is not None:
                with tempfile.NamedTemporaryFile(suffix=Path(job.inner).suffix) as fh:
                    fh.write(data)
                    fh.flush()
                    x, rate = sf.read(fh.name, dtype="float64", always_2d=False)
            else:
                x, rate = sf.read(job.inputs[0], dtype="float64", always_2d=False)
            x = resample(to_mono(x), rate, CORPUS_RATE)
            x = trim_silence(x, CORPUS_RATE, below_peak_db=60.0)
        else:
            raise ValueError(f"unknown noise job kind {job.kind}")
        if len(x) < 0.5 * CORPUS_RATE or not np.any(x):
            return job.out, 0.0, "skipped: shorter than 0.5 s or silent"
        y = finish_noise(x, CORPUS_RATE)
        write_pcm16(out, y, CORPUS_RATE)
        return job.out, len(y) / CORPUS_RATE, ""
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError, zlib.error) as e:
        return job.out, 0.0, f"{type(e).__name__}: {e}"


def typing_noise(n: int, key_samples: Sequence[Path], rng: np.random.Generator) -> np.ndarray:
    """Keyboard typing built from recorded key press/release samples (bucklespring)."""
    keys: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for p in key_samples:
        code, _, action = p.stem.partition("-")
        x, rate = sf.read(str(p), dtype="float64", always_2d=False)
        keys[code][action] = resample(to_mono(x), rate, CORPUS_RATE)
    codes = sorted(c for c in keys if "0" in keys[c])
    out = np.zeros(n + CORPUS_RATE)
    pos = int(rng.uniform(0, 0.5) * CORPUS_RATE)
    while pos < n:
        for _ in range(int(rng.integers(3, 25))):  # a burst of typing, then a pause
            code = codes[rng.integers(len(codes))]
            press = keys[code]["0"]
            gain = 10 ** (rng.uniform(-6, 0) / 20)
            out[pos : pos + len(press)] += gain * press[: len(out) - pos]
            release = keys[code].get("1")
            if release is not None:
                at = pos + int(rng.uniform(0.05, 0.16) * CORPUS_RATE)
                out[at : at + len(release)] += gain * release[: max(0, len(out) - at)]
            pos += int(rng.uniform(0.07, 0.28) * CORPUS_RATE)
            if pos >= n:
                break
        pos += int(rng.uniform(0.3, 2.0) * CORPUS_RATE)
    return out[:n]


def rcc_entries(path: Path) -> Iterator[tuple[str, int, int]]:
    """(inner path, flags, data offset) of the files in a Qt resource (.rcc) archive."""
    data = path.read_bytes()
    if data[:4] != b"qres":
        return
    version, tree, payload, names = struct.unpack(">4I", data[4:20])
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        return data[names + offset + 6 : names + offset + 6 + 2 * length].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        node, prefix = stack.pop()
        at = tree + node * node_size
        name_offset, flags = struct.unpack(">IH", data[at : at + 6])
        name = name_at(name_offset) if node else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            stack.extend((first + c, f"{prefix}{name}/") for c in range(count))
        else:
            (offset,) = struct.unpack(">I", data[at + 10 : at + 14])
            yield prefix + name, flags, payload + offset


def read_rcc_file(path: Path, inner: str) -> bytes | None:
    """Bytes of one file inside a .rcc archive (zlib-compressed entries are inflated)."""
    data = path.read_bytes()
    for name, flags, offset in rcc_entries(path):
        if name == inner:
            (size,) = struct.unpack(">I", data[offset : offset + 4])
            blob = data[offset + 4 : offset + 4 + size]
            if flags & 1:  # qCompress: 4-byte big-endian length + zlib stream
                return zlib.decompress(blob[4:])
            if flags & 4:
                raise ValueError(f"zstd-compressed entry not supported: {inner}")
            return blob
    return None


def gcompris_noise_files() -> list[tuple[Path, str]]:
    """(rcc archive, inner path) of the usable gcompris-qt sound effects."""
    found = []
    if not GCOMPRIS_RCC.is_dir():
        return found
    for rcc in sorted(GCOMPRIS_RCC.glob("*.rcc")):
        for inner, _, _ in rcc_entries(rcc):
            if inner.lower().endswith((".ogg", ".wav")) and not GCOMPRIS_EXCLUDE.search(inner):
                found.append((rcc, inner))
    return sorted(found, key=lambda e: (e[0].name, e[1]))


# ---------------------------------------------------------------------------------------------
# Evaluation sets
# ---------------------------------------------------------------------------------------------


def quantize_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale a, b together so that |a+b| <= 0.9, quantise to int16; returns (a, b, a+b) int16."""
    peak = max(np.max(np.abs(a + b)), 1e-9)
    scale = min(1.0, 0.9 / peak)
    qa = np.round(a * scale * 32767).astype(np.int32)
    qb = np.round(b * scale * 32767).astype(np.int32)
    total = qa + qb
    if np.max(np.abs(total)) > 32767:
        raise ValueError("mixture overflows int16")
    return qa.astype(np.int16), qb.astype(np.int16), total.astype(np.int16)


def read_metadata(folder: Path) -> dict[str, dict[str, str]]:
    """name -> row of an evaluation set's metadata.csv ({} when absent)."""
    try:
        with (folder / "metadata.csv").open(newline="", encoding="utf-8") as fh:
            return {row["name"]: row for row in csv.DictReader(fh)}
    except (OSError, KeyError, csv.Error):
        return {}


def is_current(folder: Path, name: str, dirs: Sequence[str], row: dict, previous: dict) -> bool:
    """True when the item's files exist and were made from the same recipe (same metadata)."""
    same = previous.get(name) == {k: str(v) for k, v in row.items()}
    return same and all((folder / d / f"{name}.wav").exists() for d in dirs)


MIN_SEPARATION_S = 1.5


def make_separation_set(root: Path, split: str, rows: list[dict], count: int, seed: int) -> int:
    """WSJ0-2mix 'min'-style 2-speaker mixtures at 8 kHz from two different speaker groups."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    groups = sorted(by_group)
    if len(groups) < 2:
        print(f"  ! sep-8k/{split}: fewer than 2 speaker groups, skipped")
        return 0
    folder = root / "sep-8k" / split
    previous = read_metadata(folder)
    meta = []
    for i in range(count):
        name = f"{split}_{i:04d}"
        rng = rng_for(seed, "sep", split, i)
        for _ in range(20):  # both utterances long enough for a meaningful mixture
            ga, gb = (groups[j] for j in rng.choice(len(groups), 2, replace=False))
            ra = by_group[ga][rng.integers(len(by_group[ga]))]
            rb = by_group[gb][rng.integers(len(by_group[gb]))]
            if min(float(ra["duration"]), float(rb["duration"])) >= MIN_SEPARATION_S:
                break
        gain = float(rng.uniform(-2.5, 2.5))
        meta.append(
            {
                "name": name,
                "s1": ra["path"],
                "s2": rb["path"],
                "s1_gain_db": round(gain, 3),
                "s2_gain_db": round(-gain, 3),
            }
        )
        if is_current(folder, name, ("mix", "s1", "s2"), meta[-1], previous):
            continue
        a = resample(sf.read(root / ra["path"], dtype="float64")[0], CORPUS_RATE, SEPARATION_RATE)
        b = resample(sf.read(root / rb["path"], dtype="float64")[0], CORPUS_RATE, SEPARATION_RATE)
        n = min(len(a), len(b))
        oa = int(rng.integers(0, len(a) - n + 1))
        ob = int(rng.integers(0, len(b) - n + 1))
        a = a[oa : oa + n] * 10 ** (gain / 20)
        b = b[ob : ob + n] * 10 ** (-gain / 20)
        qa, qb, qm = quantize_pair(a, b)
        write_int16(folder / "s1" / f"{name}.wav", qa, SEPARATION_RATE)
        write_int16(folder / "s2" / f"{name}.wav", qb, SEPARATION_RATE)
        write_int16(folder / "mix" / f"{name}.wav", qm, SEPARATION_RATE)
    write_csv(folder / "metadata.csv", meta)
    return count


ENH_SNRS = (-5.0, 0.0, 5.0, 10.0, 15.0)


def make_enhancement_set(
    root: Path, split: str, speech: list[dict], noise: list[dict], count: int, seed: int
) -> int:
    """VoiceBank-DEMAND-style noisy/clean pairs at 16 kHz, SNRs cycling through ENH_SNRS."""
    if not speech or not noise:
        print(f"  ! enh-16k/{split}: no speech or no noise, skipped")
        return 0
    folder = root / "enh-16k" / split
    previous = read_metadata(folder)
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in speech:
        by_group[r["group"]].append(r)
    groups = sorted(by_group)
    meta = []
    for i in range(count):
        name = f"{split}_{i:04d}"
        rng = rng_for(seed, "enh", split, i)
        g = groups[rng.integers(len(groups))]
        rs = by_group[g][rng.integers(len(by_group[g]))]
        rn = noise[rng.integers(len(noise))]
        snr = ENH_SNRS[i % len(ENH_SNRS)]
        meta.append({"name": name, "clean": rs["path"], "noise": rn["path"], "snr_db": snr})
        if is_current(folder, name, ("noisy", "clean"), meta[-1], previous):
            continue
        clean = sf.read(root / rs["path"], dtype="float64")[0]
        nz = sf.read(root / rn["path"], dtype="float64")[0]
        nz = np.tile(nz, int(np.ceil(len(clean) / len(nz))) + 1)
        start = int(rng.integers(0, len(nz) - len(clean) + 1))
        nz = nz[start : start + len(clean)]
        p_clean = np.mean(clean**2)
        p_noise = max(np.mean(nz**2), 1e-20)
        nz = nz * np.sqrt(p_clean / p_noise * 10 ** (-snr / 10))
        qc, _, qn = quantize_pair(clean, nz)
        write_int16(folder / "clean" / f"{name}.wav", qc, CORPUS_RATE)
        write_int16(folder / "noisy" / f"{name}.wav", qn, CORPUS_RATE)
    write_csv(folder / "metadata.csv", meta)
    return count


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

MANIFEST_FIELDS = (
    "path",
    "kind",
    "split",
    "speaker",
    "group",
    "source",
    "language",
    "duration",
    "text",
)


def write_csv(path: Path, rows: list[dict], fields: Sequence[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(fields or (rows[0].keys() if rows else []))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def apt_install(packages: Iterable[str]) -> None:
    packages = list(packages)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run(prefix + ["apt-get", "update"], check=True, env=env)
    subprocess.run(
        prefix + ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )


def run_parallel(fn, jobs: Sequence, workers: int, label: str) -> list[tuple[str, float, str]]:
    """fn over jobs in a process pool (order kept), with a one-line progress display."""
    results = []
    start = time.monotonic()
    if not jobs:
        return results
    tty = sys.stdout.isatty()
    every = 50 if tty else max(1, len(jobs) // 10)
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        for k, res in enumerate(pool.map(fn, jobs, chunksize=4), 1):
            results.append(res)
            if k % every == 0 or k == len(jobs):
                line = f"  {label}: {k}/{len(jobs)} ({time.monotonic() - start:.0f} s)"
                print("\r" + line if tty else line, end="" if tty else "\n", flush=True)
    if tty:
        print()
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="corpus folder to create or complete")
    p.add_argument("--seed", type=int, default=20230411)
    p.add_argument("--small", action="store_true", help="tiny corpus for smoke tests (~2 min)")
    p.add_argument(
        "--apt-install",
        action="store_true",
        help="apt-get update + install the Debian packages used (needs root or sudo)",
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel worker processes")
    p.add_argument("--espeak-speakers", type=int, default=None, help="default 170 (small: 12)")
    p.add_argument("--utts-per-speaker", type=int, default=None, help="TTS; default 32 (small: 3)")
    p.add_argument(
        "--tts-settings",
        type=int,
        default=None,
        help="speed/tempo settings per flite/festival voice; default 3 (small: 1)",
    )
    p.add_argument("--eval-valid", type=int, default=None, help="default 100 (small: 6)")
    p.add_argument("--eval-test", type=int, default=None, help="default 300 (small: 6)")
    p.add_argument(
        "--prune",
        action="store_true",
        help="delete audio under speech/ and noise/ that this run does not list",
    )
    p.add_argument("--valid-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.1)
    args = p.parse_args(argv)
    small = args.small
    defaults = {
        "espeak_speakers": (170, 12),
        "utts_per_speaker": (32, 3),
        "tts_settings": (3, 1),
        "eval_valid": (100, 6),
        "eval_test": (300, 6),
    }
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if small else full)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        os.nice(10)
    except OSError:
        pass
    if args.apt_install:
        apt_install(APT_PACKAGES)
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    small = args.small

    # ---- text
    print("text banks ...")
    languages = sorted(set(ESPEAK_LANGUAGES.values()) | {fv.language for fv in FESTIVAL_VOICES})
    banks = {lang: build_text_bank(lang) for lang in languages}
    usable = {k: v for k, v in banks.items() if v}
    print("  " + ", ".join(f"{k}:{len(v.sentences)}s/{len(v.words)}w" for k, v in usable.items()))

    # ---- speakers
    speakers = plan_espeak(args.espeak_speakers, usable, args.seed)
    speakers += plan_tts(args.tts_settings, 3 if small else None, args.seed, usable)
    recorded = plan_recorded(
        args.seed, 4 if small else None, 3 if small else None, shutil.which("ffmpeg") is not None
    )
    speakers += [spk for spk, _ in recorded]
    if not speakers:
        print("no voices found: install the packages (--apt-install)", file=sys.stderr)
        return 1
    group_source = {}
    for spk in speakers:
        family = "tts" if spk.source in ("flite", "festival") else spk.source
        group_source[spk.group] = family
    split_of = assign_splits(group_source, args.seed, args.valid_frac, args.test_frac)

    # ---- speech jobs
    jobs: list[SpeechJob] = []
    text_of: dict[str, str] = {}
    for spk in speakers:
        if spk.source in ("ktuberling", "asterisk"):
            continue
        for i in range(args.utts_per_speaker):
            text = compose_text(
                usable[spk.language], rng_for(args.seed, "text", spk.id, i), spk.encoding
            )
            out = root / "speech" / split_of[spk.group] / spk.id / f"{i:04d}.wav"
            jobs.append(SpeechJob(spk, i, str(out), text=text, seed=args.seed))
            text_of[str(out)] = text
    for spk, utts in recorded:
        for i, clips in enumerate(utts):
            out = root / "speech" / split_of[spk.group] / spk.id / f"{i:04d}.wav"
            jobs.append(SpeechJob(spk, i, str(out), clips=tuple(map(str, clips)), seed=args.seed))
            text_of[str(out)] = " ".join(Path(c).stem for c in clips)
    print(f"speech: {len(speakers)} speakers, {len(jobs)} utterances to make/check")
    results = run_parallel(render_speech, jobs, args.jobs, "speech")
    rows = []
    failures = Counter()
    for job, outputs in zip(jobs, results):
        for path, duration, error in outputs:
            spk = job.speaker
            if error:
                failures[f"{spk.source}: {error[:80]}"] += 1
                continue
            rows.append(
                {
                    "path": str(Path(path).relative_to(root)),
                    "kind": "speech",
                    "split": split_of[spk.group],
                    "speaker": spk.id,
                    "group": spk.group,
                    "source": spk.source,
                    "language": spk.language,
                    "duration": round(duration, 3),
                    "text": text_of[job.out],
                }
            )

    # ---- noise
    noise_jobs, noise_meta = plan_noise(
        root, rows, args.seed, small, args.valid_frac, args.test_frac
    )
    print(f"noise: {len(noise_jobs)} files to make/check")
    skipped = Counter()
    for path, duration, error in run_parallel(render_noise, noise_jobs, args.jobs, "noise"):
        if error.startswith("skipped:"):
            skipped[f"noise {error.removeprefix('skipped: ')}"] += 1
            continue
        if error:
            failures[f"noise: {error[:80]}"] += 1
            continue
        group, source = noise_meta[path]
        rel = Path(path).relative_to(root)
        rows.append(
            {
                "path": str(rel),
                "kind": "noise",
                "split": rel.parts[1],
                "speaker": "",
                "group": group,
                "source": source,
                "language": "",
                "duration": round(duration, 3),
                "text": "",
            }
        )
    rows.sort(key=lambda r: (r["kind"], r["split"], r["path"]))
    write_csv(root / "manifest.csv", rows, MANIFEST_FIELDS)
    handle_stale_files(root, {r["path"] for r in rows}, args.prune)

    # ---- evaluation sets
    print("evaluation sets ...")
    eval_counts = {}
    for split, count in (("valid", args.eval_valid), ("test", args.eval_test)):
        speech = [r for r in rows if r["kind"] == "speech" and r["split"] == split]
        noise = [r for r in rows if r["kind"] == "noise" and r["split"] == split]
        eval_counts[f"sep-8k/{split}"] = make_separation_set(root, split, speech, count, args.seed)
        eval_counts[f"enh-16k/{split}"] = make_enhancement_set(
            root, split, speech, noise, count, args.seed
        )

    # ---- summary
    summary = summarize(rows, eval_counts, failures, args)
    summary["skipped"] = dict(skipped)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (root / "SOURCES.md").write_text(SOURCES_TEXT)
    print_summary(summary)
    print(f"done in {time.monotonic() - t0:.0f} s -> {root}")
    return 0


def plan_noise(
    root: Path, rows: list[dict], seed: int, small: bool, valid_frac: float, test_frac: float
) -> tuple[list[NoiseJob], dict[str, tuple[str, str]]]:
    """Noise jobs of every split and, per output path, its (group, source) for the manifest."""
    noise_jobs: list[NoiseJob] = []
    noise_meta: dict[str, tuple[str, str]] = {}  # out -> (group, source)
    seconds = 4.0 if small else 10.0
    n_synth = (
        {"train": 6, "valid": 2, "test": 2} if small else {"train": 240, "valid": 30, "test": 30}
    )
    n_babble = (
        {"train": 1, "valid": 1, "test": 1} if small else {"train": 40, "valid": 6, "test": 6}
    )
    for split in SPLITS:
        for i in range(n_synth[split]):
            kind = SYNTH_KINDS[i % len(SYNTH_KINDS)]
            out = str(root / "noise" / split / f"synth-{kind}_{i:04d}.wav")
            noise_jobs.append(NoiseJob(out, kind, seed, i, seconds))
            noise_meta[out] = (f"synth-{kind}", "synthetic")
        pool = [r for r in rows if r["split"] == split]
        for i in range(n_babble[split] if len(pool) >= 4 else 0):
            rng = rng_for(seed, "babble", split, i)
            picks = rng.choice(len(pool), min(len(pool), int(rng.integers(4, 9))), replace=False)
            inputs = tuple(str(root / pool[j]["path"]) for j in picks)
            names = "\n".join(pool[j]["path"] for j in picks)
            digest = hashlib.sha256(names.encode()).hexdigest()[:8]
            out = str(root / "noise" / split / f"babble_{i:04d}_{digest}.wav")
            noise_jobs.append(
                NoiseJob(
                    out,
                    "babble",
                    seed,
                    i,
                    seconds,
                    inputs,
                )
            )
            noise_meta[out] = ("babble", "babble of corpus speech (same split)")
    gcompris = gcompris_noise_files()
    if small:
        gcompris = [gcompris[i] for i in sorted(rng_for(seed, "gc").permutation(len(gcompris))[:9])]
    order = rng_for(seed, "gcompris-split").permutation(len(gcompris))
    n_gc = len(gcompris)
    n_test = max(1, round(n_gc * test_frac)) if n_gc >= 3 else 0
    n_valid = max(1, round(n_gc * valid_frac)) if n_gc >= 3 else 0
    for rank, idx in enumerate(order):
        rcc, inner = gcompris[idx]
        split = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
        stem = re.sub(
            r"[^A-Za-z0-9_-]+", "-", f"{Path(inner).parent.parent.name}-{Path(inner).stem}"
        )
        out = str(root / "noise" / split / f"gcompris_{stem}.wav")
        noise_jobs.append(NoiseJob(out, "file", seed, rank, 0.0, (str(rcc),), inner))
        noise_meta[out] = (f"gcompris-{stem}", "gcompris-qt-data")
    if BUCKLESPRING_ROOT.is_dir():
        codes = sorted({p.stem.partition("-")[0] for p in BUCKLESPRING_ROOT.glob("*.wav")})
        perm = [codes[i] for i in rng_for(seed, "keys").permutation(len(codes))]
        k_test, k_valid = max(1, len(codes) // 10), max(1, len(codes) // 10)
        key_split = {
            c: "test" if r < k_test else "valid" if r < k_test + k_valid else "train"
            for r, c in enumerate(perm)
        }
        n_typing = (
            {"train": 1, "valid": 1, "test": 1} if small else {"train": 16, "valid": 2, "test": 2}
        )
        for split in SPLITS:
            samples = tuple(
                str(p)
                for p in sorted(BUCKLESPRING_ROOT.glob("*.wav"))
                if key_split[p.stem.partition("-")[0]] == split
            )
            for i in range(n_typing[split] if samples else 0):
                out = str(root / "noise" / split / f"typing_{i:04d}.wav")
                noise_jobs.append(NoiseJob(out, "typing", seed, i, seconds, samples))
                noise_meta[out] = (f"typing-{split}", "bucklespring-data")
    return noise_jobs, noise_meta


def handle_stale_files(root: Path, listed: set[str], prune: bool) -> None:
    """Audio under speech/ and noise/ that this run does not list: deleted with --prune,
    else reported (folder-based datasets would read them)."""
    stale = [
        p
        for folder in ("speech", "noise")
        for p in sorted((root / folder).rglob("*.wav"))
        if str(p.relative_to(root)) not in listed
    ]
    if not stale:
        return
    if prune:
        for p in stale:
            p.unlink()
        print(f"  removed {len(stale)} stale files not in this run's plan")
    else:
        print(
            f"  ! {len(stale)} files under speech/ or noise/ are not in manifest.csv "
            f"(e.g. {stale[0].relative_to(root)}); --prune removes them"
        )


def summarize(rows: list[dict], eval_counts: dict, failures: Counter, args) -> dict:
    out: dict = {
        "seed": args.seed,
        "small": args.small,
        "splits": {},
        "eval_sets": eval_counts,
        "failures": dict(failures),
    }
    for split in SPLITS:
        speech = [r for r in rows if r["kind"] == "speech" and r["split"] == split]
        noise = [r for r in rows if r["kind"] == "noise" and r["split"] == split]
        by_source = defaultdict(lambda: {"speakers": set(), "utterances": 0, "hours": 0.0})
        for r in speech:
            entry = by_source[r["source"]]
            entry["speakers"].add(r["speaker"])
            entry["utterances"] += 1
            entry["hours"] += r["duration"] / 3600
        noise_by_source = Counter()
        for r in noise:
            noise_by_source[r["source"]] += r["duration"] / 60
        out["splits"][split] = {
            "speakers": len({r["speaker"] for r in speech}),
            "groups": len({r["group"] for r in speech}),
            "utterances": len(speech),
            "hours": round(sum(r["duration"] for r in speech) / 3600, 3),
            "by_source": {
                k: {
                    "speakers": len(v["speakers"]),
                    "utterances": v["utterances"],
                    "hours": round(v["hours"], 3),
                }
                for k, v in sorted(by_source.items())
            },
            "noise_files": len(noise),
            "noise_minutes": round(sum(r["duration"] for r in noise) / 60, 2),
            "noise_minutes_by_source": {k: round(v, 2) for k, v in sorted(noise_by_source.items())},
        }
    return out


def print_summary(summary: dict) -> None:
    print(
        f"{'split':<6} {'speakers':>8} {'groups':>6} {'utts':>7} {'hours':>7} {'noise':>6} {'noise min':>9}"
    )
    for split, s in summary["splits"].items():
        print(
            f"{split:<6} {s['speakers']:>8} {s['groups']:>6} {s['utterances']:>7} {s['hours']:>7.2f}"
            f" {s['noise_files']:>6} {s['noise_minutes']:>9.1f}"
        )
        for source, b in s["by_source"].items():
            print(
                f"  {source:<12} {b['speakers']:>5} spk {b['utterances']:>6} utts {b['hours']:>6.2f} h"
            )
    for name, n in summary["eval_sets"].items():
        print(f"{name}: {n} items")
    if summary["failures"]:
        print("failures:")
        for msg, n in summary["failures"].items():
            print(f"  {n} x {msg}")


SOURCES_TEXT = """\
# Sources of this corpus

Built by diffsep's recipes/make_corpus.py from Debian packages (bookworm). The corpus is for
training and evaluating models; the licences below apply to the source recordings/voices.

| source | package(s) | licence |
| --- | --- | --- |
| espeak-ng voices | espeak-ng, espeak-ng-data | GPL-3+ |
| flite voices (kal16, awb, rms, slt) | flite | BSD-style (CMU Flite licence), some files GPL-2 |
| festival + voices | festival, festlex-cmu, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts, festvox-italp16k, festvox-itapc16k, festvox-suopuhe-lj, festvox-suopuhe-mv, festvox-czech-{dita,krb,machac,ph}, festvox-ru, festvox-ca-ona-hts | kal, ked, slt, ona: BSD/MIT-style (CMU, Festvox); Italian: GPL-2+; Finnish: LGPL-2+; Czech: GPL-3+; Russian: BSD-like and GPL-3 |
| recorded words | ktuberling-data | GPL-2+ |
| recorded IVR prompts (Allison Smith, June Wallack, Carlo, IvrvoiceRU) | asterisk-core-sounds-{en,es,fr,it,ru}-g722 | CC-BY-SA-3.0 |
| sound effects used as noise | gcompris-qt-data | GPL-3+, some files CC-BY / CC-BY-SA / public domain (see /usr/share/doc/gcompris-qt-data/copyright) |
| keyboard key samples (typing noise) | bucklespring-data | GPL-2+ |
| text | gettext catalogues of installed packages, /usr/share/common-licenses, w* word lists | per package |

Synthetic noise (colored, hum, machine, bursts, clicks) and babble are generated by the recipe.
"""


if __name__ == "__main__":
    sys.exit(main())
