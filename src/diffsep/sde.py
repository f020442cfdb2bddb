"""The diffusion-mixing SDE of DiffSep (Scheibler et al., ICASSP 2023, Sec. 3).

Notation (paper): K sources ``s`` stacked as ``(B, K, N)``, mixture ``y = sum_k s_k`` as
``(B, 1, N)``. ``P = 11^T / K`` averages over sources and ``Pbar = I - P`` keeps the part of each
source that differs from that average. The forward SDE

    dx = -gamma Pbar x dt + g(t) dw,     g(t) = sigma_min rho^t sqrt(2 log rho),  rho = sigma_max / sigma_min,

drives the sources towards their average ``y / K`` while adding noise. Its marginal is Gaussian with

    mean_t = P s + exp(-gamma t) Pbar s,
    Sigma_t = lambda1(t) P + lambda2(t) Pbar,
    lambda1 = sigma_min^2 (rho^(2t) - 1),
    lambda2 = sigma_min^2 (rho^(2t) - exp(-2 gamma t)) log rho / (gamma + log rho),

so ``L_t = sqrt(lambda1) P + sqrt(lambda2) Pbar`` is a square root of ``Sigma_t`` and its inverse is
``P / sqrt(lambda1) + Pbar / sqrt(lambda2)``. Both are applied through the P / Pbar split (the mean
over sources and the remainder), for any K, never with a matrix solve.

The enhancement variant (``kind='prior_mix'``) multiplies the noise, sample by sample, by the local
RMS of the mixture (:meth:`DiffusionMixingSDE.noise_scale`); everything else is unchanged.

All methods are pure. Source tensors are ``(B, K, ...)`` with the source axis at dim 1; times ``t``
are ``(B,)`` (or a 0-dim tensor) and broadcast over the trailing dimensions of whatever they meet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from diffsep.config import SDEConfig, SDEKind
from diffsep.errors import ConfigError

# The reference enhancement SDE scales the local mixture RMS by this constant (it does not depend
# on the number of sources).
MIX_RMS_FACTOR = 0.5
# Floor on the local mixture power before the square root (reference value).
MIX_POWER_FLOOR = 1e-4


@dataclass(frozen=True)
class DiffusionMixingSDE:
    """Forward diffusion-mixing SDE on ``K = num_sources`` sources; see the module docstring."""

    num_sources: int
    kind: SDEKind = "mix"
    gamma: float = 2.0
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    avg_len: int = 510
    T: float = 1.0

    def __post_init__(self) -> None:
        if self.num_sources < 2:
            raise ConfigError(f"sde: num_sources must be at least 2, got {self.num_sources}")
        if self.kind not in ("mix", "prior_mix"):
            raise ConfigError(f"sde: kind must be 'mix' or 'prior_mix', got {self.kind!r}")
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ConfigError(
                f"sde: need 0 < sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}"
            )
        if self.gamma <= 0.0:
            raise ConfigError(f"sde: gamma must be positive, got {self.gamma}")
        if self.avg_len < 1:
            raise ConfigError(
                f"sde: avg_len must be a positive number of samples, got {self.avg_len}"
            )
        if self.T <= 0.0:
            raise ConfigError(f"sde: T must be positive, got {self.T}")

    # -- scalar schedules -------------------------------------------------------------------------

    @property
    def rho(self) -> float:
        """``sigma_max / sigma_min``."""
        return self.sigma_max / self.sigma_min

    @property
    def log_rho(self) -> float:
        return math.log(self.rho)

    def eigenvalues(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(lambda1, lambda2)`` of ``Sigma_t`` on range(P) and range(Pbar); each shaped like ``t``."""
        rho_2t = self.rho ** (2.0 * t)
        lambda1 = self.sigma_min**2 * (rho_2t - 1.0)
        shrink = self.log_rho / (self.gamma + self.log_rho)
        lambda2 = self.sigma_min**2 * (rho_2t - torch.exp(-2.0 * self.gamma * t)) * shrink
        return lambda1, lambda2

    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t) = sigma_min rho^t sqrt(2 log rho)``, shaped like ``t``."""
        return self.sigma_min * self.rho**t * math.sqrt(2.0 * self.log_rho)

    # -- the mixture-dependent noise scale ---------------------------------------------------------

    def noise_scale(self, mix: Tensor) -> Tensor:
        """Per-sample noise multiplier from the mixture ``(B, 1, N)``.

        ``kind='mix'``: ones of shape ``(B, 1, 1)``. ``kind='prior_mix'``: ``(B, 1, N)`` equal to
        ``0.5 sqrt(max(mean of y^2 over avg_len samples, 1e-4))``, a centred moving average whose
        zero padding counts in the mean (for even ``avg_len`` the window reaches one sample further
        back than forward).
        """
        _check_mixture(mix)
        if self.kind == "mix":
            return torch.ones_like(mix[..., :1])
        half = self.avg_len // 2
        power = F.avg_pool1d(
            mix.square(), self.avg_len, stride=1, padding=half, count_include_pad=True
        )
        power = power[..., : mix.shape[-1]]
        return MIX_RMS_FACTOR * power.clamp(min=MIX_POWER_FLOOR).sqrt()

    # -- marginal p_t(x | s0, y) -------------------------------------------------------------------

    def mean(self, s0: Tensor, t: Tensor) -> Tensor:
        """Marginal mean ``P s0 + exp(-gamma t) Pbar s0``; ``s0`` (B, K, ...) -> same shape."""
        avg = s0.mean(dim=1, keepdim=True)
        decay = torch.exp(-self.gamma * _per_item(t, s0))
        return avg + decay * (s0 - avg)

    def apply_L(self, x: Tensor, t: Tensor, mix: Tensor) -> Tensor:
        """``L_t x`` with ``L_t = (sqrt(lambda1) P + sqrt(lambda2) Pbar) * noise_scale(mix)``.

        ``x`` (B, K, N), ``t`` (B,), ``mix`` (B, 1, N) -> (B, K, N).
        """
        lambda1, lambda2 = self.eigenvalues(_per_item(t, x))
        avg = x.mean(dim=1, keepdim=True)
        return (lambda1.sqrt() * avg + lambda2.sqrt() * (x - avg)) * self.noise_scale(mix)

    def apply_L_inv(self, x: Tensor, t: Tensor, mix: Tensor) -> Tensor:
        """``L_t^{-1} x``; same shapes as :meth:`apply_L`. Needs ``t > 0`` (``L_0`` is singular)."""
        lambda1, lambda2 = self.eigenvalues(_per_item(t, x))
        avg = x.mean(dim=1, keepdim=True)
        return (avg / lambda1.sqrt() + (x - avg) / lambda2.sqrt()) / self.noise_scale(mix)

    def apply_sigma(self, x: Tensor, t: Tensor, mix: Tensor) -> Tensor:
        """``Sigma_t x = L_t (L_t x)``; shapes as in :meth:`apply_L`."""
        return self.apply_L(self.apply_L(x, t, mix), t, mix)

    def apply_sigma_inv(self, x: Tensor, t: Tensor, mix: Tensor) -> Tensor:
        """``Sigma_t^{-1} x``; shapes as in :meth:`apply_L`; needs ``t > 0``."""
        return self.apply_L_inv(self.apply_L_inv(x, t, mix), t, mix)

    def unmean(self, mean_t: Tensor, t: Tensor) -> Tensor:
        """Inverse of :meth:`mean`: the sources ``s`` whose marginal mean is ``mean_t`` (B, K, ...)."""
        avg = mean_t.mean(dim=1, keepdim=True)
        growth = torch.exp(self.gamma * _per_item(t, mean_t))
        return avg + growth * (mean_t - avg)

    def score_from_sources(self, x: Tensor, t: Tensor, mix: Tensor, sources: Tensor) -> Tensor:
        """Score of the Gaussian marginal centred on estimated sources (Tweedie's formula read
        backwards): ``-Sigma_t^{-1} (x - mean_t(sources))``; all (B, K, N), ``t`` (B,)."""
        return -self.apply_sigma_inv(x - self.mean(sources, t), t, mix)

    def sources_from_score(self, x: Tensor, t: Tensor, mix: Tensor, score: Tensor) -> Tensor:
        """Tweedie's formula: ``E[s | x_t] = mean_t^{-1}(x + Sigma_t score)``; inverse of
        :meth:`score_from_sources`; all (B, K, N), ``t`` (B,)."""
        return self.unmean(x + self.apply_sigma(score, t, mix), t)

    def skip_coefficients(self, t: Tensor, mix: Tensor) -> tuple[Tensor, Tensor]:
        """``(c_skip, c_out)`` of a source-estimating network with a skip connection (EDM's
        preconditioning, Karras et al. 2022, Eq. 7, read for this SDE).

        Model the sources as independent, zero-mean, each of variance ``1/K`` (a unit-variance
        mixture). On range(Pbar) ``x_t`` is ``exp(-gamma t) s`` plus noise of variance ``v =
        lambda2 noise_scale^2`` per source, so the linear MMSE estimate of ``Pbar s`` is
        ``c_skip Pbar x_t`` with ``c_skip = exp(-gamma t) / K / (exp(-2 gamma t) / K + v)``,
        and ``c_out = sqrt(v / K / (exp(-2 gamma t) / K + v))`` is the standard deviation of its
        error before the projection on range(Pbar) (which keeps a share ``1 - 1/K`` of the
        variance). ``t`` (B,), ``mix`` (B, 1, N) -> two tensors of shape (B, 1, 1) ('mix') or
        (B, 1, N) ('prior_mix').
        """
        source_var = 1.0 / self.num_sources
        _, lambda2 = self.eigenvalues(_per_item(t, mix))
        noise_var = lambda2 * self.noise_scale(mix).square()
        decay = torch.exp(-self.gamma * _per_item(t, mix))
        total = decay.square() * source_var + noise_var
        return decay * source_var / total, (source_var * noise_var / total).sqrt()

    def sources_from_skip(self, x: Tensor, t: Tensor, mix: Tensor, residual: Tensor) -> Tensor:
        """Source estimates ``y / K + c_skip Pbar x + c_out Pbar residual`` (see
        :meth:`skip_coefficients`), which sum to ``mix``: with a zero ``residual`` this is the
        linear MMSE estimate, exact as ``t -> 0``. ``x``, ``residual`` (B, K, N), ``t`` (B,),
        ``mix`` (B, 1, N) -> (B, K, N).
        """
        c_skip, c_out = self.skip_coefficients(t, mix)
        x_diff = x - x.mean(dim=1, keepdim=True)
        residual_diff = residual - residual.mean(dim=1, keepdim=True)
        return mix / self.num_sources + c_skip * x_diff + c_out * residual_diff

    def marginal_sample(self, s0: Tensor, t: Tensor, mix: Tensor, z: Tensor) -> Tensor:
        """``x_t = mean_t(s0) + L_t z`` for standard normal ``z`` (B, K, N) -> (B, K, N)."""
        return self.mean(s0, t) + self.apply_L(z, t, mix)

    # -- forward SDE coefficients ------------------------------------------------------------------

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``-gamma Pbar x`` (B, K, ...) -> same shape; it depends neither on ``t`` nor on ``y``."""
        del t
        return -self.gamma * (x - x.mean(dim=1, keepdim=True))

    def diffusion(self, t: Tensor, mix: Tensor) -> Tensor:
        """``g(t) * noise_scale(mix)``: (B, 1, 1) for 'mix', (B, 1, N) for 'prior_mix'."""
        return self.g(_per_item(t, mix)) * self.noise_scale(mix)

    def discretize(self, x: Tensor, t: Tensor, mix: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """Euler-Maruyama increments ``(f, G) = (drift dt, diffusion sqrt(dt))`` of one step ``dt``.

        ``x_{t+dt} ~ x_t + f + G z``; ``f`` is (B, K, N), ``G`` broadcasts against it.
        """
        return self.drift(x, t) * dt, self.diffusion(t, mix) * math.sqrt(dt)

    # -- prior p_T(x | y) --------------------------------------------------------------------------

    def prior_mean(self, mix: Tensor) -> Tensor:
        """``y / K`` on every source: (B, 1, N) -> (B, K, N), a new tensor."""
        _check_mixture(mix)
        shape = (mix.shape[0], self.num_sources, *mix.shape[2:])
        return (mix / self.num_sources).expand(shape).contiguous()

    def prior_sample(self, mix: Tensor, z: Tensor) -> Tensor:
        """``x_T = y / K + L_T z`` with standard normal ``z`` (B, K, N) -> (B, K, N)."""
        t = torch.full((mix.shape[0],), self.T, dtype=mix.dtype, device=mix.device)
        return self.prior_mean(mix) + self.apply_L(z, t, mix)


def project_to_mixture(sources: Tensor, mix: Tensor) -> Tensor:
    """Mixture consistency: spread ``mix - sum_k sources_k`` equally over the sources.

    ``sources`` (B, K, N), ``mix`` (B, 1, N) -> (B, K, N) whose sum over K equals ``mix``.
    """
    _check_mixture(mix)
    residual = mix - sources.sum(dim=1, keepdim=True)
    return sources + residual / sources.shape[1]


def make_sde(config: SDEConfig, num_sources: int) -> DiffusionMixingSDE:
    """Build the SDE described by ``config`` for ``num_sources`` sources."""
    return DiffusionMixingSDE(
        num_sources=num_sources,
        kind=config.kind,
        gamma=config.gamma,
        sigma_min=config.sigma_min,
        sigma_max=config.sigma_max,
        avg_len=config.avg_len,
    )


def _per_item(t: Tensor, like: Tensor) -> Tensor:
    """View ``t`` (B,) or () as (B, 1, ..., 1) with ``like.ndim`` dimensions."""
    if t.ndim > 1:
        raise ValueError(f"t must have shape (B,) or (), got {tuple(t.shape)}")
    if t.ndim == 1 and t.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"t has {t.shape[0]} entries for a batch of {like.shape[0]}")
    return t.reshape(-1, *(1,) * (like.ndim - 1))


def _check_mixture(mix: Tensor) -> None:
    if mix.ndim != 3 or mix.shape[1] != 1:
        raise ValueError(f"mixture must have shape (B, 1, N), got {tuple(mix.shape)}")
