"""recipes/score_model.sh: separates the first N test items and scores them with `diffsep eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like

pytestmark = pytest.mark.slow  # runs the recipe scripts in subprocesses

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "score_model.sh"


def _split(root: Path, rate: int, count: int) -> Path:
    for folder in ("mix", "s1", "s2"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        s1 = 0.1 * speech_like(0.6, rate, seed=i, f0=110.0)
        s2 = 0.1 * speech_like(0.6, rate, seed=100 + i, f0=230.0)
        sf.write(root / "s1" / f"item{i}.wav", s1, rate)
        sf.write(root / "s2" / f"item{i}.wav", s2, rate)
        sf.write(root / "mix" / f"item{i}.wav", s1 + s2, rate)
    return root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_score_model_scores_the_first_items(tmp_path: Path, small_model_dirs: dict) -> None:
    split = _split(tmp_path / "test", 8000, 3)
    out = tmp_path / "score"
    done = _run("separate", str(small_model_dirs["sep"]), str(split), "2", str(out),
                "--steps", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "est" / "s1").iterdir()) == ["item0.wav", "item1.wav"]
    report = json.loads((out / "report.json").read_text())
    assert len(report["files"]) == 2
    scored = report["files"][0]
    assert np.isfinite(scored["si_sdr"]) and np.isfinite(scored["si_sdri"])
    timing = (out / "timing.txt").read_text()
    assert timing.startswith("files 2  audio 1.2 s") and "RTF" in timing


def test_score_model_rejects_bad_arguments(tmp_path: Path) -> None:
    assert _run("separate").returncode == 2
    done = _run("mangle", "m", str(tmp_path), "1", str(tmp_path / "o"))
    assert done.returncode == 2 and "separate or enhance" in done.stderr
    (tmp_path / "mix").mkdir()
    done = _run("separate", "m", str(tmp_path), "1", str(tmp_path / "o"))
    assert done.returncode == 1 and "no .wav files" in done.stderr
