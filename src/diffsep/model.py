"""A DiffSep model (config + score network + SDE on a device) and batched sampling.

:func:`build_model` puts a config and its weights together (finding and reading them is
:func:`diffsep.loading.load_model`'s job). :func:`sample_windows` turns a batch of mixture
windows into source estimates with the configured sampler (:func:`diffsep.sampling.sample`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from diffsep.config import ModelConfig, SamplerConfig
from diffsep.errors import CheckpointError, ConfigError, first_lines
from diffsep.nn.score_model import ScoreModel
from diffsep.processing import normalize_mixture, rescale_to_mixture
from diffsep.sampling import network_calls, sample
from diffsep.sde import DiffusionMixingSDE, make_sde

StepCallback = Callable[[int, int], None]
Precision = Literal["fp32", "bf16", "fp16"]

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""``--precision`` -> ``ScoreModel.backbone_dtype`` (autocast around the backbone only)."""


@dataclass
class DiffSepModel:
    """Config, score network (eval mode, no grad) and SDE, all on ``device``."""

    config: ModelConfig
    network: ScoreModel
    sde: DiffusionMixingSDE
    device: torch.device
    source: str = ""  # where the weights came from, for reports
    compiled: bool = False  # the backbone went through torch.compile (kept for later runs)

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
        raise CheckpointError(
            f"{source or 'checkpoint'}: weights do not fit the config: {first_lines(err, 3)}"
        ) from None
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


def check_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``precision`` (fp32 | bf16 | fp16) -> backbone dtype; ConfigError if ``device`` lacks it."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision: unknown value {precision!r}; accepted: {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and device.type != "cuda":
        accepted = "fp32, bf16" if cpu_has_bf16() else "fp32"
        raise ConfigError(
            f"precision: fp16 needs a CUDA device (this run is on {device.type}); "
            f"accepted here: {accepted}"
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision: bf16 is not supported by {torch.cuda.get_device_name(device)}; "
            "accepted here: fp32, fp16"
        )
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise ConfigError(
            "precision: bf16 needs a CPU with AVX-512 BF16 or AMX (without them convolutions "
            "fall back to slow kernels, ~60x slower than fp32); accepted here: fp32"
        )
    return PRECISIONS[precision]


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX-512 BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def compile_network(model: DiffSepModel) -> None:
    """``torch.compile`` the backbone in place (once; later calls do nothing).

    Compilation itself happens at the first network call. ConfigError (naming ``--compile``)
    when the compiler it needs is missing: a C++ compiler on the CPU, Triton on CUDA.
    """
    if model.compiled:
        return
    if model.device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise ConfigError("--compile: torch.compile needs Triton for CUDA; it is not installed")
    else:
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx[-1] or "g++"
        if shutil.which(cxx) is None:
            raise ConfigError(
                f"--compile: torch.compile needs a C++ compiler on the CPU; {cxx!r} was not found "
                "(install one or set CXX)"
            )
    model.network.backbone.compile(dynamic=False)
    model.compiled = True


@contextlib.contextmanager
def backbone_precision(model: DiffSepModel, precision: str | None) -> Iterator[None]:
    """Run the backbone in ``precision`` inside the block (None: leave it as it is)."""
    if precision is None:
        yield
        return
    before = model.network.backbone_dtype
    model.network.backbone_dtype = check_precision(precision, model.device)
    try:
        yield
    finally:
        model.network.backbone_dtype = before


def sample_windows(
    model: DiffSepModel,
    mixes: torch.Tensor,
    seeds: list[int],
    settings: SamplerConfig,
    on_step: StepCallback | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Separate a batch of mixture windows.

    mixes: (B, 1, W) float32 at the model rate, raw (not normalised). seeds: one per window.
    Returns (B, K, W) float32 on the CPU: estimates rescaled to their own mixture window, as
    the reference ``separate.py`` does. All-zero windows give exact zeros without a network call.
    ``on_step(i, nfe)`` is called after network call ``i`` of ``nfe`` (see
    :func:`diffsep.sampling.network_calls`). ``precision`` (fp32 | bf16 | fp16) sets the
    backbone's precision for this call; None keeps the network's own.
    """
    return launch_windows(model, mixes, seeds, settings, on_step, precision)()


@torch.inference_mode()
def launch_windows(
    model: DiffSepModel,
    mixes: torch.Tensor,
    seeds: list[int],
    settings: SamplerConfig,
    on_step: StepCallback | None = None,
    precision: str | None = None,
) -> Callable[[], torch.Tensor]:
    """:func:`sample_windows` in two halves: queue the work on the device now, and return a
    function that waits for it and returns the (B, K, W) CPU tensor. On CUDA the host is free
    in between (to prepare the next batch); on the CPU the work is done before this returns.
    """
    if mixes.ndim != 3 or mixes.shape[1] != 1:
        raise ValueError(f"mixes must be (B, 1, W), got {tuple(mixes.shape)}")
    batch, _, length = mixes.shape
    out = torch.zeros(batch, model.num_sources, length, dtype=torch.float32)
    mixes = mixes.detach().cpu()
    active = torch.nonzero(mixes.abs().amax(dim=(1, 2)) > 0).flatten()  # one check, on the host
    if active.numel() == 0:
        return lambda: out
    mix = _to_device(mixes[active].float(), model.device)
    mix_norm, _, _ = normalize_mixture(mix)
    noise_fn = per_item_noise(window_generators([seeds[b] for b in active.tolist()], model.device))
    score_fn = _counting(model.network, network_calls(settings), on_step)
    with backbone_precision(model, precision):
        raw = sample(model.sde, score_fn, mix_norm, settings, noise_fn=noise_fn)
    estimates = rescale_to_mixture(mix, raw).float()

    def result() -> torch.Tensor:
        with torch.inference_mode():  # out is an inference tensor
            out[active] = estimates.cpu()
        return out

    return result


def _counting(score_fn: Callable[..., torch.Tensor], total: int,
              on_call: StepCallback | None) -> Callable[..., torch.Tensor]:
    """``score_fn`` that reports each call as ``on_call(i, total)``."""
    if on_call is None:
        return score_fn
    calls = 0

    def counted(x: torch.Tensor, t: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        score = score_fn(x, t, mix)
        on_call(calls, total)
        calls += 1
        return score

    return counted


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor to ``device``; through pinned memory and a non-blocking copy for CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
