"""Validation during training: separate a few fixed validation mixtures with the EMA weights
and score them (SI-SDR, SI-SDRi), both through the sampler and with the network's one-call
estimate at t = T."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffsep.model import build_model, sample_windows
from diffsep.train.batches import dataset_length
from diffsep.train.config import TrainConfig


def validation_items(
    dataset: Dataset | None, count: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if dataset is None:
        return None
    count = min(count, dataset_length(dataset))
    if count == 0:
        return None
    items = [dataset[i] for i in range(count)]
    return torch.stack([m for m, _ in items]), torch.stack([s for _, s in items])


def validate(
    config: TrainConfig,
    ema_weights: dict[str, torch.Tensor],
    mixes: torch.Tensor,
    refs: torch.Tensor,
    device: torch.device,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Separate ``mixes`` (B, 1, W) with the EMA weights; mean SI-SDR and SI-SDRi in dB against
    ``refs`` (B, K, W) (best permutation for separation; the speech, source 0, for enhancement):
    ``si_sdr``/``si_sdri`` of the sampler (when ``config.valid.sampler``) and
    ``si_sdr_T``/``si_sdri_T`` of the network's one-call estimate at t = T.
    ``on_step(step, steps)`` is called after each sampler step (it may raise to cancel)."""
    model = build_model(config.model, ema_weights, device, source="EMA weights")
    seeds = [config.valid.seed + i for i in range(mixes.shape[0])]
    results = _scores(config, mixes, refs, _one_shot_estimates(model, mixes, seeds), "_T")
    if config.valid.sampler:
        settings = replace(
            config.model.sampler,
            steps=config.valid.sampler_steps,
            corrector_steps=config.valid.corrector_steps,
        )
        est = sample_windows(model, mixes, seeds, settings, on_step=on_step)
        results.update(_scores(config, mixes, refs, est, ""))
    return results


@torch.inference_mode()
def _one_shot_estimates(model: Any, mixes: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """The network's source estimates at t = T from a prior draw (one call per batch):
    (B, 1, W) raw mixtures -> (B, K, W) estimates rescaled to their mixture, on the CPU."""
    from diffsep.model import per_item_noise, window_generators
    from diffsep.processing import normalize_mixture, rescale_to_mixture

    mix = mixes.to(model.device, torch.float32)
    mix_norm, _, _ = normalize_mixture(mix)
    noise_fn = per_item_noise(window_generators(seeds, model.device))
    prior_mean = model.sde.prior_mean(mix_norm)
    x_T = model.sde.prior_sample(mix_norm, noise_fn(prior_mean))
    t = torch.full((mix.shape[0],), model.sde.T, device=model.device)
    est = model.network(x_T, t, mix_norm, output="sources")
    return rescale_to_mixture(mix, est).float().cpu()


def _scores(
    config: TrainConfig, mixes: torch.Tensor, refs: torch.Tensor, est: torch.Tensor, suffix: str
) -> dict[str, float]:
    """Mean SI-SDR and SI-SDRi (dB) of ``est`` (B, K, W) against ``refs`` (B, K, W): best
    permutation for separation; the speech (source 0) for enhancement."""
    from diffsep.metrics import pit_si_sdr, si_sdr

    est_np, mix_np, ref_np = est.numpy(), mixes.numpy()[:, 0], refs.numpy()
    scores, improvements = [], []
    for b in range(mixes.shape[0]):
        if config.model.task == "enhancement":
            score = si_sdr(ref_np[b, 0], est_np[b, 0])
            base = si_sdr(ref_np[b, 0], mix_np[b])
            scores.append(float(score))
            improvements.append(float(score - base))
        else:
            _, per_source = pit_si_sdr(ref_np[b], est_np[b])
            base = si_sdr(ref_np[b], mix_np[b][None, :])
            scores.append(float(per_source.mean()))
            improvements.append(float((per_source - base).mean()))
    return {
        f"si_sdr{suffix}": float(np.mean(scores)),
        f"si_sdri{suffix}": float(np.mean(improvements)),
    }
