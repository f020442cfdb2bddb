"""Mixture normalisation and rescaling against reference fixture (d)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import rel_err

from diffsep.errors import AudioError
from diffsep.processing import normalize_mixture, rescale_to_mixture

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"



@pytest.fixture(scope="module", params=["sep", "enh"])
def ref(request):
    return torch.load(FIXTURES / f"expected-small-{request.param}.pt", weights_only=True)


def test_normalize_mixture_matches_reference(ref):
    mix = ref["norm.mix"]
    mix_before = mix.clone()
    mix_norm, mean, std = normalize_mixture(mix)
    assert mean.shape == std.shape == (2, 1, 1)
    assert rel_err(mean, ref["norm.mean"]) < 1e-5
    assert rel_err(std, ref["norm.std"]) < 1e-5
    assert rel_err(mix_norm, ref["norm.mix_norm"]) < 1e-5
    assert torch.equal(mix, mix_before)
    # item 1 is constant: its std is clamped to 1e-5 and the normalised signal is ~0, not NaN
    assert std[1].item() == pytest.approx(1e-5)
    assert torch.isfinite(mix_norm).all()


def test_normalize_mixture_statistics():
    mix = 3.0 + 2.0 * torch.randn(
        3, 1, 5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    mix_norm, mean, std = normalize_mixture(mix)
    assert torch.allclose(mix_norm.mean(dim=-1), torch.zeros(3, 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(mix_norm.std(dim=-1), torch.ones(3, 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(mix_norm * std + mean, mix)


def test_normalize_mixture_rejects_single_sample():
    with pytest.raises(AudioError):
        normalize_mixture(torch.ones(1, 1, 1))


def test_rescale_to_mixture_matches_reference(ref):
    mix, sep = ref["scale.mix"], ref["scale.sep"]
    sep_before = sep.clone()
    assert rel_err(rescale_to_mixture(mix, sep), ref["scale.out"]) < 1e-5
    assert torch.equal(sep, sep_before)


def test_rescale_is_least_squares_gain():
    gen = torch.Generator().manual_seed(1)
    sources = torch.randn(2, 3, 1000, generator=gen, dtype=torch.float64)
    mix = sources.sum(dim=1, keepdim=True)
    gains = torch.tensor([[0.5], [2.0], [-1.5]], dtype=torch.float64)
    out = rescale_to_mixture(mix, sources * gains)
    # the residual mix - alpha_k s_k is orthogonal to s_k
    residual_dot = ((mix - out) * sources).sum(dim=-1)
    # (up to the 1e-10 per-sample regulariser: |dot| = |alpha| * N * 1e-10 <= 1e-6)
    assert torch.allclose(residual_dot, torch.zeros(2, 3, dtype=torch.float64), atol=1e-5)
    # the gains are undone: sources are nearly orthogonal, so alpha_k * gain_k = 1 + O(1/sqrt(N))
    assert ((out - sources).norm(dim=-1) / sources.norm(dim=-1)).max() < 0.15
    # silent estimates stay silent instead of dividing by zero
    assert torch.equal(
        rescale_to_mixture(mix, torch.zeros(2, 3, 1000, dtype=torch.float64)),
        torch.zeros(2, 3, 1000, dtype=torch.float64),
    )


def test_rescale_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        rescale_to_mixture(torch.zeros(1, 1, 10), torch.zeros(1, 2, 11))
    with pytest.raises(ValueError):
        rescale_to_mixture(torch.zeros(1, 2, 10), torch.zeros(1, 2, 10))
