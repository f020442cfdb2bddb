"""Samplers of the reverse diffusion-mixing SDE and of its probability-flow ODE.

Stateless functions in the style of k-diffusion's ``sampling.py``. Every solver has the shared
signature of :data:`Sampler`::

    solver(sde, score_fn, x, mix, ts, *, noise_fn, on_step=None, denoise=True, **options)

``x`` (B, K, N) is the state at ``ts[0]``, ``ts`` (M,) the decreasing time grid ending at
``t_eps``; the solver returns the sources (B, K, N). :data:`SAMPLERS` maps names to solvers;
:func:`sample` draws the start (the prior, or the network's own estimate at an intermediate
time ``tau``), builds the grid and runs the named solver; :func:`network_calls` counts its NFE.

``score_fn(x (B, K, N), t (B,), mix (B, 1, N)) -> (B, K, N)`` estimates the score
``grad_x log p_t(x | y)``. ``noise_fn(like) -> Tensor`` returns a standard normal tensor shaped like
``like``. ``on_step(i, n)`` is called after step ``i`` of ``n``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from diffsep.config import ModelConfig, SamplerConfig
from diffsep.errors import ConfigError
from diffsep.sde import DiffusionMixingSDE, project_to_mixture

ScoreFn = Callable[[Tensor, Tensor, Tensor], Tensor]
NoiseFn = Callable[[Tensor], Tensor]
StepFn = Callable[[int, int], None]


class Sampler(Protocol):
    """The shared signature of every solver in :data:`SAMPLERS`."""

    def __call__(
        self,
        sde: DiffusionMixingSDE,
        score_fn: ScoreFn,
        x: Tensor,
        mix: Tensor,
        ts: Tensor,
        *,
        noise_fn: NoiseFn,
        on_step: StepFn | None = None,
        denoise: bool = True,
    ) -> Tensor: ...


# -- time grids ------------------------------------------------------------------------------------


def time_grid(steps: int, t_eps: float, T: float = 1.0, rho: float = 1.0) -> Tensor:
    """``steps`` times from ``T`` down to ``t_eps``, both included: (steps,) float32.

    ``rho = 1`` is the reference's uniform grid, computed with ``torch.linspace`` in float32
    (numpy differs by 1 ulp). ``rho > 1`` spaces the times like EDM's Eq. 5,
    ``t_i = (T^(1/rho) + i / (steps - 1) (t_eps^(1/rho) - T^(1/rho)))^rho``: shorter steps near
    ``t_eps``, where the probability-flow ODE bends most.
    """
    if rho == 1.0:
        return torch.linspace(T, t_eps, steps, dtype=torch.float32)
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    inv = 1.0 / rho
    return (T**inv + ramp * (t_eps**inv - T**inv)).pow(rho).float()


# -- building blocks -------------------------------------------------------------------------------


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


def ode_velocity(sde: DiffusionMixingSDE, score: Tensor, x: Tensor, t: Tensor, mix: Tensor) -> Tensor:
    """``dx/dt`` of the probability-flow ODE (Song et al. 2021, Eq. 13): ``f(x) - g(t)^2 score / 2``.

    ``g`` includes the mixture noise scale; all (B, K, N), ``t`` (B,).
    """
    return sde.drift(x, t) - 0.5 * sde.diffusion(t, mix).square() * score


def denoised(sde: DiffusionMixingSDE, score_fn: ScoreFn, x: Tensor, t: Tensor, mix: Tensor) -> Tensor:
    """Tweedie's estimate ``E[s | x_t, y]`` from one network call, made to sum to ``mix``.

    ``x`` (B, K, N), ``t`` (B,), ``mix`` (B, 1, N) -> (B, K, N).
    """
    return project_to_mixture(sde.sources_from_score(x, t, mix, score_fn(x, t, mix)), mix)


def predictive_start(
    sde: DiffusionMixingSDE, score_fn: ScoreFn, x_T: Tensor, mix: Tensor, tau: float, z: Tensor
) -> Tensor:
    """Start at ``tau < T`` from the network's own estimate at ``T`` (StoRM, Lemercier et al. 2023).

    ``s_hat = E[s | x_T, y]`` (one network call), then ``x_tau = mean_tau(s_hat) + L_tau z``.
    ``x_T``, ``z`` (B, K, N), ``mix`` (B, 1, N) -> (B, K, N).
    """
    batch = mix.shape[0]
    t_T = torch.full((batch,), sde.T, dtype=mix.dtype, device=mix.device)
    s_hat = denoised(sde, score_fn, x_T, t_T, mix)
    t_tau = torch.full((batch,), tau, dtype=mix.dtype, device=mix.device)
    return sde.marginal_sample(s_hat, t_tau, mix, z)


# -- solvers ---------------------------------------------------------------------------------------


@torch.no_grad()
def sample_pc(
    sde: DiffusionMixingSDE,
    score_fn: ScoreFn,
    x: Tensor,
    mix: Tensor,
    ts: Tensor,
    *,
    noise_fn: NoiseFn,
    on_step: StepFn | None = None,
    denoise: bool = True,
    snr: float = 0.5,
    corrector_steps: int = 1,
) -> Tensor:
    """Predictor-corrector (Song et al. 2021, Alg. 2; DiffSep Sec. 3.2): ``M (corrector_steps + 1)`` NFE.

    At each ``t_i`` runs the Langevin corrector ``corrector_steps`` times, then the reverse-diffusion
    predictor. As in the reference, every predictor step uses ``dt = ts[0] / M`` (``1 / steps`` from
    ``T = 1``) although the grid stops at ``t_eps``. With ``denoise`` the noise-free ``x_mean`` of
    the last predictor step is returned (its noise is still drawn, so the stream matches the
    reference).
    """
    dt = float(ts[0]) / len(ts)
    x_mean = x
    for i, t_i in enumerate(ts):
        t = t_i.repeat(x.shape[0])
        for _ in range(corrector_steps):
            x, _ = langevin_corrector_step(sde, score_fn(x, t, mix), x, t, mix, snr, noise_fn(x))
        x, x_mean = reverse_diffusion_step(sde, score_fn(x, t, mix), x, t, mix, dt, noise_fn(x))
        if on_step is not None:
            on_step(i, len(ts))
    return x_mean if denoise else x


ODEStep = Callable[[DiffusionMixingSDE, ScoreFn, Tensor, Tensor, Tensor, Tensor], Tensor]
"""One deterministic step ``(sde, score_fn, x, t_cur (B,), t_next (B,), mix) -> x_next``."""


def euler_step(
    sde: DiffusionMixingSDE, score_fn: ScoreFn, x: Tensor, t_cur: Tensor, t_next: Tensor,
    mix: Tensor,
) -> Tensor:
    """Euler step of the probability-flow ODE: one NFE."""
    h = (t_next - t_cur).reshape(-1, 1, 1)
    return x + h * ode_velocity(sde, score_fn(x, t_cur, mix), x, t_cur, mix)


def heun_step(
    sde: DiffusionMixingSDE, score_fn: ScoreFn, x: Tensor, t_cur: Tensor, t_next: Tensor,
    mix: Tensor,
) -> Tensor:
    """Heun's 2nd-order step (Karras et al. 2022, Alg. 1): two NFE. Every step ends at
    ``t >= t_eps > 0``, so every step is corrected."""
    h = (t_next - t_cur).reshape(-1, 1, 1)
    d_cur = ode_velocity(sde, score_fn(x, t_cur, mix), x, t_cur, mix)
    x_next = x + h * d_cur  # Euler step
    d_next = ode_velocity(sde, score_fn(x_next, t_next, mix), x_next, t_next, mix)
    return x + h * 0.5 * (d_cur + d_next)  # 2nd-order correction


def ddim_step(
    sde: DiffusionMixingSDE, score_fn: ScoreFn, x: Tensor, t_cur: Tensor, t_next: Tensor,
    mix: Tensor,
) -> Tensor:
    """First-order exponential integrator (DDIM, Song et al. 2021a): one NFE.

    Holding the estimate ``s_hat = E[s | x_t, y]`` fixed over a step, the ODE is solved exactly:
    ``x_next = mean_next(s_hat) + L_next L_cur^{-1} (x - mean_cur(s_hat))``. Exact in one step when
    the sources are a point mass; the drift and the 1/t stiffness near ``t_eps`` cost no accuracy.
    """
    s_hat = denoised(sde, score_fn, x, t_cur, mix)
    noise = sde.apply_L_inv(x - sde.mean(s_hat, t_cur), t_cur, mix)
    return sde.mean(s_hat, t_next) + sde.apply_L(noise, t_next, mix)


def _ode_sampler(step: ODEStep) -> Sampler:
    """A sampler that runs ``step`` from ``ts[i]`` to ``ts[i + 1]`` over the grid ``ts`` (M,);
    with ``denoise`` the result is Tweedie's estimate at ``ts[-1]`` (one more NFE)."""

    @torch.no_grad()
    def sample(
        sde: DiffusionMixingSDE,
        score_fn: ScoreFn,
        x: Tensor,
        mix: Tensor,
        ts: Tensor,
        *,
        noise_fn: NoiseFn,
        on_step: StepFn | None = None,
        denoise: bool = True,
    ) -> Tensor:
        del noise_fn  # deterministic
        steps = len(ts) - 1 + int(denoise)
        for i in range(len(ts) - 1):
            x = step(sde, score_fn, x, ts[i].repeat(x.shape[0]), ts[i + 1].repeat(x.shape[0]), mix)
            if on_step is not None:
                on_step(i, steps)
        return _final_denoise(sde, score_fn, x, mix, ts, denoise, on_step, steps)

    sample.__doc__ = f"Probability-flow ODE sampler over ``ts``: {step.__doc__}"
    return sample


sample_euler = _ode_sampler(euler_step)
sample_heun = _ode_sampler(heun_step)
sample_ddim = _ode_sampler(ddim_step)


def _final_denoise(
    sde: DiffusionMixingSDE,
    score_fn: ScoreFn,
    x: Tensor,
    mix: Tensor,
    ts: Tensor,
    denoise: bool,
    on_step: StepFn | None,
    steps: int,
) -> Tensor:
    """The last step of the ODE solvers: Tweedie's estimate at ``ts[-1]`` (one NFE) or ``x``."""
    if not denoise:
        return x
    x = denoised(sde, score_fn, x, ts[-1].repeat(x.shape[0]), mix)
    if on_step is not None:
        on_step(steps - 1, steps)
    return x


SAMPLERS: dict[str, Sampler] = {
    "pc": sample_pc,
    "euler": sample_euler,
    "heun": sample_heun,
    "ddim": sample_ddim,
}
"""Solver name -> solver; ``SamplerConfig.method`` and ``--sampler`` pick one."""


# -- the full sampler ------------------------------------------------------------------------------


def check_sampler_settings(settings: SamplerConfig, T: float = 1.0) -> SamplerConfig:
    """The one check of sampler settings (CLI, API, config.json); returns them unchanged.

    Raises :class:`ConfigError` with a one-line message naming the setting and what it accepts.
    """
    if settings.method not in SAMPLERS:
        raise ConfigError(
            f"sampler: unknown method {settings.method!r}; accepted: {', '.join(SAMPLERS)}"
        )
    if not isinstance(settings.steps, int) or settings.steps < 1:
        raise ConfigError(f"steps: must be an integer >= 1, got {settings.steps!r}")
    if settings.corrector_steps < 0:
        raise ConfigError(f"corrector steps: must be >= 0, got {settings.corrector_steps}")
    if not (math.isfinite(settings.snr) and settings.snr >= 0):
        raise ConfigError(f"snr: must be >= 0, got {settings.snr}")
    if not 0.0 < settings.t_eps < T:
        raise ConfigError(f"t_eps: must lie in (0, {T}), got {settings.t_eps}")
    if not (math.isfinite(settings.grid_rho) and settings.grid_rho > 0):
        raise ConfigError(f"grid rho: must be a positive number, got {settings.grid_rho}")
    if settings.method == "pc" and settings.grid_rho != 1.0:
        raise ConfigError(
            f"grid rho: sampler 'pc' steps by a fixed dt = start / steps on the uniform grid; "
            f"use 1 with it (got {settings.grid_rho}) or an ODE sampler (euler, heun, ddim)"
        )
    if settings.tau is not None and not settings.t_eps < settings.tau < T:
        raise ConfigError(
            f"tau: must lie in (t_eps, T) = ({settings.t_eps}, {T}), got {settings.tau}"
        )
    if settings.method != "pc" and settings.steps < 2 and not settings.denoise:
        raise ConfigError(f"steps: sampler {settings.method!r} without denoise needs steps >= 2")
    return settings


def network_calls(settings: SamplerConfig) -> int:
    """Number of network calls (NFE) per window of :func:`sample` with ``settings``."""
    start = int(settings.tau is not None)
    steps = settings.steps
    if settings.method == "pc":
        return start + steps * (settings.corrector_steps + 1)
    per_step = {"euler": 1, "ddim": 1, "heun": 2}[settings.method]
    return start + per_step * (steps - 1) + int(settings.denoise)


def describe_sampler(settings: SamplerConfig) -> str:
    """The sampler in words, e.g. ``"ddim from tau 0.5, 3 steps = 4 network calls per window"``."""
    start = "" if settings.tau is None else f" from tau {settings.tau:g}"
    calls = network_calls(settings)
    return (f"{settings.method}{start}, {_count(settings.steps, 'step')} = "
            f"{_count(calls, 'network call')} per window")


def one_call_caution(model: ModelConfig, chosen: SamplerConfig) -> str | None:
    """A warning when a source-predicting model made for one network call is run with more.

    Such models (``parameterisation`` "data" or "data_skip" whose own default sampler makes a
    single call) were trained mostly near t = T; samplers that go down to small t follow their
    poor estimates there and score below the one-call estimate (recipes/README.md)."""
    model_default = model.sampler
    if model.parameterisation == "score" or network_calls(model_default) != 1:
        return None
    calls = network_calls(chosen)
    if calls == 1:
        return None
    return (f"this model predicts the sources and is made for one network call per window: "
            f"with {_count(calls, 'call')} ({chosen.method}, {_count(chosen.steps, 'step')}) it "
            f"scores lower (much lower for some models: see its model card); its default is "
            f"{model_default.method} with {_count(model_default.steps, 'step')}")


def _count(number: int, noun: str) -> str:
    """``"1 step"``, ``"3 steps"``."""
    return f"{number} {noun}{'s' * (number != 1)}"


def solver_options(solver: Sampler, settings: SamplerConfig) -> dict[str, object]:
    """The keyword options of ``solver`` beyond the shared ones, taken from ``settings``."""
    shared = {"noise_fn", "on_step", "denoise"}
    names = [
        name
        for name, param in inspect.signature(solver).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY and name not in shared
    ]
    return {name: getattr(settings, name) for name in names}


@torch.no_grad()
def sample(
    sde: DiffusionMixingSDE,
    score_fn: ScoreFn,
    mix: Tensor,
    settings: SamplerConfig,
    *,
    noise_fn: NoiseFn,
    on_step: StepFn | None = None,
) -> Tensor:
    """Sources (B, K, N) given the mixture ``mix`` (B, 1, N) with the sampler ``settings.method``.

    Starts from the prior ``x_T = y / K + L_T z``; with ``settings.tau`` moves to ``tau`` with
    :func:`predictive_start` (one more draw and one NFE). Then runs the solver on
    ``time_grid(steps, t_eps, start, grid_rho)``. :func:`network_calls` gives the NFE.
    """
    check_sampler_settings(settings, sde.T)
    solver = SAMPLERS[settings.method]
    x = sde.prior_sample(mix, noise_fn(sde.prior_mean(mix)))
    start = sde.T
    if settings.tau is not None:
        x = predictive_start(sde, score_fn, x, mix, settings.tau, noise_fn(x))
        start = settings.tau
    ts = time_grid(settings.steps, settings.t_eps, start, settings.grid_rho).to(mix)
    options = solver_options(solver, settings)
    return solver(
        sde, score_fn, x, mix, ts, noise_fn=noise_fn, on_step=on_step, denoise=settings.denoise,
        **options,
    )


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
    on_step: StepFn | None = None,
) -> Tensor:
    """The reference sampler: :func:`sample` with method ``pc`` from the prior on the uniform grid;
    ``steps * (corrector_steps + 1)`` NFE. Shapes and callbacks as in :func:`sample`."""
    settings = SamplerConfig(
        method="pc", steps=steps, snr=snr, corrector_steps=corrector_steps, t_eps=t_eps,
        denoise=denoise,
    )
    return sample(sde, score_fn, mix, settings, noise_fn=noise_fn, on_step=on_step)
