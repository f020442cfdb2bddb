"""The one run path: settings built once (CLI and API), files in -> files out -> a summary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like, write_wav

from diffsep.errors import ConfigError
from diffsep.files import separate_files
from diffsep.inputs import discover_inputs
from diffsep.separator import FileJob, FileResult, SilentReporter
from diffsep.settings import output_settings, run_settings


class Events(SilentReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def run_started(self, files: int) -> None:
        self.events.append(("run", str(files)))

    def file_skipped(self, result: FileResult) -> None:
        self.events.append(("skipped", Path(result.input).name))

    def file_started(self, job: FileJob) -> None:
        self.events.append(("started", Path(job.name).name))

    def file_finished(self, result: FileResult) -> None:
        self.events.append((result.status, Path(result.input).name))


def test_settings_take_the_models_defaults_and_check_the_overrides(small_sep_model) -> None:
    settings = run_settings(small_sep_model, seed=4)
    assert settings.sampler == small_sep_model.config.sampler
    assert settings.seed == 4 and settings.batch_size == 1  # CPU default
    assert settings.channel_mode == "mix"
    chosen = run_settings(small_sep_model, steps=3, snr=0.2, denoise=False, batch_size=2,
                          channels="1")
    assert (chosen.sampler.steps, chosen.sampler.snr, chosen.sampler.denoise) == (3, 0.2, False)
    assert chosen.batch_size == 2 and chosen.channel_mode == 1
    for bad in ({"steps": 0}, {"corrector_steps": -1}, {"snr": -1.0}, {"batch_size": 0},
                {"seed": -1}, {"overlap": 1.0}, {"segment": 0.0}, {"channels": "left"}):
        with pytest.raises(ConfigError):
            run_settings(small_sep_model, **bad)


def test_output_settings_refuse_formats_that_cannot_hold_the_samples() -> None:
    assert output_settings(ext="flac", sample_format="int24").subtype == "PCM_24"
    assert output_settings(sample_format="float32").subtype == "FLOAT"
    assert output_settings().subtype is None
    with pytest.raises(ConfigError, match="FLAC"):
        output_settings(ext="flac", sample_format="float32")
    with pytest.raises(ConfigError, match="extension"):
        output_settings(ext="txt")


def test_separate_files_reports_every_input_in_order(tmp_path: Path, small_sep_model) -> None:
    folder = tmp_path / "in"
    write_wav(folder / "a.wav", speech_like(0.6, 8000, 1), 8000)
    (folder / "b.wav").write_text("not audio")
    write_wav(folder / "c.wav", speech_like(0.5, 16000, 2), 16000)
    out = tmp_path / "out"
    write_wav(out / "s2" / "c.wav", np.zeros(10, np.float32), 8000)  # c's outputs exist
    inputs = discover_inputs([folder])
    settings = run_settings(small_sep_model, steps=1, seed=0)
    reporter = Events()
    summary = separate_files(small_sep_model, inputs, out, settings, output_settings(), reporter)
    assert [(Path(f.input).name, f.status) for f in summary.files] == [
        ("a.wav", "ok"), ("b.wav", "failed"), ("c.wav", "skipped")]
    assert reporter.events == [("skipped", "c.wav"), ("run", "2"), ("started", "a.wav"),
                               ("failed", "b.wav"), ("ok", "a.wav")]
    assert "b.wav" in summary.files[1].error and summary.files[2].warnings == [
        f"{out / 's2' / 'c.wav'} exists"]
    report = summary.to_dict()
    assert (report["processed"], report["failed"], report["skipped"]) == (1, 1, 1)
    assert report["sampler"] == {k: v for k, v in dataclasses.asdict(settings.sampler).items()
                                 if k != "segment_seconds"}
    assert all(set(entry) == set(report["files"][0]) for entry in report["files"])
    assert sf.info(out / "s1" / "a.wav").frames == int(0.6 * 8000)
    again = separate_files(small_sep_model, inputs, out, settings,
                           output_settings(overwrite=True, model_rate=True))
    assert [f.status for f in again.files] == ["ok", "failed", "ok"]
    assert sf.info(out / "s2" / "c.wav").samplerate == 8000  # written at the model rate
