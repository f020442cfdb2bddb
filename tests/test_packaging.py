"""A non-editable install carries the bundled default models and finds them offline."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from diffsep.hub import BUNDLED_MODELS

pytestmark = pytest.mark.slow  # builds a wheel and starts an interpreter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("diffsep-*.whl")
    return built


def test_wheel_contains_every_bundled_model(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for entry in BUNDLED_MODELS.values():
        for file in ("config.json", "model.safetensors", "README.md"):
            assert f"diffsep/_models/{entry.folder}/{file}" in names


def test_installed_package_resolves_defaults_inside_itself(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)  # what `pip install` puts in site-packages
    script = (
        "import diffsep.hub as h, diffsep.loading as m;"
        "print(h.resolve_model(None, 'separation'));"
        "print(h.resolve_model(None, 'enhancement'));"
        "print(m.load_model(None, 'separation', 'cpu').config.sample_rate)"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    sep, enh, rate = done.stdout.split()
    assert Path(sep).is_relative_to(target / "diffsep" / "_models")
    assert Path(enh).is_relative_to(target / "diffsep" / "_models")
    assert rate == "8000"
