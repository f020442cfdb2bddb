"""Audio files in and out: validation, streaming reads at the model rate, atomic streaming writes.

Arrays are numpy ``(C, N) float32`` (channels first). Everything that can process a long file
does so block by block, so memory does not grow with the file's duration:

* :func:`stream_model_audio` reads an input file in blocks, applies the channel policy and
  resamples to the model rate with a streaming soxr resampler;
* :class:`AtomicAudioWriter` writes blocks to a hidden temporary file next to the output,
  optionally resampling them back to the input rate, and renames it over the output only when
  everything was written; :class:`AtomicGroup` commits several outputs (s1 … sK of one input)
  together.

User-caused problems raise :class:`~diffsep.errors.AudioError` (inputs),
:class:`~diffsep.errors.OutputError` (outputs) or :class:`~diffsep.errors.ConfigError` (options),
each with a one-line message that names the file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr

from diffsep.errors import AudioError, ConfigError, OutputError

ChannelMode = Literal["mix", "first", "each"] | int
"""How a multi-channel input becomes model input.

``"mix"`` (default): average all channels into one mono mixture. ``"first"`` or an int ``i``
(0-based): use that single channel. ``"each"``: keep every channel, each is separated on its own.
"""

ResampleQuality = Literal["HQ", "VHQ"]

DEFAULT_BLOCK_FRAMES = 1 << 16
"""Frames read from the input per block (at the input rate)."""

SAMPLE_FORMATS: dict[str, str] = {"int16": "PCM_16", "int24": "PCM_24", "float32": "FLOAT"}
"""CLI-style sample formats (``--int24``, ``--float32``) -> libsndfile subtypes."""

# Output extension -> (libsndfile format, default subtype).
_OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "oga": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
    "aif": ("AIFF", "PCM_16"),
    "aifc": ("AIFF", "PCM_16"),
    "au": ("AU", "PCM_16"),
    "snd": ("AU", "PCM_16"),
    "caf": ("CAF", "PCM_16"),
    "w64": ("W64", "PCM_16"),
    "rf64": ("RF64", "PCM_16"),
}
_LOSSY_SUBTYPES = frozenset({"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"})
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_LOW_DISK_BYTES = 16 << 20


# --------------------------------------------------------------------------------------------
# Inspecting and reading inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What an input file holds. ``frames`` counts samples per channel at ``sample_rate``."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise AudioError(f"{path}: cannot read ({err.strerror or err})") from None


def _libsndfile_reason(err: BaseException) -> str:
    """The useful part of a soundfile/libsndfile/OS error, on one line."""
    text = getattr(err, "error_string", None) or getattr(err, "strerror", None) or str(err)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else type(err).__name__
    return reason.removeprefix("Error : ").rstrip(".")


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Validate an input file and describe it; raises AudioError if it cannot be used.

    Rejects: a missing path, a folder, an unreadable file, anything libsndfile cannot open
    (not audio, corrupt, unsupported), and files with no samples.
    """
    path = Path(path)
    _check_readable_file(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(
            f"{path}: not a readable audio file ({_libsndfile_reason(err)})"
        ) from None
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"{path}: invalid header ({info.samplerate} Hz, {info.channels} channels)")
    if info.frames <= 0:
        raise AudioError(f"{path}: empty audio file (0 samples)")
    return AudioInfo(
        path=path,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def _first_non_finite(frames: np.ndarray) -> int | None:
    """Index of the first frame (row of an ``(n, C)`` array) holding NaN/Inf, else None."""
    finite = np.isfinite(frames)
    if finite.all():
        return None
    bad_rows = ~finite.reshape(frames.shape[0], -1).all(axis=1)
    return int(np.argmax(bad_rows))


def _non_finite_error(path: Path, frame: int, sample_rate: int) -> AudioError:
    return AudioError(
        f"{path}: contains NaN or Inf samples (first at {frame / sample_rate:.3f} s, "
        f"sample {frame})"
    )


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a whole file: ``((C, N) float32, sample_rate)``. For short files (tests, evaluation).

    Same validation as :func:`probe_audio`, plus a NaN/Inf check.
    """
    info = probe_audio(path)
    try:
        data, rate = sf.read(str(info.path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"{info.path}: cannot decode ({_libsndfile_reason(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{info.path}: no audio samples could be decoded")
    bad = _first_non_finite(data)
    if bad is not None:
        raise _non_finite_error(info.path, bad, int(rate))
    return np.ascontiguousarray(data.T), int(rate)


def check_min_length(info: AudioInfo, min_frames: int, rate: int) -> None:
    """Raise AudioError if ``info``'s file, resampled to ``rate`` Hz, is under ``min_frames``.

    Used to reject inputs shorter than what the model can process (e.g. one STFT frame).
    """
    frames = resampled_length(info.frames, info.sample_rate, rate)
    if frames < min_frames:
        raise AudioError(
            f"{info.path}: too short ({info.duration:.3f} s = {frames} samples at {rate} Hz); "
            f"at least {min_frames} samples ({min_frames / rate:.3f} s) are needed"
        )


# --------------------------------------------------------------------------------------------
# Channels and resampling
# --------------------------------------------------------------------------------------------


def parse_channel_mode(value: str | int) -> ChannelMode:
    """CLI text -> ChannelMode: ``mix``, ``first``, ``each`` or a 0-based channel index."""
    if isinstance(value, int):
        index = value
    else:
        text = value.strip().lower()
        if text in ("mix", "first", "each"):
            return text  # type: ignore[return-value]
        try:
            index = int(text)
        except ValueError:
            raise ConfigError(
                f"invalid channel mode {value!r}: use 'mix', 'first', 'each' or a channel "
                "index (0, 1, ...)"
            ) from None
    if index < 0:
        raise ConfigError(f"invalid channel index {index}: channels are numbered from 0")
    return index


def output_channels(mode: ChannelMode, channels: int) -> int:
    """Number of model-input channels C' that ``mode`` makes of a ``channels``-channel file."""
    return channels if mode == "each" else 1


def _check_channel_mode(path: Path, mode: ChannelMode, channels: int) -> None:
    if mode in ("mix", "first", "each"):
        return
    if not isinstance(mode, int) or isinstance(mode, bool) or mode < 0:
        raise ConfigError(f"invalid channel mode {mode!r}")
    if mode >= channels:
        raise AudioError(
            f"{path}: has {channels} channel(s); channel {mode} was requested (0-based)"
        )


def apply_channel_mode(frames: np.ndarray, mode: ChannelMode) -> np.ndarray:
    """``(n, C)`` frames -> ``(n, C')`` frames following ``mode`` (see :data:`ChannelMode`)."""
    if mode == "each":
        return frames
    if mode == "mix":
        if frames.shape[1] == 1:
            return frames
        return frames.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    index = 0 if mode == "first" else int(mode)
    return frames[:, index : index + 1]


def resampled_length(frames: int, in_rate: int, out_rate: int) -> int:
    """Exact length of ``frames`` samples resampled from ``in_rate`` to ``out_rate``.

    ``floor(frames * out_rate / in_rate + 1/2)`` in integer arithmetic (halves round up, as soxr
    does); both the streaming reader and the writer produce exactly this many samples.
    """
    if in_rate == out_rate:
        return frames
    return (2 * frames * out_rate + in_rate) // (2 * in_rate)


class StreamResampler:
    """Streaming soxr resampler with an exact total length (see :func:`resampled_length`).

    ``process((n, C) float32) -> (m, C)`` for each block, then ``flush() -> (m, C)`` once.
    soxr compensates its own delay, so the concatenated output is aligned with the input and
    equals one-shot resampling; the last few frames are held back so the total can be trimmed
    or zero-padded to the exact length at the end.
    """

    _HOLD = 16  # output frames held back until flush (soxr can overshoot by one frame)

    def __init__(
        self, in_rate: int, out_rate: int, channels: int, quality: ResampleQuality = "HQ"
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ConfigError(f"invalid sample rates {in_rate} -> {out_rate}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.channels = int(channels)
        self.in_frames = 0
        self.out_frames = 0
        self._passthrough = self.in_rate == self.out_rate
        self._stream = (
            None
            if self._passthrough
            else soxr.ResampleStream(
                self.in_rate, self.out_rate, self.channels, dtype="float32", quality=quality
            )
        )
        self._held = np.zeros((0, self.channels), dtype=np.float32)
        self._done = False

    def process(self, frames: np.ndarray) -> np.ndarray:
        """Resample one ``(n, C)`` float32 block; returns ``(m, C)`` (m may be 0)."""
        if self._done:
            raise RuntimeError("StreamResampler.process() after flush()")
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        self.in_frames += frames.shape[0]
        if self._passthrough:
            self.out_frames += frames.shape[0]
            return frames
        assert self._stream is not None
        out = self._stream.resample_chunk(frames)
        pending = np.concatenate([self._held, out]) if self._held.shape[0] else out
        ready = max(pending.shape[0] - self._HOLD, 0)
        self._held = pending[ready:].copy()
        self.out_frames += ready
        return pending[:ready]

    def flush(self) -> np.ndarray:
        """Emit the remaining frames; the total is then exactly ``resampled_length(in_frames)``."""
        if self._done:
            raise RuntimeError("StreamResampler.flush() called twice")
        self._done = True
        if self._passthrough:
            return np.zeros((0, self.channels), dtype=np.float32)
        assert self._stream is not None
        tail = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        pending = np.concatenate([self._held, tail])
        self._held = pending[:0]
        remaining = resampled_length(self.in_frames, self.in_rate, self.out_rate) - self.out_frames
        remaining = max(remaining, 0)
        if pending.shape[0] < remaining:
            pad = np.zeros((remaining - pending.shape[0], self.channels), np.float32)
            pending = np.concatenate([pending, pad])
        pending = pending[:remaining]
        self.out_frames += pending.shape[0]
        return pending


def resample(audio: np.ndarray, in_rate: int, out_rate: int, quality: ResampleQuality = "HQ"
             ) -> np.ndarray:
    """One-shot ``(C, N) -> (C, M)`` float32 resampling, ``M = resampled_length(N, ...)``."""
    audio = np.asarray(audio, dtype=np.float32)
    resampler = StreamResampler(in_rate, out_rate, audio.shape[0], quality)
    frames = np.ascontiguousarray(audio.T)
    out = np.concatenate([resampler.process(frames), resampler.flush()])
    return np.ascontiguousarray(out.T)


# --------------------------------------------------------------------------------------------
# Streaming reader
# --------------------------------------------------------------------------------------------


class ModelAudioStream(Iterator[np.ndarray]):
    """Iterator over ``(C', n) float32`` blocks of one input at the model rate.

    Built by :func:`stream_model_audio`. Single use; the file is opened on the first block and
    closed when the stream is exhausted, on :meth:`close`, or when leaving a ``with`` block.
    ``info`` describes the file (probed eagerly); ``channels`` is C'; ``expected_frames`` the
    model-rate length computed from the header, ``frames`` the model-rate samples yielded so far
    (equal to ``expected_frames`` at the end unless the header's frame count was wrong).
    """

    def __init__(
        self,
        info: AudioInfo,
        model_rate: int,
        channel_mode: ChannelMode,
        block_frames: int,
        quality: ResampleQuality,
    ) -> None:
        self.info = info
        self.model_rate = int(model_rate)
        self.channel_mode = channel_mode
        self.channels = output_channels(channel_mode, info.channels)
        self.expected_frames = resampled_length(info.frames, info.sample_rate, self.model_rate)
        self.frames = 0
        self._block_frames = int(block_frames)
        self._quality = quality
        self._blocks = self._generate()

    def __iter__(self) -> ModelAudioStream:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._blocks)

    def close(self) -> None:
        """Stop early and close the file."""
        self._blocks.close()

    def __enter__(self) -> ModelAudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _generate(self) -> Iterator[np.ndarray]:
        info = self.info
        path = info.path
        resampler = StreamResampler(info.sample_rate, self.model_rate, self.channels,
                                    self._quality)
        try:
            handle = sf.SoundFile(str(path))
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise AudioError(f"{path}: cannot open ({_libsndfile_reason(err)})") from None
        with handle:
            position = 0  # input frames read so far
            while True:
                try:
                    block = handle.read(self._block_frames, dtype="float32", always_2d=True)
                except (sf.SoundFileError, RuntimeError) as err:
                    raise AudioError(
                        f"{path}: cannot decode at {position / info.sample_rate:.3f} s "
                        f"({_libsndfile_reason(err)})"
                    ) from None
                if block.shape[0] == 0:
                    break
                bad = _first_non_finite(block)
                if bad is not None:
                    raise _non_finite_error(path, position + bad, info.sample_rate)
                position += block.shape[0]
                out = resampler.process(apply_channel_mode(block, self.channel_mode))
                if out.shape[0]:
                    self.frames += out.shape[0]
                    yield np.ascontiguousarray(out.T)
        if position == 0:
            raise AudioError(f"{path}: no audio samples could be decoded")
        tail = resampler.flush()
        if tail.shape[0]:
            self.frames += tail.shape[0]
            yield np.ascontiguousarray(tail.T)


def stream_model_audio(
    path: str | os.PathLike[str] | AudioInfo,
    model_rate: int,
    channel_mode: ChannelMode = "mix",
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    quality: ResampleQuality = "HQ",
) -> ModelAudioStream:
    """Stream an input at the model rate: an iterator of ``(C', n) float32`` blocks.

    Validation (missing / not audio / empty / bad channel index) happens here, eagerly; NaN/Inf
    and decoding errors are raised while iterating as AudioError naming the file and the time.
    The blocks concatenate to exactly ``resampled_length(frames, file_rate, model_rate)``
    samples per channel. Memory is O(block_frames) whatever the file length.
    """
    info = path if isinstance(path, AudioInfo) else probe_audio(path)
    _check_channel_mode(info.path, channel_mode, info.channels)
    if block_frames <= 0:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    if quality not in ("HQ", "VHQ"):
        raise ConfigError(f"invalid resampling quality {quality!r}: use 'HQ' or 'VHQ'")
    return ModelAudioStream(info, model_rate, channel_mode, block_frames, quality)


# --------------------------------------------------------------------------------------------
# Output formats
# --------------------------------------------------------------------------------------------


def output_extensions() -> tuple[str, ...]:
    """Extensions (without dot) that outputs can be written as."""
    return tuple(_OUTPUT_FORMATS)


def format_from_extension(path_or_ext: str | os.PathLike[str]) -> tuple[str, str]:
    """``'x/y.flac'`` or ``'flac'`` -> ``(libsndfile format, default subtype)``; ConfigError if
    the extension is not a writable audio format."""
    text = os.fspath(path_or_ext)
    suffix = Path(text).suffix if ("." in text or os.sep in text) else "." + text
    ext = suffix.lower().lstrip(".")
    if ext not in _OUTPUT_FORMATS:
        raise ConfigError(
            f"unsupported output extension '{suffix or text}': use one of "
            + ", ".join(_OUTPUT_FORMATS)
        )
    return _OUTPUT_FORMATS[ext]


def default_subtype(format: str) -> str:
    """Default subtype for a libsndfile format name (``'WAV'`` -> ``'PCM_16'``, ``'OGG'`` ->
    ``'VORBIS'``, ...): 16-bit PCM where the format supports it, like Demucs."""
    fmt = format.upper()
    for ext_format, subtype in _OUTPUT_FORMATS.values():
        if ext_format == fmt:
            return subtype
    subtype = sf.default_subtype(fmt)
    if subtype is None:
        raise ConfigError(f"unsupported output format {format!r}")
    return str(subtype)


def choose_subtype(format: str, sample_format: str | None = None) -> str:
    """Subtype for ``format`` given a CLI sample format (``int16``/``int24``/``float32``/None).

    None gives :func:`default_subtype`. Lossy formats (OGG, MP3) take no sample format; FLAC
    cannot hold float samples. Raises ConfigError for such combinations.
    """
    fmt = format.upper()
    if sample_format is None:
        return default_subtype(fmt)
    if sample_format not in SAMPLE_FORMATS:
        raise ConfigError(
            f"invalid sample format {sample_format!r}: use one of {', '.join(SAMPLE_FORMATS)}"
        )
    if default_subtype(fmt) in _LOSSY_SUBTYPES:
        raise ConfigError(f"{fmt} is a lossy format: {sample_format} output needs wav or flac")
    subtype = SAMPLE_FORMATS[sample_format]
    if not sf.check_format(fmt, subtype):
        raise ConfigError(f"{fmt} files cannot hold {sample_format} samples: use wav")
    return subtype


# --------------------------------------------------------------------------------------------
# Atomic streaming writer
# --------------------------------------------------------------------------------------------


def _as_frames(block: Any, channels: int) -> np.ndarray:
    """``(C, n)`` array-like (numpy or CPU torch tensor) -> ``(n, C)`` float32 frames."""
    if hasattr(block, "detach"):
        block = block.detach().cpu().numpy()
    array = np.asarray(block, dtype=np.float32)
    if array.ndim == 1 and channels == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] != channels:
        raise ValueError(f"expected a ({channels}, n) block, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array.T)


class AtomicAudioWriter:
    """Stream ``(C, n)`` blocks into an audio file that appears only once complete.

    The data goes to a hidden temporary file in the output's folder
    (``.NAME.partial-<random>.EXT``, created with the umask's permissions); :meth:`commit`
    closes it and renames it over ``path`` with ``os.replace`` (atomic on POSIX and Windows
    within one file system). :meth:`abort` deletes it. Used as a context manager, a clean exit
    commits and any exception (KeyboardInterrupt included) aborts, so an interrupted run leaves
    neither a partial file nor a damaged previous output. The file is not fsync'ed: atomicity
    holds against interrupted processes, not against power loss.

    Args:
        path: final output path; missing parent folders are created.
        sample_rate: rate of the file written.
        channels: channels C of the blocks and of the file.
        format: ``'wav'``, ``'flac'``, ... (or a libsndfile name); None: from ``path``'s
            extension.
        subtype: libsndfile subtype (``'PCM_16'``, ``'PCM_24'``, ``'FLOAT'``, ...); None: the
            format's default (:func:`default_subtype`).
        source_rate: rate of the blocks given to :meth:`write`; when it differs from
            ``sample_rate`` blocks are resampled on the fly (streaming soxr).
        frames: if given, the file gets exactly this many frames: later samples are dropped,
            missing ones zero-filled at commit (use the input's frame count so that a
            model-rate round trip keeps the input's exact length).
        quality: soxr quality for ``source_rate`` resampling.

    Clipping: unless the subtype is floating point, samples are clipped to [-1, 1] before
    writing (libsndfile maps 1.0 to the largest integer code). ``clipped_samples`` counts the
    samples (over all channels) that were outside that range; ``peak`` is the largest absolute
    value seen (after resampling, before clipping).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        channels: int,
        *,
        format: str | None = None,
        subtype: str | None = None,
        source_rate: int | None = None,
        frames: int | None = None,
        quality: ResampleQuality = "HQ",
    ) -> None:
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.frames = frames
        self.clipped_samples = 0
        self.peak = 0.0
        self.written_frames = 0
        self.format, self.subtype = self._resolve_format(format, subtype)
        self._clip = self.subtype not in _FLOAT_SUBTYPES
        if self.channels <= 0 or self.sample_rate <= 0:
            raise ConfigError(
                f"{self.path}: invalid output layout ({self.channels} channels, "
                f"{self.sample_rate} Hz)"
            )
        self._resampler = (
            StreamResampler(int(source_rate), self.sample_rate, self.channels, quality)
            if source_rate is not None and int(source_rate) != self.sample_rate
            else None
        )
        self._state = "new"
        self._file: sf.SoundFile | None = None
        self.temp_path = self._open()

    # -- setup ---------------------------------------------------------------------------

    def _resolve_format(self, format: str | None, subtype: str | None) -> tuple[str, str]:
        if format is None:
            fmt, default = format_from_extension(self.path)
        else:
            key = format.lower().lstrip(".")
            if key in _OUTPUT_FORMATS:
                fmt, default = _OUTPUT_FORMATS[key]
            else:
                fmt = format.upper()
                default = default_subtype(fmt)
        chosen = (subtype or default).upper()
        if not sf.check_format(fmt, chosen):
            raise ConfigError(f"{self.path}: {fmt} files cannot use subtype {chosen}")
        return fmt, chosen

    def _error(self, problem: str, err: BaseException | None = None) -> OutputError:
        if err is None:
            return OutputError(f"{self.path}: {problem}")
        reason = _libsndfile_reason(err)
        if reason.lower().startswith("system error"):  # libsndfile hides the errno
            try:
                free = shutil.disk_usage(self.path.parent).free
            except OSError:
                free = None
            if free is not None and free < _LOW_DISK_BYTES:
                reason = "no space left on device"
            else:
                reason = "the system refused the write: disk full, quota or file-size limit?"
        return OutputError(f"{self.path}: {problem} ({reason})")

    def _open(self) -> Path:
        folder = self.path.parent
        if self.path.is_dir():
            raise self._error("is a folder; cannot write an audio file there")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._error("cannot create the output folder", err) from None
        temp: Path | None = None
        for _ in range(16):
            name = f".{self.path.stem}.partial-{secrets.token_hex(4)}{self.path.suffix}"
            candidate = folder / name
            try:
                fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                continue
            except OSError as err:
                raise self._error("cannot write to the output folder", err) from None
            os.close(fd)
            temp = candidate
            break
        if temp is None:
            raise self._error("cannot create a temporary file in the output folder")
        try:
            self._file = sf.SoundFile(
                str(temp), "w", samplerate=self.sample_rate, channels=self.channels,
                format=self.format, subtype=self.subtype,
            )
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            _remove_quietly(temp)
            raise self._error(
                f"cannot write {self.format}/{self.subtype} at {self.sample_rate} Hz with "
                f"{self.channels} channel(s)", err
            ) from None
        self._state = "open"
        return temp

    # -- writing -------------------------------------------------------------------------

    def write(self, block: Any) -> None:
        """Append a ``(C, n)`` block (numpy or CPU tensor; any float dtype) at ``source_rate``."""
        if self._state != "open":
            raise RuntimeError(f"write() on a writer that is {self._state}")
        frames = _as_frames(block, self.channels)
        if self._resampler is not None:
            frames = self._resampler.process(frames)
        self._write_frames(frames)

    def _write_frames(self, frames: np.ndarray) -> None:
        if self.frames is not None:
            frames = frames[: max(self.frames - self.written_frames, 0)]
        if frames.shape[0] == 0:
            return
        bad = _first_non_finite(frames)
        if bad is not None:
            position = (self.written_frames + bad) / self.sample_rate
            raise OutputError(
                f"{self.path}: the estimate contains NaN or Inf samples (first at "
                f"{position:.3f} s); output not written"
            )
        peak = float(np.abs(frames).max())
        self.peak = max(self.peak, peak)
        if self._clip and peak > 1.0:
            self.clipped_samples += int(np.count_nonzero(np.abs(frames) > 1.0))
            frames = np.clip(frames, -1.0, 1.0)
        assert self._file is not None
        try:
            self._file.write(frames)
        except (sf.SoundFileError, RuntimeError, OSError, AssertionError) as err:
            raise self._error("cannot write audio", err) from None
        self.written_frames += frames.shape[0]

    # -- finishing -----------------------------------------------------------------------

    def finish(self) -> None:
        """Flush the resampler, pad to ``frames`` and close the temporary file (no rename).

        On failure the temporary file is deleted and OutputError raised.
        """
        if self._state != "open":
            if self._state == "finished":
                return
            raise RuntimeError(f"finish() on a writer that is {self._state}")
        try:
            if self._resampler is not None:
                self._write_frames(self._resampler.flush())
            while self.frames is not None and self.written_frames < self.frames:
                missing = min(self.frames - self.written_frames, DEFAULT_BLOCK_FRAMES)
                self._write_frames(np.zeros((missing, self.channels), np.float32))
            assert self._file is not None
            try:
                self._file.close()
            except (sf.SoundFileError, RuntimeError, OSError) as err:
                raise self._error("cannot finish writing", err) from None
        except BaseException:
            self.abort()
            raise
        self._state = "finished"

    def _rename(self) -> None:
        try:
            os.replace(self.temp_path, self.path)
        except OSError as err:
            self.abort()
            raise self._error("cannot move the finished file into place", err) from None
        self._state = "committed"

    def commit(self) -> Path:
        """Finish and atomically rename the temporary file to ``path``; returns ``path``."""
        self.finish()
        with _interrupts_deferred():
            self._rename()
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the final path is left as it was. Idempotent."""
        if self._state in ("committed", "aborted"):
            return
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - best effort while cleaning up
                pass
        _remove_quietly(self.temp_path)
        self._state = "aborted"

    @property
    def state(self) -> str:
        """``'open'``, ``'finished'`` (closed, not renamed), ``'committed'`` or ``'aborted'``."""
        return self._state

    def __enter__(self) -> AtomicAudioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def __del__(self) -> None:
        try:
            if getattr(self, "_state", None) in ("open", "finished"):
                self.abort()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the duration of a few renames, then deliver it.

    Only possible in the main thread; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple[int, Any]] = []
    previous = signal.getsignal(signal.SIGINT)

    def remember(signum: int, frame: Any) -> None:
        received.append((signum, frame))

    try:
        signal.signal(signal.SIGINT, remember)
    except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def commit_all(writers: Sequence[AtomicAudioWriter]) -> list[Path]:
    """Commit several writers as a unit: all outputs appear, or none is touched.

    Every writer is first finished (flushed and closed); if any of that fails all are aborted
    and no output path changes. Then the temporary files are renamed one after the other with
    Ctrl-C held back, so an interrupt cannot split the group. Only an OS error during the
    renames themselves (after the first succeeded) can leave a partial group; the remaining
    temporary files are then removed and OutputError raised.
    """
    try:
        for writer in writers:
            writer.finish()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    with _interrupts_deferred():
        for index, writer in enumerate(writers):
            try:
                writer._rename()
            except OutputError:
                for rest in writers[index + 1 :]:
                    rest.abort()
                raise
    return [writer.path for writer in writers]


class AtomicGroup:
    """Context manager committing several :class:`AtomicAudioWriter` together (see
    :func:`commit_all`): on a clean exit all are committed, on any exception all are aborted.

    >>> with AtomicGroup() as group:                                # doctest: +SKIP
    ...     writers = [group.open(out / f"s{k}" / "a.wav", 8000, 1) for k in (1, 2)]
    ...     for block in blocks: ...                                # write to each writer
    """

    def __init__(self, writers: Iterable[AtomicAudioWriter] = ()) -> None:
        self.writers: list[AtomicAudioWriter] = list(writers)

    def add(self, writer: AtomicAudioWriter) -> AtomicAudioWriter:
        """Put an already created writer under this group's control; returns it."""
        self.writers.append(writer)
        return writer

    def open(self, path: str | os.PathLike[str], sample_rate: int, channels: int,
             **options: Any) -> AtomicAudioWriter:
        """Create an :class:`AtomicAudioWriter` (same arguments) inside this group."""
        try:
            return self.add(AtomicAudioWriter(path, sample_rate, channels, **options))
        except BaseException:
            self.abort()
            raise

    def commit(self) -> list[Path]:
        """Commit every writer as a unit; returns the final paths."""
        return commit_all(self.writers)

    def abort(self) -> None:
        """Abort every writer (delete temporary files)."""
        for writer in self.writers:
            writer.abort()

    def __enter__(self) -> AtomicGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_audio(
    path: str | os.PathLike[str],
    audio: Any,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str | None = None,
) -> Path:
    """Write a whole ``(C, N)`` array atomically (small uses: tests, evaluation)."""
    array = np.asarray(audio.detach().cpu().numpy() if hasattr(audio, "detach") else audio)
    if array.ndim == 1:
        array = array[None, :]
    with AtomicAudioWriter(path, sample_rate, array.shape[0], format=format,
                           subtype=subtype) as writer:
        writer.write(array)
    return writer.path
