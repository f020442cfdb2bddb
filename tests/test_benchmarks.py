"""The benchmark scripts run (they import library internals that could drift) and print rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark scripts in subprocesses

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY_TRAIN = """
[model]
sample_rate = 8000
[model.stft]
n_fft = 62
hop_length = 16
frame_multiple = 4
[model.backbone]
nf = 4
ch_mult = [1, 2]
num_res_blocks = 1
attn_resolutions = []
image_size = 32
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
