"""Predictor-corrector sampling of the reverse diffusion-mixing SDE (DiffSep, Sec. 3.2).

Stateless functions: one step of the reverse-diffusion predictor, one step of the annealed
Langevin corrector, and :func:`pc_sample`, which alternates them over a time grid from ``T`` down
to ``t_eps``. Randomness comes in through ``noise_fn``; the network through ``score_fn``.

``score_fn(x (B, K, N), t (B,), mix (B, 1, N)) -> (B, K, N)`` estimates the score
``grad_x log p_t(x | y)``. ``noise_fn(like) -> Tensor`` returns a standard normal tensor shaped like
``like``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffsep.config import SamplerConfig
from diffsep.errors import ConfigError
from diffsep.sde import DiffusionMixingSDE

ScoreFn = Callable[[Tensor, Tensor, Tensor], Tensor]
NoiseFn = Callable[[Tensor], Tensor]


def check_sampler_settings(settings: SamplerConfig, T: float = 1.0) -> SamplerConfig:
    """The one check of sampler settings (ConfigError naming the setting); returns them.

    ``T`` is the SDE's final time: ``t_eps`` must lie in ``(0, T)``.
    """
    if settings.steps < 1:
        raise ConfigError(f"sampler: steps must be at least 1, got {settings.steps}")
    if settings.corrector_steps < 0:
        raise ConfigError(
            f"sampler: corrector_steps must be 0 or more, got {settings.corrector_steps}"
        )
    if not 0.0 < settings.t_eps < T:
        raise ConfigError(f"sampler: t_eps must lie in (0, {T}), got {settings.t_eps}")
    if settings.snr < 0.0:
        raise ConfigError(f"sampler: snr must be non-negative, got {settings.snr}")
    return settings


def time_grid(steps: int, t_eps: float, T: float = 1.0) -> Tensor:
    """``steps`` times from ``T`` down to ``t_eps``, both included: (steps,) float32.

    Computed with ``torch.linspace`` in float32 like the reference (numpy differs by 1 ulp).
    """
    return torch.linspace(T, t_eps, steps, dtype=torch.float32)


def reverse_diffusion_step(
    sde: DiffusionMixingSDE, score: Tensor, x: Tensor, t: Tensor, mix: Tensor, dt: float, z: Tensor
) -> tuple[Tensor, Tensor]:
    """Reverse-diffusion predictor (Song et al. 2021): one Euler-Maruyama step backwards by ``dt``.

    ``score`` is ``score_fn(x, t, mix)``, ``z`` standard normal; all (B, K, N), ``t`` (B,).
    Returns ``(x, x_mean)``: ``x_mean = x - f + G^2 score`` and ``x = x_mean + G z``.
    """
    f, G = sde.discretize(x, t, mix, dt)
    x_mean = x - (f - G.square() * score)
    return x_mean + G * z, x_mean


def langevin_corrector_step(
    sde: DiffusionMixingSDE, score: Tensor, x: Tensor, t: Tensor, mix: Tensor, snr: float, z: Tensor
) -> tuple[Tensor, Tensor]:
    """Annealed Langevin corrector preconditioned by the marginal covariance (reference ``ald2``).

    Step size ``2 snr^2 Sigma_t``: ``x_mean = x + 2 snr^2 L_t (L_t score)`` and
    ``x = x_mean + 2 snr L_t z``. Shapes as in :func:`reverse_diffusion_step`.
    """
    x_mean = x + 2.0 * snr**2 * sde.apply_L(sde.apply_L(score, t, mix), t, mix)
    return x_mean + 2.0 * snr * sde.apply_L(z, t, mix), x_mean


@torch.no_grad()
def pc_sample(
    sde: DiffusionMixingSDE,
    score_fn: ScoreFn,
    mix: Tensor,
    *,
    steps: int = 30,
    snr: float = 0.5,
    corrector_steps: int = 1,
    t_eps: float = 0.03,
    denoise: bool = True,
    noise_fn: NoiseFn,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Sample the sources (B, K, N) given the mixture ``mix`` (B, 1, N); ``steps * (corrector_steps + 1)`` NFE.

    Starts from ``x_T = y / K + L_T z``; at each ``t_i`` of :func:`time_grid` runs the corrector
    ``corrector_steps`` times, then the predictor. As in the reference, every predictor step uses
    ``dt = 1 / steps`` although the grid spacing is ``(T - t_eps) / (steps - 1)``. With ``denoise``
    the noise-free ``x_mean`` of the last predictor step is returned (its noise is still drawn, so
    the noise stream matches the reference). ``on_step(i, steps)`` is called after step ``i``.
    """
    check_sampler_settings(
        SamplerConfig(
            steps=steps, snr=snr, corrector_steps=corrector_steps, t_eps=t_eps, denoise=denoise
        ),
        sde.T,
    )
    dt = 1.0 / steps
    x = sde.prior_sample(mix, noise_fn(sde.prior_mean(mix)))
    for i, t_i in enumerate(time_grid(steps, t_eps, sde.T).to(mix)):
        t = t_i.repeat(mix.shape[0])
        for _ in range(corrector_steps):
            x, _ = langevin_corrector_step(sde, score_fn(x, t, mix), x, t, mix, snr, noise_fn(x))
        x, x_mean = reverse_diffusion_step(sde, score_fn(x, t, mix), x, t, mix, dt, noise_fn(x))
        if on_step is not None:
            on_step(i, steps)
    return x_mean if denoise else x
