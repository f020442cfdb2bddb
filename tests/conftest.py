"""Shared fixtures: the reference's small random-weight checkpoints as diffsep model folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"

# The smallest network the training code builds (8 kHz, nf 4, two levels), as recipe TOML for
# tests that train or time it through a script or the command line.
TINY_MODEL_TOML = """
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
"""
SDE_CASES = [("sep", "mix"), ("enh", "prior_mix")]


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|a - b| / max|b|, the fixtures' error measure."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module", params=SDE_CASES, ids=[name for name, _ in SDE_CASES])
def case(request):
    """``(sde, expected)`` for each fixture model: MixSDE (sep) and PriorMixSDE (enh)."""
    from diffsep.config import SDEConfig
    from diffsep.sde import make_sde

    name, kind = request.param
    expected = torch.load(FIXTURES / f"expected-small-{name}.pt", weights_only=True)
    return make_sde(SDEConfig(kind=kind), num_sources=2), expected


@pytest.fixture(scope="session")
def small_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{'sep': folder, 'enh': folder}``: the small fixture checkpoints in our format."""
    from diffsep.checkpoint import convert_authors_checkpoint

    root = tmp_path_factory.mktemp("models")
    return {
        kind: convert_authors_checkpoint(FIXTURES / f"small-{kind}.ckpt", root / f"small-{kind}")
        for kind in ("sep", "enh")
    }


@pytest.fixture(scope="session")
def small_sep_model(small_model_dirs: dict[str, Path]):
    from diffsep.loading import load_model

    return load_model(str(small_model_dirs["sep"]), "separation", "cpu")


@pytest.fixture(scope="session")
def small_enh_model(small_model_dirs: dict[str, Path]):
    from diffsep.loading import load_model

    return load_model(str(small_model_dirs["enh"]), "enhancement", "cpu")


def load_script(path: Path):
    """Import a script of recipes/ or benchmarks/ as a module (registered in sys.modules, so
    that its dataclasses find their module)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def speech_like(seconds: float, rate: int, seed: int, f0: float = 140.0) -> np.ndarray:
    """A voiced, amplitude-modulated harmonic signal (mono float32), a stand-in for speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6))) ** 2
    return (0.1 * voiced * envelope).astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(audio).T, rate, subtype=subtype)
    return path


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)
