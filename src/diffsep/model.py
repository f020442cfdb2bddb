"""A DiffSep model (config + score network + SDE on a device) and batched sampling.

:func:`build_model` puts a config and its weights together (finding and reading them is
:func:`diffsep.loading.load_model`'s job). :func:`sample_windows` turns a batch of mixture
windows into source estimates with the configured sampler (:func:`diffsep.sampling.sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from diffsep.config import ModelConfig, SamplerConfig
from diffsep.errors import CheckpointError, ConfigError
from diffsep.nn.score_model import ScoreModel
from diffsep.processing import normalize_mixture, rescale_to_mixture
from diffsep.sampling import sample
from diffsep.sde import DiffusionMixingSDE, make_sde

StepCallback = Callable[[int, int], None]


@dataclass
class DiffSepModel:
    """Config, score network (eval mode, no grad) and SDE, all on ``device``."""

    config: ModelConfig
    network: ScoreModel
    sde: DiffusionMixingSDE
    device: torch.device
    source: str = ""  # where the weights came from, for reports

    @property
    def sample_rate(self) -> int:
        """Model rate in Hz."""
        return self.config.sample_rate

    @property
    def num_sources(self) -> int:
        return self.config.num_sources

    @property
    def min_samples(self) -> int:
        """Shortest input the STFT front end accepts: one frame, in samples at the model rate."""
        return self.config.stft.n_fft


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a usable torch.device (ConfigError if not)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def build_model(
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    device: torch.device | str = "cpu",
    source: str = "",
) -> DiffSepModel:
    """Construct the network from ``config`` and load ``state_dict`` strictly."""
    network = ScoreModel(config)
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"{source or 'checkpoint'}: weights do not fit the config: {detail}")
    device = torch.device(device)
    network = network.to(device).eval().requires_grad_(False)
    return DiffSepModel(config, network, make_sde(config.sde, config.num_sources), device, source)


def window_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One generator per window, so a window's noise never depends on its batch-mates."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def per_item_noise(generators: list[torch.Generator]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``noise_fn(like (B, ...))``: item b is a standard normal draw from ``generators[b]``."""

    def noise_fn(like: torch.Tensor) -> torch.Tensor:
        shape = like.shape[1:]
        draws = [
            torch.randn(shape, generator=g, device=like.device, dtype=like.dtype)
            for g in generators
        ]
        return torch.stack(draws)

    return noise_fn


@torch.inference_mode()
def sample_windows(
    model: DiffSepModel,
    mixes: torch.Tensor,
    seeds: list[int],
    settings: SamplerConfig,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Separate a batch of mixture windows.

    mixes: (B, 1, W) float32 at the model rate, raw (not normalised). seeds: one per window.
    Returns (B, K, W) float32 on the CPU: estimates rescaled to their own mixture window, as
    the reference ``separate.py`` does. All-zero windows give exact zeros without a network call.
    """
    if mixes.ndim != 3 or mixes.shape[1] != 1:
        raise ValueError(f"mixes must be (B, 1, W), got {tuple(mixes.shape)}")
    batch, _, length = mixes.shape
    out = torch.zeros(batch, model.num_sources, length, dtype=torch.float32)
    mixes = mixes.detach().cpu()
    active = torch.nonzero(mixes.abs().amax(dim=(1, 2)) > 0).flatten()  # one check, on the host
    if active.numel() == 0:
        return out
    mix = _to_device(mixes[active].float(), model.device)
    mix_norm, _, _ = normalize_mixture(mix)
    noise_fn = per_item_noise(window_generators([seeds[b] for b in active.tolist()], model.device))
    raw = sample(model.sde, model.network, mix_norm, settings, noise_fn=noise_fn, on_step=on_step)
    out[active] = rescale_to_mixture(mix, raw).float().cpu()
    return out


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; through pinned memory and a non-blocking copy for CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
