"""Audio files in: validation, channel policy and streaming reads at the model rate.

Arrays are numpy ``(C, N) float32`` (channels first). :func:`stream_model_audio` reads an input
file block by block, applies the channel policy and resamples to the model rate with a
streaming soxr resampler, so memory does not grow with the file's duration. Writing is
:mod:`diffsep.writer`; rate conversion :mod:`diffsep.resample`.

User-caused problems raise :class:`~diffsep.errors.AudioError` (inputs) or
:class:`~diffsep.errors.ConfigError` (options), each with a one-line message naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import soundfile as sf

from diffsep.errors import AudioError, ConfigError
from diffsep.resample import ResampleQuality, StreamResampler, resampled_length

if TYPE_CHECKING:
    from typing_extensions import Self

ChannelMode = Literal["mix", "first", "each"] | int
"""How a multi-channel input becomes model input.

``"mix"`` (default): average all channels into one mono mixture. ``"first"`` or an int ``i``
(0-based): use that single channel. ``"each"``: keep every channel, each is separated on its own.
"""

DEFAULT_BLOCK_FRAMES = 1 << 16
"""Frames read from the input per block (at the input rate)."""


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


def libsndfile_reason(err: BaseException) -> str:
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
            f"{path}: not a readable audio file ({libsndfile_reason(err)})"
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


def first_non_finite(frames: np.ndarray) -> int | None:
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
        raise AudioError(f"{info.path}: cannot decode ({libsndfile_reason(err)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{info.path}: no audio samples could be decoded")
    bad = first_non_finite(data)
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
# Channels
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _generate(self) -> Generator[np.ndarray, None, None]:
        info = self.info
        path = info.path
        resampler = StreamResampler(info.sample_rate, self.model_rate, self.channels,
                                    self._quality)
        try:
            handle = sf.SoundFile(str(path))
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise AudioError(f"{path}: cannot open ({libsndfile_reason(err)})") from None
        with handle:
            position = 0  # input frames read so far
            while True:
                try:
                    block = handle.read(self._block_frames, dtype="float32", always_2d=True)
                except (sf.SoundFileError, RuntimeError) as err:
                    raise AudioError(
                        f"{path}: cannot decode at {position / info.sample_rate:.3f} s "
                        f"({libsndfile_reason(err)})"
                    ) from None
                if block.shape[0] == 0:
                    break
                bad = first_non_finite(block)
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
