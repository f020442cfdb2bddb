"""The benchmark scripts run (they import library internals that could drift) and print rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_MODEL_TOML

pytestmark = pytest.mark.slow  # runs the benchmark scripts in subprocesses

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY_TRAIN = TINY_MODEL_TOML + """
[optim]
segment_seconds = 0.1
"""


def _run(script: str, *args: str) -> object:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_bench_train_times_the_training_step(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAIN)
    report = _run("bench_train.py", "--config", str(config), "--batch-sizes", "1,2",
                  "--steps", "1", "--warmup", "1", "--threads", "1",
                  "--set", "optim.p_T=0.5")
    rows = report["steps"]
    assert [row["batch_size"] for row in rows] == [1, 2]
    for row in rows:
        assert row["device"] == "cpu" and row["precision"] == "fp32" and row["crop_s"] == 0.1
        assert row["s_per_step"] > 0 and row["audio_s_per_s"] > 0 and row["params_M"] > 0
    assert report["data"] is None


def test_bench_separate_reports_the_real_time_factor() -> None:
    rows = _run("bench_separate.py", "--lengths", "1", "--batch-sizes", "1", "--steps", "1",
                "--threads", "1")
    assert len(rows) == 1
    row = rows[0]
    assert row["device"] == "cpu" and row["length_s"] == 1 and row["steps"] == 1
    assert row["windows"] >= 1 and row["rtf"] > 0 and row["peak_rss_MiB"] > 0


def test_bench_sampling_scores_each_setting(tmp_path: Path, small_model_dirs) -> None:
    import numpy as np
    from conftest import speech_like, write_wav

    split = tmp_path / "test"
    for i in range(2):
        s1, s2 = speech_like(1.0, 8000, 10 + i), speech_like(1.0, 8000, 20 + i, 230)
        write_wav(split / "s1" / f"f{i}.wav", s1, 8000)
        write_wav(split / "s2" / f"f{i}.wav", s2, 8000)
        write_wav(split / "mix" / f"f{i}.wav", (s1 + s2).astype(np.float32), 8000)
    plot = tmp_path / "q.png"
    report = _run("bench_sampling.py", "--model", str(small_model_dirs["sep"]), "--data",
                  str(split), "--files", "1", "--settings", "pc:2", "heun:2:tau=0.5",
                  "--plot", str(plot))
    assert report["files"] == ["f0.wav"] and report["threads"] == 1
    rows = report["rows"]
    assert [(row["setting"], row["nfe"]) for row in rows] == [("pc:2", 4), ("heun:2:tau=0.5", 4)]
    for row in rows:
        assert np.isfinite(row["si_sdri"]) and 1.0 <= row["pesq"] <= 4.6
        assert -1 <= row["estoi"] <= 1 and row["seconds"] > 0 and row["audio_seconds"] == 1.0
    assert plot.stat().st_size > 10_000


def test_bench_network_times_calls_by_batch_and_precision(small_model_dirs) -> None:
    rows = _run("bench_network.py", "--model", str(small_model_dirs["sep"]), "--batch-sizes",
                "1,2", "--precisions", "fp32,fp64", "--calls", "1", "--seconds", "0.5",
                "--threads", "1")
    assert [(row["batch"], row["precision"]) for row in rows] == [
        (1, "fp32"), (2, "fp32"), (1, "fp64"), (2, "fp64")]
    for row in rows[:2]:
        assert row["s_per_call"] > 0 and row["audio_s_per_s"] > 0 and row["window_s"] == 0.5
    assert all("precision" in row["error"] for row in rows[2:])  # reported, not a crash


def test_bench_settings_start_from_the_reference_not_from_the_models_tau() -> None:
    from conftest import load_script

    from diffsep.config import SamplerConfig

    bench = load_script(BENCHMARKS / "bench_sampling.py")
    # a model whose default is ddim:3 from tau 0.5 on a rho-2 grid, with its own t_eps
    model_default = SamplerConfig(method="ddim", steps=3, tau=0.5, grid_rho=2.0, t_eps=0.05)
    reference = bench.parse_setting("pc:30", model_default)
    assert (reference.method, reference.steps, reference.tau, reference.grid_rho) == (
        "pc", 30, None, 1.0)
    assert reference.t_eps == 0.05  # the model's own settings stay
    started = bench.parse_setting("ddim:9:tau=0.4:t_eps=0.2", model_default)
    assert (started.method, started.steps, started.tau, started.t_eps) == ("ddim", 9, 0.4, 0.2)


def test_bench_train_reads_step_times_from_a_training_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text(
        "2026-12-04 13:24:01 diffsep 0.1.0 train: separation, 2 sources at 8000 Hz, 2.24 M "
        "parameters, 20000 items/epoch, 312 batches/epoch x 1 process(es), device cuda, "
        "steps 0/200000\n"
        "2026-12-04 13:24:32 step 50/200000 loss -7.8 grad 13.6 lr 5.00e-05 0.50 s/step\n"
        "2026-12-04 13:24:45 validation at step 50: si_sdr_T 6.87 dB, si_sdri_T 2.72 dB (1 s)\n"
        "2026-12-04 13:24:59 step 100/200000 loss -7.9 grad 12.0 lr 5.00e-05 0.25 s/step\n"
        "2026-12-04 13:25:10 step 150/200000 loss -8.0 grad 11.0 lr 5.00e-05 0.30 s/step\n")
    rows = _run("bench_train.py", "--from-log", str(log), "--crop-seconds", "2")
    assert len(rows) == 1
    row = rows[0]
    assert (row["device"], row["batch_size"], row["logged"]) == ("cuda", 64, 3)
    assert (row["s_per_step"], row["s_per_step_min"], row["s_per_step_max"]) == (0.3, 0.25, 0.5)
    assert row["audio_s_per_s"] == round(64 * 2 / 0.3, 1)
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_train.py"), "--from-log",
                           str(empty), "--crop-seconds", "2"], capture_output=True, text=True)
    assert done.returncode != 0 and "empty.log: no run header" in done.stderr
