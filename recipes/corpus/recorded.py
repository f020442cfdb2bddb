"""Recorded-voice clip collections: ktuberling words, KLettres letters/syllables, Asterisk
IVR prompts, Tux Paint's stamp descriptions. Each folder (Tux Paint: each language) is one
speaker; its clips are joined into utterances."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import rng_for
from .speech import Speaker

KTUBERLING_ROOT = Path("/usr/share/ktuberling/sounds")
KLETTRES_ROOT = Path("/usr/share/klettres")
ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")  # tuxpaint-stamps-default
# a stamp's spoken description: NAME_desc.ogg (English) or NAME_desc_LANG.ogg
TUXPAINT_DESC = re.compile(r".+_desc(?:_([a-z]{2,3}(?:_[A-Z]{2})?))?\.ogg")
TUXPAINT_MIN_CLIPS = 20  # languages with fewer recorded descriptions are left out


@dataclass(frozen=True)
class AsteriskVoice:
    folder: str  # under ASTERISK_ROOT
    person: str  # recorded person (group)
    language: str
    suffix: str  # clip format


# Allison Smith recorded both the English and the Spanish core prompts.
ASTERISK_VOICES = (
    AsteriskVoice("en_US_f_Allison", "allison", "en", ".g722"),
    AsteriskVoice("es_MX_f_Allison", "allison", "es", ".g722"),
    AsteriskVoice("fr_CA_f_June", "june", "fr", ".g722"),
    AsteriskVoice("it_IT_m_Carlo", "carlo", "it", ".g722"),
    AsteriskVoice("ru_RU_f_IvrvoiceRU", "ivrvoice-ru", "ru", ".g722"),
    AsteriskVoice("it_IT_f_Menardi", "menardi", "it", ".wav"),  # asterisk-prompt-it-menardi-wav
    AsteriskVoice("fr", "armelle", "fr", ".gsm"),  # asterisk-prompt-fr-armelle
    AsteriskVoice("es", "es-co", "es", ".gsm"),  # asterisk-prompt-es-co (Colombian Spanish)
)
# prompts that are tones or animal noises, not speech
ASTERISK_NOT_SPEECH = {"ascending-2tone", "descending-2tone", "beep", "beeperr", "tt-monkeys"}
# approximate bytes per second of each clip format (to make utterances of >= 3 s)
BYTES_PER_SECOND = {".g722": 8000, ".gsm": 1650, ".wav": 16000}
FFMPEG_FORMATS = (".g722", ".gsm")


def kde_group(language_folder: str) -> str:
    """Group of a KDE-Edu recording folder (ktuberling, KLettres): one per base language.

    Both games are recorded by KDE translators; the same person may have recorded a
    language for both, so they share the group (`en`, `en_GB` and `en@x` -> `kde-en`)."""
    return "kde-" + language_folder.split("@")[0].split("_")[0].lower()


def _content_digest(clips: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for clip in clips:
        digest.update(clip.read_bytes())
    return digest.hexdigest()


def unique_folders(folders: Sequence[tuple[str, list[Path]]]) -> list[tuple[str, list[Path]]]:
    """(name, clips) with folders holding byte-identical recordings merged (first name kept)."""
    by_content: dict[str, tuple[str, list[Path]]] = {}
    for name, clips in folders:
        if clips:
            by_content.setdefault(_content_digest(clips), (name, clips))
    return sorted(by_content.values())


def ktuberling_folders(root: Path = KTUBERLING_ROOT) -> list[tuple[str, list[Path]]]:
    """(language folder, clips) of ktuberling-data's recorded words."""
    if not root.is_dir():
        return []
    return unique_folders([
        (folder.name, sorted(p for p in folder.iterdir() if p.suffix in (".ogg", ".wav", ".flac")))
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
    ])


def klettres_folders(root: Path = KLETTRES_ROOT) -> list[tuple[str, list[Path]]]:
    """(language folder, clips) of klettres-data's spoken letters and syllables."""
    if not root.is_dir():
        return []
    return unique_folders([
        (folder.name, sorted(folder.rglob("*.ogg")))
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
    ])


def asterisk_folders(root: Path = ASTERISK_ROOT, ffmpeg: bool = True):
    """(voice, clips) of the installed Asterisk prompt sets (raw codecs need ffmpeg)."""
    out: list[tuple[AsteriskVoice, list[Path]]] = []
    for voice in ASTERISK_VOICES:
        if voice.suffix in FFMPEG_FORMATS and not ffmpeg:
            continue
        clips = sorted(
            p
            for p in (root / voice.folder).rglob(f"*{voice.suffix}")
            if "silence" not in p.parts and p.stem not in ASTERISK_NOT_SPEECH
        )
        if clips:
            out.append((voice, clips))
    return out


def tuxpaint_folders(root: Path | None = None) -> list[tuple[str, list[Path]]]:
    """(language, clips) of Tux Paint's spoken stamp descriptions under root (default
    TUXPAINT_ROOT), one volunteer voice per language; byte-identical copies (stamps sharing a
    recording) dropped."""
    root = TUXPAINT_ROOT if root is None else root
    if not root.is_dir():
        return []
    by_language: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(root.rglob("*_desc*.ogg")):
        match = TUXPAINT_DESC.fullmatch(path.name)
        if match:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            by_language[match.group(1) or "en"].setdefault(digest, path)
    return [(language, sorted(clips.values())) for language, clips in sorted(by_language.items())
            if len(clips) >= TUXPAINT_MIN_CLIPS]


def plan_tuxpaint(
    seed: int, max_folders: int | None, max_utts: int | None, held_out_languages: set[str]
) -> list[tuple[Speaker, list[list[Path]]]]:
    """Tux Paint voices for the train split only, with their utterances (2-3 descriptions
    each). Languages in `held_out_languages` (those of the valid and test splits' KDE
    recordings: volunteers of one language may have recorded for both projects) are left out."""
    folders = [(lang, clips) for lang, clips in tuxpaint_folders()
               if lang.split("_")[0] not in held_out_languages]
    if max_folders is not None:
        rng = rng_for(seed, "tuxpaint-plan")
        folders = [folders[i] for i in sorted(rng.permutation(len(folders))[:max_folders])]
    plans = []
    for language, clips in folders:
        spk = Speaker(f"tuxpaint_{language}", f"tuxpaint-{language}", "tuxpaint", language)
        plans.append((spk, group_clips(clips, rng_for(seed, spk.id), 2, 3, max_utts)))
    return plans


def group_clips(
    clips: Sequence[Path],
    rng: np.random.Generator,
    lo: int,
    hi: int,
    max_utts: int | None,
    min_seconds: float = 0.0,
) -> list[list[Path]]:
    """Shuffled clips cut into consecutive utterances of lo..hi clips (and >= min_seconds,
    estimated from file sizes)."""
    order = [clips[i] for i in rng.permutation(len(clips))]

    def seconds(utt: list[Path]) -> float:
        return sum(p.stat().st_size / BYTES_PER_SECOND.get(p.suffix, 16000) for p in utt)

    utts: list[list[Path]] = []
    k = 0
    while k < len(order):
        n = int(rng.integers(lo, hi + 1))
        utt = order[k : k + n]
        k += n
        while min_seconds and seconds(utt) < min_seconds and k < len(order):
            utt.append(order[k])
            k += 1
        utts.append(utt)
    return utts[:max_utts] if max_utts is not None else utts


def plan_recorded(
    seed: int, max_folders: int | None, max_utts: int | None, have_ffmpeg: bool
) -> list[tuple[Speaker, list[list[Path]]]]:
    """Recorded-voice speakers with their utterances, each a list of clips to join."""
    rng = rng_for(seed, "recorded-plan")
    kt = ktuberling_folders()
    kl = klettres_folders()
    ast = asterisk_folders(ffmpeg=have_ffmpeg)
    if max_folders is not None:
        kt = [kt[i] for i in sorted(rng.permutation(len(kt))[:max_folders])]
        ast = [ast[i] for i in sorted(rng.permutation(len(ast))[:max_folders])]
        kl = [kl[i] for i in sorted(rng.permutation(len(kl))[:max_folders])]
    plans = []
    for source, folders in (("ktuberling", kt), ("klettres", kl)):
        for name, clips in folders:
            safe = name.replace("@", "-")
            spk = Speaker(f"{source}_{safe}", kde_group(name), source, name.split("@")[0])
            plans.append((spk, group_clips(clips, rng_for(seed, spk.id), 3, 5, max_utts)))
    for voice, clips in ast:
        spk = Speaker(f"asterisk_{voice.folder}", f"asterisk-{voice.person}", "asterisk",
                      voice.language)
        plans.append((spk, group_clips(clips, rng_for(seed, spk.id), 1, 3, max_utts, 3.0)))
    return plans
