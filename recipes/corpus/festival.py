"""flite and festival speakers: each voice at a few speed / duration-stretch settings;
group = the recorded person behind the voice."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .audio import rng_for
from .speech import Speaker, tool_output
from .text import TextBank

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


def available_flite_voices() -> set[str]:
    return set(tool_output(["flite", "-lv"]).replace("Voices available:", "").split())


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

