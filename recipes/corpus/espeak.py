"""espeak-ng speakers: (language voice, variant, pitch, rate) settings; group = variant."""

from __future__ import annotations

from .audio import rng_for
from .speech import Speaker, tool_output
from .text import TextBank

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


def available_espeak_voices() -> set[str]:
    lines = tool_output(["espeak-ng", "--voices"]).splitlines()[1:]
    return {line.split()[1] for line in lines if len(line.split()) > 1}


def available_espeak_variants() -> set[str]:
    found = set()
    for line in tool_output(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            found.add(cols[4][3:])
    return found


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

