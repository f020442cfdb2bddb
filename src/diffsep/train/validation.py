"""Validation during training: separate a few fixed validation mixtures with the EMA weights
and score them (SI-SDR, SI-SDRi), both through the sampler and with the network's one-call
estimate at t = T on centre crops, and optionally whole files the way the exported model
separates them."""

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
    """The first ``count`` crops stacked: (B, 1, W) mixtures, (B, K, W) references; None if
    there are none."""
    items = whole_file_items(dataset, count)
    if not items:
        return None
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
    """Mean SI-SDR and SI-SDRi (dB) of ``est`` (B, K, W) against ``refs`` (B, K, W)."""
    pairs = [_item_scores(config.model.task, mixes[b, 0].numpy(), refs[b].numpy(), est[b].numpy())
             for b in range(mixes.shape[0])]
    return _means(pairs, suffix)


def _item_scores(
    task: str, mix: np.ndarray, refs: np.ndarray, est: np.ndarray
) -> tuple[float, float]:
    """SI-SDR and SI-SDRi (dB) of one item: ``mix`` (N,), ``refs`` and ``est`` (K, N); best
    permutation for separation, the speech (source 0) for enhancement."""
    from diffsep.metrics import pit_si_sdr, si_sdr

    if task == "enhancement":
        score = float(si_sdr(refs[0], est[0]))
        return score, score - float(si_sdr(refs[0], mix))
    _, per_source = pit_si_sdr(refs, est)
    base = si_sdr(refs, mix[None, :])
    return float(per_source.mean()), float((per_source - base).mean())


def _means(pairs: list[tuple[float, float]], suffix: str) -> dict[str, float]:
    return {
        f"si_sdr{suffix}": float(np.mean([score for score, _ in pairs])),
        f"si_sdri{suffix}": float(np.mean([gain for _, gain in pairs])),
    }


def whole_file_items(dataset: Dataset | None, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` items of ``dataset`` (none without one): (1, N) mixture, (K, N)
    references each, N differing between whole files."""
    if dataset is None:
        return []
    return [dataset[i] for i in range(min(count, dataset_length(dataset)))]


def validate_whole_files(
    config: TrainConfig,
    ema_weights: dict[str, torch.Tensor],
    items: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    on_item: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Separate whole files as ``diffsep separate --seed <valid.seed>`` would with the exported
    model (EMA weights, the model's window, or the training crop when it sets none, and its
    default sampler); mean ``si_sdr_whole``/``si_sdri_whole`` in dB over ``items``.
    ``on_item(done, total)`` is called after each file (it may raise to cancel)."""
    from diffsep.separator import separate_array
    from diffsep.settings import run_settings
    from diffsep.train.export import with_default_window

    model_config = with_default_window(config).model
    model = build_model(model_config, ema_weights, device, source="EMA weights")
    settings = run_settings(model, seed=config.valid.seed)
    rate = model_config.sample_rate
    pairs = []
    for done, (mix, refs) in enumerate(items, start=1):
        est = separate_array(model, mix[0], rate, settings)
        pairs.append(_item_scores(model_config.task, mix[0].numpy(), refs.numpy(), est))
        if on_item is not None:
            on_item(done, len(items))
    return _means(pairs, "_whole")
