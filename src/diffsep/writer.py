"""Audio files out: output formats and an atomic streaming writer.

:class:`AtomicAudioWriter` writes blocks to a hidden temporary file next to the output,
optionally resampling them back to the input rate, and renames it over the output only when
everything was written; :func:`commit_all` commits several outputs (s1 ... sK of one input)
together. Problems raise :class:`~diffsep.errors.OutputError` (or
:class:`~diffsep.errors.ConfigError` for a format that cannot be written), one line naming
the file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import soundfile as sf

from diffsep.atomic import interrupts_deferred, remove_quietly, temporary_sibling
from diffsep.audio import DEFAULT_BLOCK_FRAMES, first_non_finite, libsndfile_reason
from diffsep.errors import ConfigError, OutputError
from diffsep.resample import ResampleQuality, StreamResampler

if TYPE_CHECKING:
    from typing_extensions import Self

WriterState = Literal["new", "open", "finished", "committed", "aborted"]

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
        self._state: WriterState = "new"
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
        reason = libsndfile_reason(err)
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
        try:
            temp = temporary_sibling(self.path)
        except FileExistsError:
            raise self._error("cannot create a temporary file in the output folder") from None
        except OSError as err:
            raise self._error("cannot write to the output folder", err) from None
        try:
            self._file = sf.SoundFile(
                str(temp), "w", samplerate=self.sample_rate, channels=self.channels,
                format=self.format, subtype=self.subtype,
            )
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            remove_quietly(temp)
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
        bad = first_non_finite(frames)
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
        with interrupts_deferred():
            self._rename()
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the final path is left as it was. Idempotent."""
        if self._state in ("committed", "aborted"):
            return
        if self._file is not None and not self._file.closed:
            with contextlib.suppress(Exception):  # best effort while cleaning up
                self._file.close()
        remove_quietly(self.temp_path)
        self._state = "aborted"

    @property
    def state(self) -> WriterState:
        """``'open'``, ``'finished'`` (closed, not renamed), ``'committed'`` or ``'aborted'``."""
        return self._state

    def __enter__(self) -> Self:
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
        with contextlib.suppress(Exception):  # never raise from a finaliser
            if getattr(self, "_state", None) in ("open", "finished"):
                self.abort()


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
    with interrupts_deferred():
        for index, writer in enumerate(writers):
            try:
                writer._rename()
            except OutputError:
                for rest in writers[index + 1 :]:
                    rest.abort()
                raise
    return [writer.path for writer in writers]
