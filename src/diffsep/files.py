"""Files in, files out: the one run path behind ``diffsep separate`` and ``diffsep enhance``.

:func:`separate_files` plans every input's output paths, skips inputs whose outputs exist,
probes each remaining input once, streams it through :func:`diffsep.separator.run_jobs`, writes
its outputs atomically (all sources of an input appear together, or none) and returns a
:class:`RunSummary`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffsep import __version__
from diffsep.audio import check_min_length, probe_audio, stream_model_audio
from diffsep.config import Task
from diffsep.errors import DiffsepError
from diffsep.inputs import InputFile, default_template, plan_outputs, stem_names
from diffsep.model import DiffSepModel
from diffsep.sampling import network_calls
from diffsep.separator import (
    FileJob,
    FileResult,
    FileStatus,
    Reporter,
    SilentReporter,
    run_jobs,
)
from diffsep.settings import OutputSettings, RunSettings
from diffsep.writer import AtomicAudioWriter, commit_all


@dataclass(frozen=True)
class OutputSpec:
    """Where and how one input's outputs are written.

    paths: one per written source (separation: all K; enhancement: the speech source only).
    sources: index of the model source written to each path.
    sample_rate: rate of the files (input rate by default, or the model rate).
    frames: exact length of the files (the input's frame count) or None.
    """

    paths: tuple[Path, ...]
    sources: tuple[int, ...]
    sample_rate: int
    frames: int | None = None
    format: str | None = None
    subtype: str | None = None


class FileSink:
    """Streams each selected source to its own atomic writer; commits them as a group."""

    def __init__(self, spec: OutputSpec, model_rate: int, channels: int) -> None:
        self.spec = spec
        self.writers: list[AtomicAudioWriter] = []
        try:
            for path in spec.paths:
                self.writers.append(
                    AtomicAudioWriter(
                        path,
                        spec.sample_rate,
                        channels,
                        format=spec.format,
                        subtype=spec.subtype,
                        source_rate=model_rate,
                        frames=spec.frames,
                    )
                )
        except BaseException:
            self.abort()
            raise

    def write(self, estimates: torch.Tensor) -> None:
        blocks = estimates.numpy()
        for writer, source in zip(self.writers, self.spec.sources):
            writer.write(blocks[source])

    def commit(self) -> list[Path]:
        return commit_all(self.writers)

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()

    @property
    def clipped_samples(self) -> int:
        return sum(writer.clipped_samples for writer in self.writers)


@dataclass(frozen=True)
class RunSummary:
    """What a run did: its settings and one result per input, in input order."""

    task: Task
    model: str
    model_sample_rate: int
    device: str
    settings: RunSettings
    files: tuple[FileResult, ...]
    processes: int = 1  # torchrun ranks that shared the inputs

    def count(self, status: FileStatus) -> int:
        """Number of inputs with this status (``ok``, ``failed`` or ``skipped``)."""
        return sum(1 for result in self.files if result.status == status)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` summary."""
        sampler = dataclasses.asdict(self.settings.sampler)
        sampler.pop("segment_seconds", None)  # the window is reported in samples below
        return {
            "diffsep_version": __version__,
            "task": self.task,
            "model": self.model,
            "model_sample_rate": self.model_sample_rate,
            "device": self.device,
            "processes": self.processes,
            "seed": self.settings.seed,
            "sampler": sampler,
            "network_calls_per_window": network_calls(self.settings.sampler),
            "window_samples": self.settings.plan.window,
            "hop_samples": self.settings.plan.hop,
            "batch_size": self.settings.batch_size,
            "precision": self.settings.precision,
            "compile": self.settings.compile,
            "processed": self.count("ok"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "files": [result.to_dict() for result in self.files],
        }


def open_file_job(
    model: DiffSepModel,
    path: Path,
    paths: tuple[Path, ...],
    settings: RunSettings,
    output: OutputSettings,
) -> FileJob:
    """Probe ``path`` (once) and open it as a streaming job writing to ``paths``.

    Raises AudioError/ConfigError if the input cannot be used (missing, not audio, empty, too
    short, no such channel); nothing is written then.
    """
    info = probe_audio(path)
    check_min_length(info, model.min_samples, model.sample_rate)
    stream = stream_model_audio(info, model.sample_rate, settings.channel_mode)
    separation = model.config.task == "separation"
    spec = OutputSpec(
        paths=paths,
        sources=tuple(range(model.num_sources)) if separation else (0,),
        sample_rate=model.sample_rate if output.model_rate else info.sample_rate,
        frames=None if output.model_rate else info.frames,
        format=output.ext,
        subtype=output.subtype,
    )
    channels = stream.channels

    def make_sink() -> FileSink:
        return FileSink(spec, model.sample_rate, channels)

    return FileJob(str(path), iter(stream), channels, info.duration, make_sink, model, settings,
                   align=separation)


def separate_files(
    model: DiffSepModel,
    inputs: Sequence[InputFile],
    out: Path,
    settings: RunSettings,
    output: OutputSettings,
    reporter: Reporter | None = None,
    owns: Callable[[int], bool] | None = None,
) -> RunSummary:
    """Separate (or enhance, with an enhancement model) every input into files under ``out``.

    Raises ConfigError before any work if the outputs cannot be planned (bad template, clashes,
    an output over an input). Problems with single inputs do not stop the run: the input's
    result says ``failed`` and why, and nothing of it is written. ``owns(index)`` picks the
    inputs this process handles (one rank of :mod:`diffsep.distributed`); the summary then
    lists only those, in input order. The outputs of all inputs are planned either way.
    """
    reporter = reporter or SilentReporter()
    task = model.config.task
    plans = plan_outputs(inputs, out, output.template or default_template(task),
                         stem_names(task, model.num_sources), output.ext)
    results: dict[int, FileResult] = {}
    todo: list[tuple[int, InputFile, tuple[Path, ...]]] = []
    for index, (item, paths) in enumerate(zip(inputs, plans)):
        if owns is not None and not owns(index):
            continue
        existing = next((path for path in paths if path.exists()), None)
        if existing is None or output.overwrite:
            todo.append((index, item, paths))
            continue
        results[index] = FileResult(str(item.path), "skipped", warnings=[f"{existing} exists"])
        reporter.file_skipped(results[index])
    reporter.run_started(len(todo))

    started: list[int] = []  # input index of each job, in the order run_jobs receives them

    def jobs() -> Iterator[FileJob]:
        for index, item, paths in todo:
            try:
                job = open_file_job(model, item.path, paths, settings, output)
            except DiffsepError as err:
                results[index] = FileResult(str(item.path), "failed", error=str(err))
                reporter.file_finished(results[index])
                continue
            started.append(index)
            yield job

    finished = run_jobs(model, jobs(), settings, reporter)
    results.update(zip(started, finished))
    return RunSummary(
        task=task,
        model=model.source,
        model_sample_rate=model.sample_rate,
        device=str(model.device),
        settings=settings,
        files=tuple(results[index] for index in sorted(results)),
    )
