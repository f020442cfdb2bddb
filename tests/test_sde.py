"""The diffusion-mixing SDE against the reference fixtures (b) and against its own closed forms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import rel_err

from diffsep.config import SDEConfig
from diffsep.errors import ConfigError
from diffsep.sde import DiffusionMixingSDE, make_sde

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"
DT = 1.0 / 30



def matrix_of_L(sde: DiffusionMixingSDE, t: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """L_t as (B, K, K, N), column j = L_t applied to the j-th basis vector at every sample."""
    B, N, K = mix.shape[0], mix.shape[-1], sde.num_sources
    columns = []
    for j in range(K):
        e_j = torch.zeros(B, K, N)
        e_j[:, j] = 1.0
        columns.append(sde.apply_L(e_j, t, mix))
    return torch.stack(columns, dim=2)


def test_mean_drift_and_L_match_reference(case):
    sde, ref = case
    x0, mix = ref["sde.x0"], ref["sde.mix"]
    for k, t in enumerate(ref["sde.t"]):
        assert rel_err(sde.mean(x0, t), ref["sde.mean"][k]) < 1e-5
        assert rel_err(sde.drift(x0, t), ref["sde.drift"][k]) < 1e-5
        L_ref = ref["sde.L"][k]
        L = matrix_of_L(sde, t, mix)
        if L_ref.ndim == 3:  # 'mix': one K x K matrix per batch item, the same at every sample
            L_ref = L_ref[..., None].expand_as(L)
        assert rel_err(L, L_ref) < 1e-5


def test_diffusion_and_discretization_match_reference(case):
    sde, ref = case
    x0, mix = ref["sde.x0"], ref["sde.mix"]
    for k, t in enumerate(ref["sde.t"]):
        g = sde.diffusion(t, mix)
        f, G = sde.discretize(x0, t, mix, DT)
        g_ref, G_ref = ref["sde.diffusion"][k], ref["sde.discretize.G"][k]
        if sde.kind == "mix":  # reference: one value per batch item
            assert g.shape == (2, 1, 1)
            g, G = g.flatten(), G.flatten()
        else:  # reference: broadcast to (B, K, N)
            assert g.shape == (2, 1, 1000)
            g, G = g.expand_as(g_ref), G.expand_as(G_ref)
        assert rel_err(g, g_ref) < 1e-5
        assert rel_err(G, G_ref) < 1e-5
        assert rel_err(f, ref["sde.discretize.f"][k]) < 1e-5


def test_noise_scale(case):
    sde, ref = case
    mix = ref["sde.mix"]
    scale = sde.noise_scale(mix)
    if sde.kind == "mix":
        assert torch.equal(scale, torch.ones(2, 1, 1))
    else:
        assert rel_err(scale, ref["sde.sigma_mix"]) < 1e-5


def test_prior_sample_matches_reference(case):
    sde, ref = case
    mix, z = ref["sde.mix"], ref["sde.prior.z"]
    mix_before, z_before = mix.clone(), z.clone()
    assert rel_err(sde.prior_sample(mix, z), ref["sde.prior.xT"]) < 1e-5
    assert torch.equal(mix, mix_before) and torch.equal(z, z_before)
    assert torch.equal(sde.prior_mean(mix), mix.expand(2, 2, -1) / 2)


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
@pytest.mark.parametrize("K", [2, 3, 4])
def test_L_inverse_is_inverse(kind, K):
    gen = torch.Generator().manual_seed(K)
    sde = DiffusionMixingSDE(num_sources=K, kind=kind)
    x = torch.randn(3, K, 700, generator=gen, dtype=torch.float64)
    mix = torch.randn(3, 1, 700, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.03, 0.4, 1.0], dtype=torch.float64)
    assert torch.allclose(sde.apply_L_inv(sde.apply_L(x, t, mix), t, mix), x, rtol=0, atol=1e-10)
    assert torch.allclose(sde.apply_L(sde.apply_L_inv(x, t, mix), t, mix), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_L_squared_is_closed_form_covariance(K):
    """L_t L_t = lambda1 P + lambda2 (I - P), checked on the explicit K x K matrix."""
    sde = DiffusionMixingSDE(num_sources=K)
    t = torch.tensor([0.3], dtype=torch.float64)
    mix = torch.zeros(1, 1, 1, dtype=torch.float64)
    eye = torch.eye(K, dtype=torch.float64)
    L = torch.stack(
        [sde.apply_L(eye[:, j].reshape(1, K, 1), t, mix)[0, :, 0] for j in range(K)], dim=1
    )
    lambda1, lambda2 = sde.eigenvalues(t)
    P = torch.full((K, K), 1.0 / K, dtype=torch.float64)
    assert torch.allclose(L, L.T)
    assert torch.allclose(L @ L, lambda1 * P + lambda2 * (eye - P), atol=1e-12)
    # the eigenvalues from the paper's formulas, evaluated independently
    rho, gamma = 10.0, 2.0
    assert math.isclose(lambda1.item(), 0.05**2 * (rho**0.6 - 1), rel_tol=1e-12)
    expected2 = (
        0.05**2 * (rho**0.6 - math.exp(-2 * gamma * 0.3)) * math.log(rho) / (gamma + math.log(rho))
    )
    assert math.isclose(lambda2.item(), expected2, rel_tol=1e-12)


@pytest.mark.slow  # a full model run or a large network: over a second
def test_forward_sde_monte_carlo_matches_marginal():
    """Euler-Maruyama paths of dx = -gamma Pbar x dt + g dw reproduce mean_t and Sigma_t (K = 3).

    M = 20000 paths x N = 2 samples (each sample its own s0), 250 steps on [0, 1], float64.
    The Euler scheme's own moments follow an exact K x K recursion; their distance to the closed
    forms is the discretisation bias (checked < 2 %). Empirical moments must match the closed forms
    within that bias plus 5 Monte Carlo standard errors.
    """
    K, N, M, n_steps = 3, 2, 20000, 250
    f64 = torch.float64
    sde = DiffusionMixingSDE(num_sources=K)
    gen = torch.Generator().manual_seed(0)
    s0 = torch.tensor([[1.0, -0.5], [-0.3, 0.8], [0.6, 0.2]], dtype=f64)  # (K, N)
    x = s0.expand(M, K, N).clone()
    mix = torch.zeros(M, 1, N, dtype=f64)
    eye = torch.eye(K, dtype=f64)
    P = torch.full((K, K), 1.0 / K, dtype=f64)
    dt = 1.0 / n_steps
    step_matrix = eye - sde.gamma * dt * (eye - P)  # Euler map of the drift
    em_mean, em_cov = s0.clone(), torch.zeros(K, K, dtype=f64)
    checked = 0
    for i in range(n_steps):
        t = torch.tensor(i * dt, dtype=f64)
        f, G = sde.discretize(x, t, mix, dt)
        x = x + f + G * torch.randn(x.shape, generator=gen, dtype=f64)
        g = 0.05 * 10.0 ** (i * dt) * math.sqrt(2 * math.log(10.0))
        em_mean = step_matrix @ em_mean
        em_cov = step_matrix @ em_cov @ step_matrix.T + g**2 * dt * eye
        if (i + 1) % 125 != 0:  # check at t = 0.5 and t = 1
            continue
        checked += 1
        t_check = torch.tensor([(i + 1) * dt], dtype=f64)
        mean = sde.mean(s0[None], t_check)[0]  # (K, N)
        lambda1, lambda2 = sde.eigenvalues(t_check)
        cov = lambda1 * P + lambda2 * (eye - P)
        mean_bias, cov_bias = (em_mean - mean).abs(), (em_cov - cov).abs()
        assert (mean_bias <= 0.02 * mean.abs().max()).all() and (
            cov_bias <= 0.02 * cov.abs().max()
        ).all()

        mean_se = (cov.diagonal()[:, None] / M).sqrt()
        assert ((x.mean(dim=0) - mean).abs() <= 5 * mean_se + mean_bias).all()
        centred = x - x.mean(dim=0)
        emp_cov = torch.einsum("mkn,mjn->kj", centred, centred) / (M * N - N)
        cov_se = (
            (cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov.square()) / (M * N)
        ).sqrt()
        assert ((emp_cov - cov).abs() <= 5 * cov_se + cov_bias).all(), (emp_cov, cov)
    assert checked == 2


def test_mean_and_covariance_limits():
    """At t = 0 the marginal is the sources; the prior mean is the P-projection y/K."""
    sde = DiffusionMixingSDE(num_sources=3)
    s0 = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(1))
    zero = torch.zeros(2)
    assert torch.allclose(sde.mean(s0, zero), s0, atol=1e-7)
    lambda1, lambda2 = sde.eigenvalues(zero)
    assert torch.equal(lambda1, torch.zeros(2)) and torch.equal(lambda2, torch.zeros(2))
    mix = s0.sum(dim=1, keepdim=True)
    mean_inf = sde.mean(s0, torch.full((2,), 50.0))
    assert torch.allclose(mean_inf, sde.prior_mean(mix), atol=1e-6)


def test_make_sde_takes_config_values():
    sde = make_sde(
        SDEConfig(kind="prior_mix", gamma=1.5, sigma_min=0.1, sigma_max=0.8, avg_len=301), 3
    )
    assert (sde.kind, sde.gamma, sde.sigma_min, sde.sigma_max, sde.avg_len, sde.num_sources) == (
        "prior_mix",
        1.5,
        0.1,
        0.8,
        301,
        3,
    )
    mix = torch.randn(2, 1, 1000, generator=torch.Generator().manual_seed(3))
    assert sde.noise_scale(mix).shape == (2, 1, 1000)  # odd window: no extra sample to drop


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_sources": 1},
        {"num_sources": 2, "kind": "ouve"},
        {"num_sources": 2, "sigma_min": 0.6},
        {"num_sources": 2, "gamma": 0.0},
        {"num_sources": 2, "avg_len": 0},
    ],
)
def test_invalid_configuration_raises(kwargs):
    with pytest.raises(ConfigError):
        DiffusionMixingSDE(**kwargs)


def test_bad_shapes_raise():
    sde = DiffusionMixingSDE(num_sources=2)
    x = torch.zeros(2, 2, 10)
    with pytest.raises(ValueError):
        sde.apply_L(x, torch.ones(3), torch.zeros(2, 1, 10))
    with pytest.raises(ValueError):
        sde.prior_mean(torch.zeros(2, 2, 10))


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
@pytest.mark.parametrize("K", [2, 3])
def test_score_and_sources_convert_both_ways(kind, K):
    from diffsep.sde import project_to_mixture

    sde = DiffusionMixingSDE(num_sources=K, kind=kind, avg_len=15)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, K, 200, generator=g, dtype=torch.float64)
    sources = torch.randn(4, K, 200, generator=g, dtype=torch.float64)
    mix = sources.sum(dim=1, keepdim=True)
    t = torch.tensor([0.03, 0.3, 0.7, 1.0], dtype=torch.float64)
    # the Gaussian marginal's score, written out with the explicit covariance matrix
    score = sde.score_from_sources(x, t, mix, sources)
    lambda1, lambda2 = sde.eigenvalues(t)
    P = torch.full((K, K), 1.0 / K, dtype=torch.float64)
    scale = sde.noise_scale(mix).square()  # (B, 1, 1) or (B, 1, N)
    for b in range(4):
        sigma = lambda1[b] * P + lambda2[b] * (torch.eye(K, dtype=torch.float64) - P)
        expected = -torch.linalg.solve(sigma, x[b] - sde.mean(sources, t)[b]) / scale[b]
        assert torch.allclose(score[b], expected, atol=1e-6 * expected.abs().max())
    back = sde.sources_from_score(x, t, mix, score)
    assert torch.allclose(back, sources, atol=1e-9)
    assert torch.allclose(sde.unmean(sde.mean(sources, t), t), sources, atol=1e-12)
    projected = project_to_mixture(sources + 0.3, mix)
    assert torch.allclose(projected.sum(dim=1, keepdim=True), mix, atol=1e-12)
    assert torch.allclose(projected, sources, atol=1e-12)  # an offset on all sources is removed


@pytest.mark.parametrize("K", [2, 3])
def test_skip_estimate_is_the_linear_mmse_of_gaussian_sources(K):
    # independent Gaussian sources of variance 1/K (a unit-variance mixture): the zero-residual
    # skip estimate is then the exact posterior mean of Pbar s, whose error has the variance
    # c_out^2 on each source before the projection on range(Pbar), which keeps (K - 1) / K
    sde = DiffusionMixingSDE(num_sources=K, kind="mix")
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0.03, 0.2, 0.5, 1.0], dtype=torch.float64)
    sources = torch.randn(4, K, 200_000, generator=g, dtype=torch.float64) / math.sqrt(K)
    mix = sources.sum(dim=1, keepdim=True)
    x = sde.marginal_sample(sources, t, mix, torch.randn(sources.shape, generator=g,
                                                         dtype=torch.float64))
    c_skip, c_out = sde.skip_coefficients(t, mix)
    estimate = sde.sources_from_skip(x, t, mix, torch.zeros_like(x))
    assert torch.allclose(estimate.sum(dim=1, keepdim=True), mix, atol=1e-9)
    mse = (estimate - sources).square().mean(dim=(1, 2))
    assert torch.allclose(mse, c_out.flatten().square() * (K - 1) / K, rtol=0.02)
    for factor in (0.9, 1.1):  # any other gain on Pbar x does worse
        diff = x - x.mean(dim=1, keepdim=True)
        other = mix / K + factor * c_skip * diff
        assert ((other - sources).square().mean(dim=(1, 2)) > mse).all()
    # near t = 0 the skip passes x through: c_skip exp(-gamma t) -> 1, c_out -> 0
    tiny = torch.tensor([1e-4], dtype=torch.float64)
    c_skip0, c_out0 = sde.skip_coefficients(tiny, mix[:1])
    assert float(c_skip0 * math.exp(-sde.gamma * 1e-4)) > 0.999 and float(c_out0) < 0.01
