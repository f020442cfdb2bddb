"""The sampler registry, the few-step solvers and the predictive start, on closed-form cases.

The Gaussian toy: given the mixture, the sources are ``s = y / K + d`` with ``d ~ N(0, c^2 Pbar)``
independently at every sample. Then ``p_t(x | y)`` is Gaussian with covariance
``lambda1 ns^2 P + (a^2 c^2 + lambda2 ns^2) Pbar`` (``a = exp(-gamma t)``, ``ns`` the noise scale),
so the exact score, the exact probability-flow ODE solution and Tweedie's estimate are closed-form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch

from diffsep.config import SamplerConfig
from diffsep.errors import ConfigError
from diffsep.sampling import (
    SAMPLERS,
    check_sampler_settings,
    denoised,
    network_calls,
    pc_sample,
    predictive_start,
    sample,
    time_grid,
)
from diffsep.sde import DiffusionMixingSDE

ODE_SOLVERS = ["euler", "heun", "ddim"]
C = 0.6  # standard deviation of the sources around their average


@dataclass
class GaussianToy:
    """Exact score, ODE flow and Tweedie estimate of the Gaussian toy (module docstring)."""

    sde: DiffusionMixingSDE
    mix: torch.Tensor  # (1, 1, N)

    def variances(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(variance on range(P), variance on range(Pbar), a = exp(-gamma t)), each (B, 1, N)."""
        t = t.reshape(-1, 1, 1)
        lambda1, lambda2 = self.sde.eigenvalues(t)
        ns2 = self.sde.noise_scale(self.mix).square()
        a = torch.exp(-self.sde.gamma * t)
        return lambda1 * ns2, a * a * C * C + lambda2 * ns2, a

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P x - y / K, Pbar x)."""
        avg = x.mean(dim=1, keepdim=True)
        return avg - self.mix / x.shape[1], x - avg

    def score(self, x: torch.Tensor, t: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        assert torch.equal(mix, self.mix.expand_as(mix))
        v1, v2, _ = self.variances(t)
        centred, dev = self.split(x)
        return -(centred / v1 + dev / v2)

    def flow(self, x_T: torch.Tensor, t: float) -> torch.Tensor:
        """Exact probability-flow ODE solution at ``t`` from ``x_T`` at ``T``."""
        v1_T, v2_T, _ = self.variances(torch.ones(1))
        v1, v2, _ = self.variances(torch.tensor([t]))
        centred, dev = self.split(x_T)
        return self.mix / 2 + centred * (v1 / v1_T).sqrt() + dev * (v2 / v2_T).sqrt()

    def tweedie(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """Exact ``E[s | x_t, y]``."""
        _, v2, a = self.variances(torch.tensor([t]))
        _, dev = self.split(x)
        return self.mix / 2 + a * C * C / v2 * dev


def make_toy(kind: str = "mix", n: int = 4000, seed: int = 0) -> GaussianToy:
    mix = torch.randn(1, 1, n, generator=torch.Generator().manual_seed(seed))
    return GaussianToy(DiffusionMixingSDE(num_sources=2, kind=kind), mix)


class Draws:
    """A seeded ``noise_fn`` that keeps its draws."""

    def __init__(self, seed: int = 1) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.draws: list[torch.Tensor] = []

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(like.shape, generator=self.gen, dtype=like.dtype)
        self.draws.append(z)
        return z


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def ode_error(toy: GaussianToy, method: str, steps: int, rho: float = 1.0) -> float:
    """Relative error of a denoised ODE sample against the exact flow + Tweedie from its start."""
    noise = Draws()
    settings = SamplerConfig(method=method, steps=steps, grid_rho=rho)
    out = sample(toy.sde, toy.score, toy.mix, settings, noise_fn=noise)
    x_T = toy.sde.prior_sample(toy.mix, noise.draws[0])
    exact = toy.tweedie(toy.flow(x_T, settings.t_eps), settings.t_eps)
    return rel(out, exact)


# -- the closed-form toy itself ----------------------------------------------------------------


def test_toy_score_and_tweedie_agree_with_the_sde_conversions():
    toy = make_toy("prior_mix")
    t = torch.tensor([0.4])
    x = toy.flow(toy.sde.prior_sample(toy.mix, Draws()(toy.sde.prior_mean(toy.mix))), 0.4)
    from_score = toy.sde.sources_from_score(x, t, toy.mix, toy.score(x, t, toy.mix))
    assert rel(from_score, toy.tweedie(x, 0.4)) < 1e-5
    assert rel(denoised(toy.sde, toy.score, x, t, toy.mix), toy.tweedie(x, 0.4)) < 1e-5


# -- ODE solvers: accuracy and order of convergence ----------------------------------------------


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
@pytest.mark.parametrize("method", ODE_SOLVERS)
def test_ode_solvers_converge_to_the_exact_flow(kind, method):
    toy = make_toy(kind)
    errors = [ode_error(toy, method, steps) for steps in (5, 9, 17, 33)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    # measured order: euler and ddim halve the error per doubling, heun divides it by ~4-5
    ratio = errors[-2] / errors[-1]
    if method == "heun":
        assert ratio > 3.0, errors
        assert errors[-1] < 2e-3, errors
    else:
        assert 1.6 < ratio < 2.6, errors
        assert errors[-1] < 0.1, errors


def test_heun_is_accurate_with_few_steps():
    """Heun with 5 grid points (9 NFE) is within 5 % of the exact flow; Euler at 9 NFE is not."""
    toy = make_toy("mix")
    assert ode_error(toy, "heun", 5) < 0.05  # measured 0.037
    assert ode_error(toy, "euler", 9) > 0.15  # measured 0.21


def test_grid_rho_changes_the_grid_and_the_result():
    toy = make_toy("mix")
    assert ode_error(toy, "heun", 9, rho=2.0) != ode_error(toy, "heun", 9, rho=1.0)
    assert ode_error(toy, "heun", 17, rho=2.0) < 5e-3


def test_ddim_step_is_exact_for_a_point_mass():
    """With the sources known (the exact score of a point mass), one DDIM step from T reaches them."""
    sde = DiffusionMixingSDE(num_sources=3, kind="prior_mix")
    gen = torch.Generator().manual_seed(4)
    s0 = torch.randn(2, 3, 500, generator=gen)
    mix = s0.sum(dim=1, keepdim=True)

    def point_mass_score(x, t, y):
        return sde.score_from_sources(x, t, y, s0)

    for steps in (1, 2, 4):
        out = sample(sde, point_mass_score, mix, SamplerConfig(method="ddim", steps=steps),
                     noise_fn=Draws())
        assert rel(out, s0) < 1e-4


# -- predictor-corrector on the toy --------------------------------------------------------------


@pytest.mark.parametrize("steps,corrector_steps", [(30, 1), (60, 1)])
def test_pc_samples_the_toy_distribution(steps, corrector_steps):
    toy = make_toy("mix", n=20000, seed=3)
    settings = SamplerConfig(method="pc", steps=steps, corrector_steps=corrector_steps)
    out = sample(toy.sde, toy.score, toy.mix, settings, noise_fn=Draws(5))
    centred, dev = toy.split(out)
    assert centred.abs().max() < 0.1  # the average of the sources is y / K (measured 0.01-0.03)
    variance = 2 * dev.square().mean().item()  # per-sample variance of d on range(Pbar)
    # measured 0.354 (30 steps) and 0.341 (60): the reference's dt = 1 / steps biases it slightly
    assert abs(variance - C * C) < 0.07 * C * C


def test_pc_with_few_steps_misses_the_toy_distribution():
    toy = make_toy("mix", n=20000, seed=3)
    out = sample(toy.sde, toy.score, toy.mix, SamplerConfig(steps=5), noise_fn=Draws(5))
    centred, _ = toy.split(out)
    assert centred.abs().max() > 0.3  # measured 0.9: the test above can fail


def test_sample_pc_is_pc_sample():
    toy = make_toy("prior_mix", n=300)
    a = sample(toy.sde, toy.score, toy.mix, SamplerConfig(steps=4, snr=0.3), noise_fn=Draws(2))
    b = pc_sample(toy.sde, toy.score, toy.mix, steps=4, snr=0.3, noise_fn=Draws(2))
    assert torch.equal(a, b)


# -- the predictive start (StoRM-style) ----------------------------------------------------------


def test_predictive_start_is_the_marginal_around_the_estimate_at_T():
    toy = make_toy("prior_mix", n=500)
    noise = Draws()
    x_T = toy.sde.prior_sample(toy.mix, noise(toy.sde.prior_mean(toy.mix)))
    z = noise(x_T)
    x_tau = predictive_start(toy.sde, toy.score, x_T, toy.mix, 0.4, z)
    s_hat = toy.tweedie(x_T, 1.0)
    expected = toy.sde.mean(s_hat, torch.tensor([0.4])) + toy.sde.apply_L(
        z, torch.tensor([0.4]), toy.mix
    )
    assert rel(x_tau, expected) < 1e-5


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_predictive_start_with_a_perfect_estimate_recovers_the_sources(method):
    """A network that knows the sources (point-mass score): every sampler from tau lands on them."""
    sde = DiffusionMixingSDE(num_sources=2)
    gen = torch.Generator().manual_seed(6)
    s0 = torch.randn(1, 2, 3000, generator=gen) * 0.5
    mix = s0.sum(dim=1, keepdim=True)
    calls: list[float] = []

    def oracle(x, t, y):
        calls.append(float(t[0]))
        return sde.score_from_sources(x, t, y, s0)

    settings = SamplerConfig(method=method, steps=30 if method == "pc" else 6, tau=0.5)
    out = sample(sde, oracle, mix, settings, noise_fn=Draws())
    assert calls[0] == pytest.approx(sde.T) and max(calls[1:]) == pytest.approx(0.5)
    assert rel(out, s0) < 0.05  # the prior mean alone is ~0.7 away


# -- the registry: shared signature, NFE, progress, validation ----------------------------------


@pytest.mark.parametrize("method", list(SAMPLERS))
@pytest.mark.parametrize("steps,denoise,tau", [(1, True, None), (4, True, None), (4, False, 0.6)])
def test_network_calls_counts_every_call(method, steps, denoise, tau):
    toy = make_toy("mix", n=64)
    settings = SamplerConfig(method=method, steps=steps, denoise=denoise, tau=tau,
                             corrector_steps=2)
    if method != "pc" and steps < 2 and not denoise:
        pytest.skip("rejected by the settings check")
    calls = []
    progress: list[tuple[int, int]] = []
    mix_before = toy.mix.clone()

    def counting_score(x, t, mix):
        calls.append(t)
        return toy.score(x, t, mix)

    out = sample(toy.sde, counting_score, toy.mix, settings, noise_fn=Draws(),
                 on_step=lambda i, n: progress.append((i, n)))
    assert out.shape == (1, 2, 64) and torch.isfinite(out).all()
    assert torch.equal(toy.mix, mix_before)
    assert len(calls) == network_calls(settings)
    assert [i for i, _ in progress] == list(range(len(progress)))
    assert progress and all(n == len(progress) for _, n in progress)
    times = torch.stack([t[0] for t in calls])
    if tau is not None:  # the predictive start calls the network at T first
        assert times[0] == 1.0
        times = times[1:]
    start = tau if tau is not None else 1.0
    assert times.max() <= start + 1e-6 and times.min() >= settings.t_eps - 1e-6


def test_pc_nfe_matches_the_reference_count():
    assert network_calls(SamplerConfig()) == 60
    assert network_calls(SamplerConfig(method="heun", steps=5)) == 9
    assert network_calls(SamplerConfig(method="euler", steps=10, tau=0.5)) == 11


def test_time_grid_spacing():
    uniform = time_grid(8, 0.03)
    assert torch.equal(uniform, torch.linspace(1.0, 0.03, 8))
    dense = time_grid(8, 0.03, 1.0, rho=3.0)
    assert dense[0] == pytest.approx(1.0) and dense[-1] == pytest.approx(0.03)
    assert (dense.diff() < 0).all()
    assert -dense.diff()[-1] < -uniform.diff()[-1]  # shorter last step
    from_tau = time_grid(5, 0.03, 0.5, rho=2.0)
    assert from_tau[0] == pytest.approx(0.5) and math.isclose(float(from_tau[-1]), 0.03,
                                                              rel_tol=1e-6)


@pytest.mark.parametrize(
    "change,words",
    [
        ({"method": "rk45"}, ["sampler", "rk45", "pc, euler, heun, ddim"]),
        ({"steps": 0}, ["steps", ">= 1"]),
        ({"tau": 1.0}, ["tau", "(0.03, 1.0)"]),
        ({"tau": 0.01}, ["tau", "(0.03, 1.0)"]),
        ({"method": "ddim", "grid_rho": 0.0}, ["grid rho", "positive"]),
        ({"snr": -1.0}, ["snr", ">= 0"]),
        ({"t_eps": 1.5}, ["t_eps", "(0, 1.0)"]),
        ({"method": "heun", "steps": 1, "denoise": False}, ["steps", ">= 2"]),
        ({"grid_rho": 2.0}, ["grid rho", "'pc'", "use 1"]),
    ],
)
def test_bad_settings_are_one_line_errors_before_any_call(change, words):
    settings = replace(SamplerConfig(), **change)
    with pytest.raises(ConfigError) as err:
        check_sampler_settings(settings)
    message = str(err.value)
    assert "\n" not in message and all(word in message for word in words), message
    calls = []
    with pytest.raises(ConfigError):
        sample(DiffusionMixingSDE(num_sources=2), lambda *a: calls.append(a),
               torch.zeros(1, 1, 8), settings, noise_fn=lambda like: calls.append(like))
    assert calls == []
