"""Speakers, utterance jobs and the worker that renders one utterance (TTS, clips or a blob).

Workers are top-level functions: they run in a process pool.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import (
    CORPUS_RATE,
    SPEECH_LEVEL_DBFS,
    active_level_db,
    finish_speech,
    read_any,
    read_bytes,
    resample,
    rng_for,
    set_level,
    split_at_pauses,
    to_mono,
    trim_silence,
    write_pcm16,
)
from .errors import CorpusError

# sources whose audio is a recorded human voice (the rest is TTS)
RECORDED_SOURCES = ("ktuberling", "klettres", "asterisk", "fotaq", "tuxpaint")
# source -> family: groups are drawn into splits separately within each family
SOURCE_FAMILY = {"flite": "tts", "festival": "tts", "ktuberling": "kde", "klettres": "kde"}


@dataclass(frozen=True)
class Speaker:
    """One speaker setting: a TTS voice with its perturbation, or one recorded voice."""

    id: str  # folder name under speech/<split>/
    group: str  # identity of the underlying person/voice; splits never share a group
    source: str  # espeak | flite | festival | ktuberling | klettres | asterisk | fotaq | tuxpaint
    language: str
    engine_voice: str = ""
    variant: str = ""  # espeak-ng voice variant
    pitch: int = 50
    rate: int = 175
    speed: float = 1.0
    stretch: float = 1.0
    encoding: str | None = None

    @property
    def recorded(self) -> bool:
        """True for a recorded human voice, False for a TTS voice."""
        return self.source in RECORDED_SOURCES

    @property
    def family(self) -> str:
        return SOURCE_FAMILY.get(self.source, self.source)


@dataclass(frozen=True)
class SpeechJob:
    """One utterance to make: TTS `text`, recorded `clips` to join, or one encoded `blob`
    (file, byte offset, byte count) inside an archive."""

    speaker: Speaker
    index: int
    out: str
    text: str = ""
    clips: tuple[str, ...] = ()
    blob: tuple[str, int, int] | None = None
    seed: int = 0


def tool_output(command: list[str]) -> str:
    """stdout of a command; "" when the tool is missing or fails."""
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def tts_command(spk: Speaker, text: str, workdir: Path) -> list[str]:
    """Command line that makes `workdir/tts.wav` from text with the speaker's engine."""
    wav = str(workdir / "tts.wav")
    if spk.source == "espeak":
        voice = f"{spk.engine_voice}+{spk.variant}"
        return ["espeak-ng", "-v", voice, "-p", str(spk.pitch), "-s", str(spk.rate), "-w", wav,
                text]
    if spk.source == "flite":
        return ["flite", "-voice", spk.engine_voice, "--setf", f"duration_stretch={spk.stretch}",
                "-t", text, "-o", wav]
    if spk.source == "festival":
        txt = workdir / "text.txt"
        txt.write_bytes(text.encode(spk.encoding or "latin-1"))
        return ["text2wave", "-eval", f"(voice_{spk.engine_voice})",
                "-eval", f"(Parameter.set 'Duration_Stretch {spk.stretch})", "-o", wav, str(txt)]
    raise ValueError(f"not a TTS source: {spk.source}")


def synthesize(spk: Speaker, text: str, workdir: Path) -> tuple[np.ndarray, float]:
    """Raw TTS audio (N,) and its rate for text."""
    subprocess.run(tts_command(spk, text, workdir), check=True, capture_output=True, timeout=120)
    x, rate = sf.read(str(workdir / "tts.wav"), dtype="float64", always_2d=False)
    return to_mono(x), rate


def join_clips(clips: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Recorded clips trimmed, levelled one by one and joined with 0.12-0.45 s pauses (16 kHz)."""
    parts: list[np.ndarray] = []
    for clip in clips:
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
    return np.concatenate(parts)


def read_blob(file: str, offset: int, size: int) -> tuple[np.ndarray, float]:
    """Decode `size` bytes at `offset` of `file` (an encoded audio file inside an archive)."""
    with open(file, "rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise CorpusError(f"{file}: truncated entry at byte {offset}")
    return read_bytes(data)


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
            y = finish_speech(join_clips(job.clips, rng), CORPUS_RATE)
        elif job.blob is not None:
            x, rate = read_blob(*job.blob)
            y = finish_speech(x, rate)
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

