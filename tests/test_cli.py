"""The `diffsep separate` / `enhance` / `convert` / `models` commands, as a user runs them."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, speech_like, write_wav
from typer.testing import CliRunner

from diffsep import __version__
from diffsep.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def mixtures(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_wav(folder / "a.wav", speech_like(1.2, 16000, 1) + speech_like(1.2, 16000, 2, 220), 16000)
    write_wav(folder / "sub" / "b.flac", speech_like(0.8, 8000, 3), 8000)
    return folder


def test_version_and_help() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output
    result = invoke("separate", "--help")
    assert result.exit_code == 0
    for option in ("--steps", "--seed", "--segment", "--overlap", "--batch-size", "--device",
                   "--channels", "--filename", "--overwrite", "--json", "--quiet", "--int24"):
        assert option in result.output


@pytest.mark.slow  # a full model run or a large network: over a second
def test_separate_folder_writes_librimix_layout(mixtures: Path, tmp_path: Path,
                                                small_model_dirs) -> None:
    out = tmp_path / "out"
    result = invoke("separate", mixtures, "-o", out, "--model", small_model_dirs["sep"],
                    "--steps", 2, "--seed", 3, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["processed"] == 2 and summary["failed"] == 0 and summary["seed"] == 3
    for stem in ("s1", "s2"):
        data, rate = sf.read(out / stem / "a.wav")
        assert rate == 16000 and data.shape == (int(1.2 * 16000),)
        data, rate = sf.read(out / stem / "sub" / "b.wav")
        assert rate == 8000 and data.shape == (6400,)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporaries left


@pytest.mark.slow  # a full model run or a large network: over a second
def test_same_seed_same_output_and_skip_existing(mixtures: Path, tmp_path: Path,
                                                 small_model_dirs) -> None:
    file = mixtures / "a.wav"
    args = ["--model", small_model_dirs["sep"], "--steps", 2, "--seed", 9, "--float32", "-q"]
    assert invoke("separate", file, "-o", tmp_path / "o1", *args).exit_code == 0
    assert invoke("separate", file, "-o", tmp_path / "o2", *args).exit_code == 0
    one, _ = sf.read(tmp_path / "o1" / "s1" / "a.wav")
    two, _ = sf.read(tmp_path / "o2" / "s1" / "a.wav")
    np.testing.assert_array_equal(one, two)
    assert sf.info(tmp_path / "o1" / "s1" / "a.wav").subtype == "FLOAT"

    before = os.stat(tmp_path / "o1" / "s1" / "a.wav").st_mtime_ns
    result = invoke("separate", file, "-o", tmp_path / "o1", *args[:-1])
    assert result.exit_code == 0 and "exists" in result.stderr
    assert os.stat(tmp_path / "o1" / "s1" / "a.wav").st_mtime_ns == before
    result = invoke("separate", file, "-o", tmp_path / "o1", *args, "--overwrite",
                    "--seed", 10)
    assert result.exit_code == 0
    three, _ = sf.read(tmp_path / "o1" / "s1" / "a.wav")
    assert not np.array_equal(one, three)


@pytest.mark.slow  # a full model run or a large network: over a second
def test_enhance_writes_one_file_per_input(tmp_path: Path, small_model_dirs) -> None:
    noisy = speech_like(1.0, 16000, 4) + 0.02 * np.random.default_rng(1).standard_normal(16000)
    write_wav(tmp_path / "noisy" / "x.wav", noisy, 16000)
    write_wav(tmp_path / "noisy" / "y.wav", noisy[::-1].copy(), 16000)
    out = tmp_path / "enhanced"
    result = invoke("enhance", tmp_path / "noisy" / "*.wav", "-o", out, "--model",
                    small_model_dirs["enh"], "--steps", 2, "--flac", "--int24", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["x.flac", "y.flac"]
    info = sf.info(out / "x.flac")
    assert info.samplerate == 16000 and info.frames == 16000 and info.subtype == "PCM_24"


def test_model_task_mismatch_is_one_line_error(mixtures: Path, tmp_path: Path,
                                               small_model_dirs) -> None:
    result = invoke("enhance", mixtures / "a.wav", "-o", tmp_path / "o", "--model",
                    small_model_dirs["sep"])
    assert result.exit_code == 1
    assert "separation model" in result.stderr and "Traceback" not in result.output


@pytest.mark.slow  # a full model run or a large network: over a second
def test_bad_inputs_each_get_one_line_and_others_still_run(tmp_path: Path,
                                                           small_model_dirs) -> None:
    folder = tmp_path / "in"
    write_wav(folder / "good.wav", speech_like(1.0, 8000, 5), 8000)
    (folder / "notes.wav").write_text("this is not audio")
    write_wav(folder / "empty.wav", np.zeros(0, np.float32), 8000)
    write_wav(folder / "short.wav", speech_like(0.02, 8000, 6), 8000)
    bad = speech_like(1.0, 8000, 7)
    bad[4000] = np.nan
    write_wav(folder / "nan.wav", bad, 8000, subtype="FLOAT")
    write_wav(folder / "silent.wav", np.zeros(8000, np.float32), 8000)
    out = tmp_path / "out"
    result = invoke("separate", folder, "-o", out, "--model", small_model_dirs["sep"],
                    "--steps", 2, "--json", "-q")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    by_name = {Path(f["input"]).name: f for f in summary["files"]}
    assert by_name["good.wav"]["status"] == "ok"
    assert by_name["silent.wav"]["status"] == "ok"
    assert "silent" in by_name["silent.wav"]["warnings"][0]
    for name, words in [("notes.wav", "not"), ("empty.wav", "empty"), ("short.wav", "too short"),
                        ("nan.wav", "NaN")]:
        entry = by_name[name]
        assert entry["status"] == "failed" and words in entry["error"], entry
        assert name in entry["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4 and all(any(n in e for e in errors) for n in
                                    ("notes.wav", "empty.wav", "short.wav", "nan.wav"))
    silent, _ = sf.read(out / "s1" / "silent.wav")
    assert not silent.any()
    assert (out / "s2" / "good.wav").exists()
    assert not (out / "s1" / "nan.wav").exists() and not (out / "s1" / "notes.wav").exists()
    assert not [p for p in out.rglob(".*")]
    # without -q (stderr not a terminal): a one-line header, one line per file, no blank lines
    result = invoke("separate", folder, "-o", tmp_path / "loud", "--model",
                    small_model_dirs["sep"], "--steps", 2)
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and "" not in lines, lines
    assert lines[0].startswith("separation of 6 file(s) with") and lines[0].endswith(")")
    assert len(lines) == 1 + 2 + 4 + 1  # header, two outputs, four errors, silent warning


def test_missing_path_and_folder_without_audio(tmp_path: Path, small_model_dirs) -> None:
    result = invoke("separate", tmp_path / "nope.wav", "--model", small_model_dirs["sep"])
    assert result.exit_code == 1 and "nope.wav" in result.stderr
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    result = invoke("separate", tmp_path / "docs", "--model", small_model_dirs["sep"])
    assert result.exit_code == 1 and "docs" in result.stderr


def test_output_folder_is_a_file(mixtures: Path, tmp_path: Path, small_model_dirs) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    result = invoke("separate", mixtures / "a.wav", "-o", blocker, "--model",
                    small_model_dirs["sep"], "--steps", 1, "-q")
    assert result.exit_code == 1 and "out" in result.stderr
    assert blocker.read_text().startswith("a file")


def test_convert_then_models_listing(tmp_path: Path) -> None:
    result = invoke("convert", FIXTURES / "small-enh.ckpt", tmp_path / "m", "--fp16")
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors",
                                                            "README.md"}
    assert json.loads((tmp_path / "m" / "config.json").read_text())["task"] == "enhancement"
    result = invoke("convert", FIXTURES / "small-enh.ckpt", tmp_path / "m")
    assert result.exit_code == 1 and "exists" in result.stderr
    result = invoke("models", "--json")
    assert result.exit_code == 0
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"diffsep-sep-8k", "diffsep-enh-16k"} <= names
    result = invoke("models")  # the table, then one line per model: what it is, where its card is
    assert result.exit_code == 0
    for row in json.loads(invoke("models", "--json").stdout):
        line = next(x for x in result.stdout.splitlines() if x.startswith(row["name"] + ": "))
        assert row["description"] in line
        if row["source"] == "bundled":
            assert line.endswith(f"card: {Path(row['location']) / 'README.md'}")


def test_threads_option_sets_torch_threads(mixtures: Path, tmp_path: Path,
                                           small_model_dirs) -> None:
    import torch

    result = invoke("separate", mixtures / "sub" / "b.flac", "-o", tmp_path / "o", "--model",
                    small_model_dirs["sep"], "--steps", 1, "--threads", 2, "-q")
    try:
        assert result.exit_code == 0 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.slow  # a full model run or a large network: over a second
def test_default_window_is_the_models(mixtures: Path, tmp_path: Path, small_model_dirs) -> None:
    # the fixture model sets no window: 4 s; a copy whose config sets 1 s uses that instead,
    # and --segment still overrides it
    from diffsep.checkpoint import load_model_files, save_model_folder
    from diffsep.chunking import efficient_window_length
    from diffsep.config import model_segment_seconds

    config, weights = load_model_files(small_model_dirs["sep"])
    assert config.sampler.segment_seconds is None and model_segment_seconds(config) == 4.0
    short = dataclasses.replace(config, sampler=dataclasses.replace(config.sampler,
                                                                    segment_seconds=1.0))
    folder = save_model_folder(tmp_path / "short", short, weights)
    assert "- window: 1 s" in (folder / "README.md").read_text()
    file = mixtures / "sub" / "b.flac"
    windows = {}
    for name, model, extra in (("default", small_model_dirs["sep"], []),
                               ("short", folder, []), ("override", folder, ["--segment", 2])):
        result = invoke("separate", file, "-o", tmp_path / name, "--model", model, "--steps", 1,
                        "--json", "-q", *extra)
        assert result.exit_code == 0, result.output
        windows[name] = json.loads(result.stdout)["window_samples"]
    assert windows == {name: efficient_window_length(round(seconds * 8000), config.stft)
                       for name, seconds in (("default", 4.0), ("short", 1.0), ("override", 2.0))}
    assert len(set(windows.values())) == 3
