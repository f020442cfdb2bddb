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

Shapes: mixture ``(B, 1, N)``, sources ``(B, K, N)``, times ``(B,)``; all float32. The sources
are expected to sum to the mixture (see :func:`normalize_batch`).
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
) -> TrainingDraw:
    """Draw times (uniform in ``[t_min, T)``, or ``T`` with probability ``p_T``), noise and
    source orders (random permutations if ``shuffle_sources``, else the identity)."""
    uniform = torch.rand(batch, generator=generator, device=device)
    t = t_min + (T - t_min) * uniform
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
    orders = (
        list(itertools.permutations(range(num_sources)))
        if permutation_invariant
        else [tuple(range(num_sources))]
    )
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
    ordinary = ~draw.at_T
    loss = score.new_zeros(score.shape[0])
    if bool(ordinary.any()):
        idx = ordinary.nonzero().squeeze(1)
        loss = loss.index_put(
            (idx,), score_matching_loss(sde, score[idx], draw.z[idx], draw.t[idx], mix[idx])
        )
    if bool(draw.at_T.any()):
        idx = draw.at_T.nonzero().squeeze(1)
        prior, _ = prior_branch_loss(
            sde,
            score[idx],
            draw.z[idx],
            draw.t[idx],
            mix[idx],
            sources[idx],
            permutation_invariant=permutation_invariant,
        )
        loss = loss.index_put((idx,), prior)
    return loss
