"""The DiffSep training objective (Scheibler et al., ICASSP 2023, Sec. 3.3), as pure functions.

Denoising score matching weighted by the marginal's square root ``L_t``: for ``x_t = mean_t(s)
+ L_t z`` the score of the Gaussian marginal is ``-L_t^{-T} z = -L_t^{-1} z`` (``L_t`` is
symmetric), so the network output ``q`` is trained with

    loss = mean over sources and samples of (L_t q + z)^2,

which is zero exactly when ``q = -L_t^{-1} z``.

The t = T branch: at inference the sampler starts from the mixture, ``x_T = y / K + L_T z``,
whose mean differs from the model's ``mean_T(s) = y / K + exp(-gamma T) Pbar s``. With
probability ``p_T`` an item is trained at ``t = T`` from exactly that start; the mismatch is
folded into the noise target, ``z_p = z + L_T^{-1}(y / K - mean_T(s_p))``, for every order
``p`` of the sources, and the smallest loss over the orders is kept (permutation invariant
training). The network input is the same for every order, so it runs once. Enhancement keeps
the sources ordered (speech, noise): one order only.

Data prediction (``optim.loss = "sisdr"``, for networks that output source estimates ``s_hat``,
see ``ModelConfig.parameterisation``): the estimates are scored with a permutation-invariant
negative SI-SDR, plus ``score_weight`` times the score-matching loss of the score they imply.
With ``score = -Sigma_t^{-1}(x_t - mean_t(s_hat))`` that loss is
``|L_t^{-1}(mean_t(s_hat) - mean_t(s))|^2 = w(t) |Pbar (s_hat - s)|^2``, ``w(t) = exp(-2 gamma t)
/ lambda2(t)`` (over the noise scale squared for ``prior_mix``), for the ordinary and the
``t = T`` branch alike; ``w`` is clipped at ``snr_clip`` (min-SNR weighting, Hang et al. 2023),
since it grows without bound as ``t -> 0``.

Shapes: mixture ``(B, 1, N)``, sources ``(B, K, N)``, times ``(B,)``; all float32. The sources
are expected to sum to the mixture (see :func:`normalize_batch`). No function here reads a
value back to the host, so a training step does not wait for the device.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from diffsep.processing import STD_FLOOR
from diffsep.sde import DiffusionMixingSDE


@dataclass(frozen=True)
class TrainingDraw:
    """The random quantities of one training step.

    ``t`` (B,) diffusion times (``T`` where ``at_T``), ``at_T`` (B,) bool, ``z`` (B, K, N)
    standard normal, ``order`` (B, K) int64: the order in which each item's sources are
    presented on the ordinary (t < T) branch.
    """

    t: Tensor
    at_T: Tensor
    z: Tensor
    order: Tensor


def normalize_batch(mix: Tensor, sources: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-mean, unit-variance mixtures, with the sources scaled alike.

    ``mix`` (B, 1, N), ``sources`` (B, K, N) -> new tensors of the same shapes. The mixture is
    normalised as at inference (:func:`diffsep.processing.normalize_mixture`); each source
    loses ``mean / K`` and is divided by the same std, so the sources still sum to the mixture.
    """
    mean = mix.mean(dim=(1, 2), keepdim=True)
    std = mix.std(dim=(1, 2), keepdim=True).clamp(min=STD_FLOOR)
    return (mix - mean) / std, (sources - mean / sources.shape[1]) / std


def draw_training_noise(
    batch: int,
    num_sources: int,
    num_samples: int,
    *,
    p_T: float,
    t_min: float,
    shuffle_sources: bool,
    generator: torch.Generator,
    T: float = 1.0,
    device: torch.device | str = "cpu",
    t_skew: float = 1.0,
) -> TrainingDraw:
    """Draw times (in ``[t_min, T)``, or ``T`` with probability ``p_T``), noise and source
    orders (random permutations if ``shuffle_sources``, else the identity).

    Times are ``t_min + (T - t_min) (1 - (1 - u)^t_skew)`` for uniform ``u``: uniform for
    ``t_skew = 1`` (the paper), denser near ``T`` for ``t_skew > 1``."""
    uniform = torch.rand(batch, generator=generator, device=device)
    skewed = uniform if t_skew == 1.0 else 1.0 - (1.0 - uniform) ** t_skew
    t = t_min + (T - t_min) * skewed
    at_T = torch.rand(batch, generator=generator, device=device) < p_T
    t = torch.where(at_T, torch.full_like(t, T), t)
    z = torch.randn(batch, num_sources, num_samples, generator=generator, device=device)
    if shuffle_sources:
        keys = torch.rand(batch, num_sources, generator=generator, device=device)
        order = keys.argsort(dim=1)
    else:
        order = torch.arange(num_sources, device=device).expand(batch, num_sources).clone()
    return TrainingDraw(t=t, at_T=at_T, z=z, order=order)


def reorder_sources(sources: Tensor, order: Tensor) -> Tensor:
    """``sources`` (B, K, N) with item b's sources taken in ``order[b]`` (B, K) -> (B, K, N)."""
    index = order[:, :, None].expand(-1, -1, sources.shape[-1])
    return torch.gather(sources, 1, index)


def score_matching_loss(
    sde: DiffusionMixingSDE, score: Tensor, z: Tensor, t: Tensor, mix: Tensor
) -> Tensor:
    """Per-item ``mean((L_t score + z)^2)`` over sources and samples: (B, K, N) -> (B,)."""
    return (sde.apply_L(score, t, mix) + z).square().mean(dim=(1, 2))


def network_input(
    sde: DiffusionMixingSDE, mix: Tensor, sources: Tensor, draw: TrainingDraw
) -> Tensor:
    """The network input ``x_t`` (B, K, N) of every item of the batch.

    Ordinary items: ``x_t = mean_t(s in draw.order) + L_t z`` (score target ``-L_t^{-1} z``).
    Items ``at_T``: ``x_T = y / K + L_T z``, the sampler's start (targets: see
    :func:`prior_branch_loss`).
    """
    ordered = reorder_sources(sources, draw.order)
    t = draw.t
    perturbed = sde.marginal_sample(ordered, t, mix, draw.z)
    prior_start = sde.prior_mean(mix) + sde.apply_L(draw.z, t, mix)
    select = draw.at_T[:, None, None]
    return torch.where(select, prior_start, perturbed)


def prior_branch_loss(
    sde: DiffusionMixingSDE,
    score: Tensor,
    z: Tensor,
    t: Tensor,
    mix: Tensor,
    sources: Tensor,
    *,
    permutation_invariant: bool,
) -> tuple[Tensor, Tensor]:
    """Loss of items started from the mixture: ``(loss (B,), best order index (B,) int64)``.

    For each order ``p`` of the sources the target noise is ``z_p = z + L_t^{-1}(y/K -
    mean_t(s_p))``; the loss is ``min_p mean((L_t score + z_p)^2)`` (only the identity order
    when not ``permutation_invariant``). The index refers to ``itertools.permutations(range(K))``.
    """
    num_sources = sources.shape[1]
    orders = source_orders(num_sources, permutation_invariant)
    weighted = sde.apply_L(score, t, mix)
    start = sde.prior_mean(mix)
    losses = []
    for order in orders:
        mismatch = start - sde.mean(sources[:, list(order)], t)
        target = z + sde.apply_L_inv(mismatch, t, mix)
        losses.append((weighted + target).square().mean(dim=(1, 2)))
    stacked = torch.stack(losses, dim=1)
    best = stacked.min(dim=1)
    return best.values, best.indices


def diffsep_loss(
    sde: DiffusionMixingSDE,
    score: Tensor,
    mix: Tensor,
    sources: Tensor,
    draw: TrainingDraw,
    *,
    permutation_invariant: bool,
) -> Tensor:
    """Per-item training loss (B,) of the network output ``score`` (B, K, N) for ``x_t`` built by
    :func:`network_input` from the same ``draw``: the score-matching loss for ordinary items,
    :func:`prior_branch_loss` for items ``at_T``."""
    score = score.float()
    ordinary = score_matching_loss(sde, score, draw.z, draw.t, mix)
    prior, _ = prior_branch_loss(
        sde, score, draw.z, draw.t, mix, sources, permutation_invariant=permutation_invariant
    )
    return torch.where(draw.at_T, prior, ordinary)


def source_orders(num_sources: int, permutation_invariant: bool) -> list[tuple[int, ...]]:
    """Every order of the sources (``itertools.permutations``), or only the identity."""
    if permutation_invariant:
        return list(itertools.permutations(range(num_sources)))
    return [tuple(range(num_sources))]


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB over the last axis (zero-mean signals): (..., N) -> (...)."""
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    gain = (estimate * reference).sum(-1, keepdim=True) / (reference.square().sum(-1, keepdim=True) + eps)
    target = gain * reference
    ratio = (target.square().sum(-1) + eps) / ((estimate - target).square().sum(-1) + eps)
    return 10.0 * torch.log10(ratio)


def pit_si_sdr_loss(
    estimates: Tensor, sources: Tensor, *, permutation_invariant: bool, scored: int | None = None
) -> tuple[Tensor, Tensor]:
    """``(loss (B,), best order (B, K) int64)``: minus the SI-SDR (dB) averaged over sources
    (the first ``scored`` only, e.g. 1 for the speech of an enhancement pair), for the order
    of ``sources`` that fits ``estimates`` best; both (B, K, N)."""
    orders = torch.tensor(
        source_orders(sources.shape[1], permutation_invariant), device=sources.device
    )
    scores = torch.stack(
        [si_sdr(estimates, sources[:, order])[:, :scored].mean(dim=1) for order in orders], dim=1
    )
    best = scores.argmax(dim=1)
    return -scores.gather(1, best[:, None]).squeeze(1), orders[best]


def implied_score_loss(
    sde: DiffusionMixingSDE,
    estimates: Tensor,
    sources: Tensor,
    t: Tensor,
    mix: Tensor,
    *,
    snr_clip: float,
) -> Tensor:
    """Score-matching loss (B,) of the score implied by ``estimates`` against ``sources``
    (both (B, K, N), same order, both summing to the mixture), weighted by
    ``min(w(t), snr_clip) / w(t)`` (see the module docstring)."""
    gap = sde.apply_L_inv(sde.mean(estimates, t) - sde.mean(sources, t), t, mix)
    per_item = gap.square().mean(dim=(1, 2))
    decay = torch.exp(-2.0 * sde.gamma * t)
    _, lambda2 = sde.eigenvalues(t)
    weight = decay / lambda2
    return per_item * weight.clamp(max=snr_clip) / weight


def data_prediction_loss(
    sde: DiffusionMixingSDE,
    estimates: Tensor,
    mix: Tensor,
    sources: Tensor,
    draw: TrainingDraw,
    *,
    permutation_invariant: bool,
    score_weight: float,
    snr_clip: float,
    scored: int | None = None,
) -> Tensor:
    """Per-item loss (B,) of source estimates (B, K, N) for ``x_t`` built by
    :func:`network_input`: PIT negative SI-SDR (of the first ``scored`` sources; None: all)
    plus ``score_weight`` times :func:`implied_score_loss` (all sources) in the order PIT
    chose. Enhancement scores the speech only: the noise estimate is the mixture minus it."""
    estimates = estimates.float()
    loss, order = pit_si_sdr_loss(
        estimates, sources, permutation_invariant=permutation_invariant, scored=scored
    )
    if score_weight:
        matched = reorder_sources(sources, order)
        loss = loss + score_weight * implied_score_loss(
            sde, estimates, matched, draw.t, mix, snr_clip=snr_clip
        )
    return loss
