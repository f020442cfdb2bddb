"""Predictor-corrector sampler against reference fixture (c) and the reference's call/noise order."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import rel_err

from diffsep.errors import ConfigError
from diffsep.sampling import langevin_corrector_step, pc_sample, reverse_diffusion_step, time_grid
from diffsep.sde import DiffusionMixingSDE

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"



def test_time_grid_is_reference_grid(case):
    _, ref = case
    grid = time_grid(30, 0.03)
    assert grid.dtype == torch.float32
    assert torch.equal(grid, ref["sampler.timesteps"])


def test_prior_of_sampler_inputs(case):
    sde, ref = case
    assert (
        rel_err(sde.prior_sample(ref["step.y"], ref["step.prior_z"]), ref["step.prior_xT"]) < 1e-5
    )
    assert torch.equal(ref["step.i0.x_in"], ref["step.prior_xT"])


@pytest.mark.parametrize("i", [0, 29])
def test_corrector_and_predictor_steps_match_reference(case, i):
    sde, ref = case
    p = f"step.i{i}."
    y, t, x_in = ref["step.y"], ref[p + "t"], ref[p + "x_in"]
    assert torch.equal(t, time_grid(30, 0.03)[i].repeat(2))
    x_in_before = x_in.clone()

    x, x_mean = langevin_corrector_step(
        sde, ref[p + "corr_score"], x_in, t, y, 0.5, ref[p + "corr_noise"]
    )
    assert rel_err(x, ref[p + "corr_x"]) < 1e-5
    assert rel_err(x_mean, ref[p + "corr_x_mean"]) < 1e-5
    assert torch.equal(x_in, x_in_before)

    x, x_mean = reverse_diffusion_step(
        sde, ref[p + "pred_score"], ref[p + "corr_x"], t, y, 1 / 30, ref[p + "pred_z"]
    )
    assert rel_err(x, ref[p + "pred_x"]) < 1e-5
    assert rel_err(x_mean, ref[p + "pred_x_mean"]) < 1e-5


class Recorder:
    """A deterministic score_fn and a seeded noise_fn that log every call."""

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)
        self.events: list[tuple[str, object]] = []
        self.noises: list[torch.Tensor] = []

    def score_fn(self, x, t, mix):
        self.events.append(("score", t.clone()))
        return torch.tanh(x) - 0.3 * mix + t[:, None, None]

    def noise_fn(self, like):
        z = torch.randn(like.shape, generator=self.gen, dtype=like.dtype)
        self.events.append(("noise", tuple(like.shape)))
        self.noises.append(z)
        return z


def reference_loop(mix, noises, score_fn, steps, snr, t_eps, denoise):
    """The reference PC loop written out with explicit 2 x 2 matrices (kind 'mix', K = 2)."""
    B = mix.shape[0]
    A = torch.full((2, 2), 0.5)
    Pbar = torch.eye(2) - A
    rho = 10.0

    def L(t):
        lam1 = 0.05**2 * (rho ** (2 * t) - 1)
        lam2 = 0.05**2 * (rho ** (2 * t) - math.exp(-4 * t)) / (1 + 2 / math.log(rho))
        return math.sqrt(lam1) * A + math.sqrt(lam2) * Pbar

    noise = iter(noises)
    x = 0.5 * mix.expand(B, 2, -1) + L(1.0) @ next(noise)
    for t_i in torch.linspace(1.0, t_eps, steps):
        t = float(t_i)
        vec_t = torch.full((B,), t)
        s = score_fn(x, vec_t, mix)
        x = x + 2 * snr**2 * (L(t) @ (L(t) @ s)) + (2 * snr * L(t)) @ next(noise)
        s = score_fn(x, vec_t, mix)
        G = 0.05 * rho**t * math.sqrt(2 * math.log(rho)) * math.sqrt(1 / steps)
        x_mean = x - (-2.0 * Pbar @ x / steps - G**2 * s)
        x = x_mean + G * next(noise)
    return x_mean if denoise else x


@pytest.mark.parametrize("denoise", [True, False])
def test_pc_sample_order_of_calls_and_result(denoise):
    steps, B, N = 5, 2, 64
    sde = DiffusionMixingSDE(num_sources=2)
    mix = torch.randn(B, 1, N, generator=torch.Generator().manual_seed(7))
    mix_before = mix.clone()
    rec = Recorder()
    progress: list[tuple[int, int]] = []
    out = pc_sample(
        sde,
        rec.score_fn,
        mix,
        steps=steps,
        snr=0.5,
        corrector_steps=1,
        t_eps=0.03,
        denoise=denoise,
        noise_fn=rec.noise_fn,
        on_step=lambda i, n: progress.append((i, n)),
    )
    assert out.shape == (B, 2, N)
    assert torch.equal(mix, mix_before)
    assert progress == [(i, steps) for i in range(steps)]

    # 1 prior draw, then per step: corrector score, corrector noise, predictor score, predictor noise
    kinds = [kind for kind, _ in rec.events]
    assert kinds == ["noise"] + ["score", "noise", "score", "noise"] * steps
    assert all(shape == (B, 2, N) for kind, shape in rec.events if kind == "noise")
    score_times = [t for kind, t in rec.events if kind == "score"]
    assert len(score_times) == 2 * steps  # NFE
    grid = time_grid(steps, 0.03)
    for k, t in enumerate(score_times):
        assert torch.equal(t, grid[k // 2].repeat(B))

    expected = reference_loop(mix, rec.noises, Recorder().score_fn, steps, 0.5, 0.03, denoise)
    assert rel_err(out, expected) < 1e-5


@pytest.mark.parametrize("corrector_steps", [0, 2])
def test_corrector_steps_change_nfe_and_draws(corrector_steps):
    steps = 3
    sde = DiffusionMixingSDE(num_sources=3, kind="prior_mix")
    mix = torch.randn(1, 1, 40, generator=torch.Generator().manual_seed(2))
    rec = Recorder()
    out = pc_sample(
        sde, rec.score_fn, mix, steps=steps, corrector_steps=corrector_steps, noise_fn=rec.noise_fn
    )
    assert out.shape == (1, 3, 40) and torch.isfinite(out).all()
    kinds = [kind for kind, _ in rec.events]
    assert kinds == ["noise"] + (["score", "noise"] * (corrector_steps + 1)) * steps


def test_pc_sample_with_exact_gaussian_score_recovers_sources():
    """With the exact score of p_t(x | s0), sampling from the prior lands near s0."""
    sde = DiffusionMixingSDE(num_sources=2)
    gen = torch.Generator().manual_seed(5)
    s0 = torch.randn(1, 2, 4000, generator=gen) * 0.5
    mix = s0.sum(dim=1, keepdim=True)

    def exact_score(x, t, y):
        # grad log N(x; mean_t(s0), L_t L_t) = -L_t^{-T} L_t^{-1} (x - mean_t), L_t symmetric
        return -sde.apply_L_inv(sde.apply_L_inv(x - sde.mean(s0, t), t, y), t, y)

    out = pc_sample(
        sde, exact_score, mix, noise_fn=lambda like: torch.randn(like.shape, generator=gen)
    )
    rel = ((out - s0).square().sum() / s0.square().sum()).sqrt().item()
    assert rel < 0.05  # measured ~0.01; the prior mean alone is ~0.7 away (relative)
    prior_rel = ((sde.prior_mean(mix) - s0).square().sum() / s0.square().sum()).sqrt().item()
    assert prior_rel > 0.5


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"corrector_steps": -1}, {"t_eps": 0.0}, {"t_eps": 1.0}, {"snr": -0.1}]
)
def test_invalid_sampler_settings_raise(kwargs):
    sde = DiffusionMixingSDE(num_sources=2)
    rec = Recorder()
    with pytest.raises(ConfigError):
        pc_sample(sde, rec.score_fn, torch.zeros(1, 1, 8), noise_fn=rec.noise_fn, **kwargs)
    assert rec.events == []


def test_one_call_caution_only_for_source_predictors_run_with_more_calls() -> None:
    from diffsep.config import ModelConfig, SamplerConfig
    from diffsep.sampling import one_call_caution

    def model(parameterisation: str, default: SamplerConfig) -> ModelConfig:
        return ModelConfig(parameterisation=parameterisation, sampler=default)

    one_call = SamplerConfig(method="ddim", steps=1)
    many = SamplerConfig(method="heun", steps=3, tau=0.5)  # 1 + 2 * 2 + 1 calls
    assert one_call_caution(model("data", one_call), one_call) is None
    assert one_call_caution(model("score", one_call), many) is None  # score models sample as trained
    pc30 = SamplerConfig(method="pc", steps=30)
    assert one_call_caution(model("data_skip", pc30), many) is None  # not made for one call
    message = one_call_caution(model("data_skip", one_call), many)
    assert message is not None and "with 6 calls (heun, 3 steps)" in message
    assert message.endswith("its default is ddim with 1 step")
