"""Audio -> windows -> batched diffusion sampling -> overlap-add -> audio.

Each input is streamed at the model rate, cut into overlapping windows, and the windows of one
or many inputs go through the sampler together (``batch_size`` windows per network call). The
estimates are cross-faded back together; for separation each window's sources are first put in
the order of the previous window's, so speakers never swap at a boundary. Outputs are streamed
to a :class:`Sink` (files: :mod:`diffsep.files`; arrays: :func:`separate_array`). Memory stays
O(window x batch), whatever the length of the files.

Window ``i`` of channel ``c`` of an input draws its noise from a generator seeded with
``seed + i * C + c``: a file's result depends on the seed and the settings only, never on which
other files share its batches. A single-window mono input with seed ``s`` therefore draws
exactly what the reference ``separate.py`` draws after ``torch.manual_seed(s)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from diffsep.audio import apply_channel_mode
from diffsep.chunking import StreamingOverlapAdd, StreamingWindower, Window
from diffsep.errors import AudioError, DiffsepError
from diffsep.model import DiffSepModel, launch_windows
from diffsep.resample import resample
from diffsep.sampling import network_calls
from diffsep.settings import MAX_SEED, RunSettings

# --------------------------------------------------------------------------------------------
# What the separator tells its caller
# --------------------------------------------------------------------------------------------


FileStatus = Literal["ok", "failed", "skipped"]


class Reporter(Protocol):
    """What a run tells its caller (the CLI prints messages and draws progress bars from it)."""

    def run_started(self, files: int) -> None: ...

    def file_skipped(self, result: FileResult) -> None: ...

    def file_started(self, job: FileJob) -> None: ...

    def file_finished(self, result: FileResult) -> None: ...

    def batch_started(self, windows: int, calls: int) -> None:
        """A batch of ``windows`` starts; it needs ``calls`` network calls (NFE)."""

    def sampler_step(self, call: int, calls: int) -> None:
        """Network call ``call`` (0-based) of ``calls`` is done."""

    def batch_finished(self, windows: int) -> None: ...


class SilentReporter:
    """A :class:`Reporter` that ignores everything (subclass it to hear some events)."""

    def run_started(self, files: int) -> None:
        pass

    def file_skipped(self, result: FileResult) -> None:
        pass

    def file_started(self, job: FileJob) -> None:
        pass

    def file_finished(self, result: FileResult) -> None:
        pass

    def batch_started(self, windows: int, steps: int) -> None:
        pass

    def sampler_step(self, step: int, steps: int) -> None:
        pass

    def batch_finished(self, windows: int) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Sinks: where a job's model-rate estimates go
# --------------------------------------------------------------------------------------------


class Sink(Protocol):
    """Receives ``(K, C, n)`` model-rate estimates in order, then commit or abort."""

    def write(self, estimates: torch.Tensor) -> None: ...

    def commit(self) -> list[Path]: ...

    def abort(self) -> None: ...

    @property
    def clipped_samples(self) -> int:
        """Output samples clipped to [-1, 1] so far (0 where nothing is clipped)."""
        ...


class MemorySink:
    """Collects estimates in memory (the Python API)."""

    def __init__(self) -> None:
        self.pieces: list[torch.Tensor] = []

    def write(self, estimates: torch.Tensor) -> None:
        self.pieces.append(estimates)

    def commit(self) -> list[Path]:
        return []

    def abort(self) -> None:
        self.pieces.clear()

    @property
    def clipped_samples(self) -> int:
        return 0

    def result(self) -> torch.Tensor:
        """``(K, C, N)`` at the model rate."""
        return torch.cat(self.pieces, dim=-1)


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    """What happened to one input."""

    input: str
    status: FileStatus
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    windows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "status": self.status,
            "outputs": self.outputs,
            "error": self.error,
            "warnings": self.warnings,
            "audio_seconds": round(self.audio_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "real_time_factor": (
                round(self.elapsed_seconds / self.audio_seconds, 3) if self.audio_seconds else None
            ),
            "windows": self.windows,
        }


@dataclass
class _Item:
    """One window of one channel of one job, waiting for the sampler."""

    job: FileJob
    window: Window
    channel: int
    seed: int

    @property
    def mixture(self) -> torch.Tensor:
        """``(1, L)`` float32: the window's real samples (a short input is not padded)."""
        data = self.window.data[self.channel : self.channel + 1]
        if self.window.start == 0 and self.window.length < data.shape[-1]:
            data = data[:, : self.window.length]
        return data.float()


class FileJob:
    """Streaming state of one input: blocks -> windows -> (sampler) -> overlap-add -> sink."""

    def __init__(
        self,
        name: str,
        blocks: Iterator[np.ndarray],
        channels: int,
        audio_seconds: float,
        make_sink: Callable[[], Sink],
        model: DiffSepModel,
        settings: RunSettings,
        align: bool,
    ) -> None:
        self.name = name
        self.result = FileResult(input=name, status="ok", audio_seconds=audio_seconds)
        self.channels = channels
        self._blocks = blocks
        self._make_sink = make_sink
        self._sink: Sink | None = None
        self._settings = settings
        plan = settings.plan
        self._windower = StreamingWindower(plan.window, plan.hop)
        self._olas = [
            StreamingOverlapAdd(model.num_sources, plan.window, plan.hop, align=align)
            for _ in range(channels)
        ]
        self._windows_seen = 0
        self._pending = 0  # items handed out and not yet returned
        self._drained = False  # every item has been handed out
        self._peak = 0.0
        self._started = time.perf_counter()
        self.failed = False

    # -- producing items -------------------------------------------------------------------

    def items(self) -> Iterator[_Item]:
        """Items of this job in order; stops early (failed) on an input error."""
        try:
            if self._sink is None:
                self._sink = self._make_sink()
            for block in self._blocks:
                self._peak = max(self._peak, float(np.abs(block).max(initial=0.0)))
                yield from self._emit(self._windower.push(block))
            yield from self._emit(self._windower.finish())
            self._drained = True
        except DiffsepError as err:
            self.fail(str(err))

    def _emit(self, windows: list[Window]) -> Iterator[_Item]:
        for window in windows:
            index = self._windows_seen
            self._windows_seen += 1
            for channel in range(self.channels):
                self._pending += 1
                seed = (self._settings.seed + index * self.channels + channel) % (MAX_SEED + 1)
                yield _Item(self, window, channel, seed)

    # -- consuming results -----------------------------------------------------------------

    def accept(self, item: _Item, estimate: torch.Tensor) -> None:
        """Overlap-add the ``(K, L)`` estimate of ``item``; flush what is final to the sink."""
        self._pending -= 1
        if self.failed:
            return
        self._olas[item.channel].add(item.window.start, estimate)
        if item.channel == self.channels - 1:
            ready = [ola.pop_ready() for ola in self._olas]
            if ready[0].shape[-1]:
                self._write(torch.stack(ready, dim=1))

    @property
    def done(self) -> bool:
        """All items handed out and all their estimates returned."""
        return self.failed or (self._drained and self._pending == 0)

    def finish(self) -> FileResult:
        """Flush the tail, commit the outputs, and return the result."""
        if not self.failed:
            try:
                total = self._windower.total
                tail = [ola.finish(total) for ola in self._olas]
                if tail[0].shape[-1]:
                    self._write(torch.stack(tail, dim=1))
                assert self._sink is not None
                self.result.outputs = [str(p) for p in self._sink.commit()]
                self.result.windows = self._windows_seen
                if self._peak == 0.0:
                    self.result.warnings.append("input is silent: the outputs are silent too")
                clipped = self._sink.clipped_samples
                if clipped:
                    self.result.warnings.append(
                        f"{clipped} output samples were clipped to [-1, 1] "
                        "(use --float32 to keep them)"
                    )
            except DiffsepError as err:
                self.fail(str(err))
        self.result.elapsed_seconds = time.perf_counter() - self._started
        return self.result

    def fail(self, message: str) -> None:
        """Abandon this job: delete partial outputs, keep the message."""
        self.failed = True
        self.result.status = "failed"
        self.result.error = message
        if self._sink is not None:
            self._sink.abort()

    def _write(self, estimates: torch.Tensor) -> None:
        assert self._sink is not None
        self._sink.write(estimates)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def _batches(jobs: Iterator[FileJob], batch_size: int) -> Iterator[list[_Item]]:
    """Items of consecutive jobs, grouped into batches of equal window length."""
    batch: list[_Item] = []
    for job in jobs:
        for item in job.items():
            if batch and item.mixture.shape[-1] != batch[0].mixture.shape[-1]:
                yield batch
                batch = []
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def run_jobs(
    model: DiffSepModel,
    jobs: Iterator[FileJob],
    settings: RunSettings,
    reporter: Reporter | None = None,
    lookahead: bool | None = None,
) -> list[FileResult]:
    """Drive ``jobs`` through the sampler in batches; returns one result per job, in order.

    ``lookahead`` (default: on for CUDA) prepares and queues the next batch before fetching
    the current one's results; the results are the same either way.
    """
    reporter = reporter or SilentReporter()
    started: list[FileJob] = []
    results: dict[int, FileResult] = {}

    def tracked() -> Iterator[FileJob]:
        for job in jobs:
            started.append(job)
            reporter.file_started(job)
            yield job

    def settle() -> None:
        for position, job in enumerate(started):
            if position not in results and job.done:
                results[position] = job.finish()
                reporter.file_finished(results[position])

    def finish(live: list[_Item], estimates: Callable[[], torch.Tensor]) -> None:
        for item, estimate in zip(live, estimates()):
            item.job.accept(item, estimate)
        reporter.batch_finished(len(live))

    # With look-ahead (CUDA), batch k + 1 is read, resampled and queued before the results of
    # batch k are fetched, so the device never waits for the host.
    ahead = model.device.type == "cuda" if lookahead is None else lookahead
    pending: tuple[list[_Item], Callable[[], torch.Tensor]] | None = None
    for batch in _batches(tracked(), settings.batch_size):
        live = [item for item in batch if not item.job.failed]
        for item in batch:
            if item.job.failed:
                item.job.accept(item, torch.empty(0))
        launched = None
        if live:
            mixes = torch.stack([item.mixture for item in live])
            reporter.batch_started(len(live), network_calls(settings.sampler))
            launched = live, launch_windows(
                model,
                mixes,
                [item.seed for item in live],
                settings.sampler,
                on_step=reporter.sampler_step,
                precision=settings.precision,
            )
        if pending is not None:
            finish(*pending)
            pending = None
        if launched is not None:
            if ahead:
                pending = launched
            else:
                finish(*launched)
        settle()
    if pending is not None:
        finish(*pending)
    settle()
    return [results[position] for position in range(len(started))]


# --------------------------------------------------------------------------------------------
# In-memory signals (files: diffsep.files)
# --------------------------------------------------------------------------------------------


def separate_array(
    model: DiffSepModel,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    settings: RunSettings,
    reporter: Reporter | None = None,
) -> np.ndarray:
    """Separate an in-memory signal.

    waveform: ``(N,)`` mono or ``(C, N)`` channels-first, float, at ``sample_rate`` Hz.
    Returns ``(K, N)`` float32 at ``sample_rate`` for mono input or a single-channel mode, and
    ``(K, C, N)`` with ``channel_mode='each'``.
    """
    array = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else waveform
    array = np.asarray(array, dtype=np.float32)
    mono_in = array.ndim == 1
    if mono_in:
        array = array[None, :]
    if array.ndim != 2 or array.shape[-1] == 0:
        raise AudioError(f"waveform: expected a non-empty (N,) or (C, N) array, got {array.shape}")
    if not np.isfinite(array).all():
        raise AudioError("waveform: contains NaN or Inf samples")
    frames = array.shape[-1]
    mixed = apply_channel_mode(np.ascontiguousarray(array.T), settings.channel_mode).T
    at_model = resample(np.ascontiguousarray(mixed), sample_rate, model.sample_rate)
    if at_model.shape[-1] < model.min_samples:
        raise AudioError(
            f"waveform: too short ({frames} samples at {sample_rate} Hz); at least "
            f"{model.min_samples} samples at {model.sample_rate} Hz are needed"
        )
    sink = MemorySink()
    job = FileJob(
        "waveform",
        iter([at_model]),
        at_model.shape[0],
        frames / sample_rate,
        lambda: sink,
        model,
        settings,
        align=model.config.task == "separation",
    )
    (result,) = run_jobs(model, iter([job]), settings, reporter)
    if result.status != "ok":
        raise AudioError(f"waveform: {result.error}")
    estimates = sink.result().numpy()  # (K, C, M) at the model rate
    out = np.stack(
        [_resample_exact(source, model.sample_rate, sample_rate, frames) for source in estimates]
    )
    return out[:, 0] if out.shape[1] == 1 and settings.channel_mode != "each" else out


def _resample_exact(audio: np.ndarray, from_rate: int, to_rate: int, frames: int) -> np.ndarray:
    """``(C, M)`` -> ``(C, frames)`` at ``to_rate`` (cropped or zero-padded to ``frames``)."""
    out = resample(audio, from_rate, to_rate) if from_rate != to_rate else audio
    if out.shape[-1] >= frames:
        return np.ascontiguousarray(out[:, :frames])
    return np.pad(out, ((0, 0), (0, frames - out.shape[-1])))
