"""`torchrun --nproc_per_node 2 -m diffsep separate`: two CPU processes (gloo) share the inputs and
write the same files as one process; rank 0 prints one summary in input order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like, write_wav
from typer.testing import CliRunner

from diffsep.cli import app


def torchrun(*args: str) -> dict:
    """Run ``diffsep ARGS`` as two torchrun processes; rank 0's JSON summary."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "diffsep", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # rank 0 only: one JSON document


@pytest.mark.slow  # starts interpreters (torchrun)
def test_two_processes_write_what_one_process_writes(tmp_path: Path, small_model_dirs) -> None:
    folder = tmp_path / "in"
    for i, seconds in enumerate((0.6, 1.1, 0.5)):
        mix = speech_like(seconds, 8000, 30 + i) + speech_like(seconds, 8000, 40 + i, 210)
        write_wav(folder / f"m{i}.wav", mix, 8000)
    args = [str(folder), "--model", str(small_model_dirs["sep"]), "--steps", "1",
            "--sampler", "ddim", "--threads", "1", "--float32", "--json", "-q"]

    # no --seed: rank 0 draws one and shares it; one process with that seed writes the same
    summary = torchrun("separate", *args, "-o", str(tmp_path / "two"))
    one = CliRunner().invoke(app, ["separate", *args, "--seed", str(summary["seed"]),
                                   "-o", str(tmp_path / "one")], catch_exceptions=False)
    assert one.exit_code == 0, one.output
    single = json.loads(one.stdout)
    assert summary["processes"] == 2 and single["processes"] == 1
    assert [f["input"] for f in summary["files"]] == [f["input"] for f in single["files"]]
    assert [f["status"] for f in summary["files"]] == ["ok"] * 3
    for i in range(3):
        for stem in ("s1", "s2"):
            a, _ = sf.read(tmp_path / "one" / stem / f"m{i}.wav")
            b, _ = sf.read(tmp_path / "two" / stem / f"m{i}.wav")
            np.testing.assert_array_equal(a, b)
