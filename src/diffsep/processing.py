"""Mixture normalisation before sampling and least-squares rescaling of the estimates after it.

Matches the reference ``separate.py``: the sampler runs on the normalised mixture, and each estimate
is then scaled against the raw (un-normalised) mixture; the mean is never added back.
"""

from __future__ import annotations

from torch import Tensor

from diffsep.errors import AudioError

STD_FLOOR = 1e-5
_ENERGY_EPS = 1e-10


def normalize_mixture(mix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Zero-mean, unit-variance mixture, per batch item.

    ``mix`` (B, 1, N) -> ``(mix_norm (B, 1, N), mean (B, 1, 1), std (B, 1, 1))`` with the mean
    and the unbiased (N - 1) standard deviation over channel and time; ``std`` is floored at 1e-5
    so that a constant (e.g. silent) input stays finite.
    """
    if mix.ndim != 3:
        raise ValueError(f"mixture must have shape (B, C, N), got {tuple(mix.shape)}")
    if mix.shape[1] * mix.shape[2] < 2:
        raise AudioError(
            f"mixture has {mix.shape[-1]} sample(s); at least 2 are needed to normalise it"
        )
    mean = mix.mean(dim=(1, 2), keepdim=True)
    std = mix.std(dim=(1, 2), keepdim=True).clamp(min=STD_FLOOR)
    return (mix - mean) / std, mean, std


def rescale_to_mixture(mix: Tensor, est: Tensor) -> Tensor:
    """Scale each estimate by its least-squares gain against the mixture.

    ``mix`` (B, 1, N), ``est`` (B, K, N) -> (B, K, N): ``alpha_k s_k`` with
    ``alpha_k = sum_n y s_k / sum_n (s_k^2 + 1e-10)``.
    """
    shapes_ok = mix.ndim == est.ndim == 3 and mix.shape[1] == 1
    if not shapes_ok or mix.shape[0] != est.shape[0] or mix.shape[-1] != est.shape[-1]:
        raise ValueError(
            f"expected mix (B, 1, N) and estimates (B, K, N), got {tuple(mix.shape)} and {tuple(est.shape)}"
        )
    correlation = (mix * est).sum(dim=-1, keepdim=True)
    energy = (est.square() + _ENERGY_EPS).sum(dim=-1, keepdim=True)
    return correlation / energy * est
