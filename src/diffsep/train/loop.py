"""The training loop of ``diffsep train``: data, Adam + EMA, validation, checkpoints, export.

Run folder (``config.output.dir``)::

    train.log                     plain text log (appended across resumes)
    metrics.jsonl                 one JSON object per logged step / validation
    train_config.json             the configuration of the latest (re)start
    checkpoints/step-XXXXXXXX/    model.safetensors (raw weights), ema.safetensors (EMA),
                                  state.pt (optimizer, step, data position; loads with
                                  torch.load(weights_only=True)), train_config.json
    export/                       the EMA model in the diffsep format (config.json,
                                  model.safetensors, README.md), refreshed at each validation

A run restarts from its newest checkpoint (same step, optimizer state, data position and
noise stream), so an interrupted run continues as if it had not stopped. SIGINT / SIGTERM
finish the current step (cancelling a validation under way), write a checkpoint and return.

Multi-process training uses PyTorch DDP when started by ``torchrun`` (``WORLD_SIZE`` > 1 in
the environment): NCCL on GPUs, gloo on CPUs. Every rank sees a different shard of each epoch
and draws different noise; only rank 0 validates, writes checkpoints, exports and logs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from diffsep import __version__
from diffsep.config import ModelConfig
from diffsep.errors import CheckpointError, ConfigError, OutputError
from diffsep.model import build_model, resolve_device, sample_windows
from diffsep.nn.score_model import ScoreModel, cpu_has_native_bf16
from diffsep.sde import make_sde
from diffsep.train.config import DataConfig, TrainConfig, config_from_json
from diffsep.train.ema import WeightEMA
from diffsep.train.loss import (
    data_prediction_loss,
    diffsep_loss,
    draw_training_noise,
    network_input,
    normalize_batch,
)

CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
LOG_NAME = "train.log"
METRICS_NAME = "metrics.jsonl"
CONFIG_JSON = "train_config.json"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.pt", CONFIG_JSON)


# ---------------------------------------------------------------------------------------------
# Public types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepInfo:
    """What happened in one optimiser step (rank 0's view)."""

    step: int  # optimiser steps done, after this one
    total: int
    loss: float
    grad_norm: float
    lr: float
    seconds: float  # wall time of this step


@dataclass
class TrainHooks:
    """Optional callbacks: ``on_message(line)`` for log lines, ``on_step(info)`` after each
    step, ``on_start(step, total)`` once the run (or resume) is set up. Called on rank 0 only."""

    on_message: Callable[[str], None] | None = None
    on_step: Callable[[StepInfo], None] | None = None
    on_start: Callable[[int, int], None] | None = None


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    step: int
    status: str  # "finished" | "interrupted" | "paused" (max_new_steps reached)
    checkpoint: Path | None
    export: Path | None
    last_loss: float = math.nan
    validation: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""  # SHA-256 of this process's final weights (equal on every rank)


@dataclass
class _Position:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


# ---------------------------------------------------------------------------------------------
# Distributed context
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device
    active: bool  # a process group was initialised here

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(0, 1, resolve_device(device_name), active=False)
    device = resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    started_here = not dist.is_initialized()
    if started_here:
        dist.init_process_group(backend, timeout=_dt.timedelta(hours=2))
    return _Dist(dist.get_rank(), dist.get_world_size(), device, active=started_here)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def build_train_dataset(config: TrainConfig) -> Dataset:
    """The training dataset of ``config.data``; items ``(mix (1, N), sources (K, N))``."""
    from diffsep.train.data import (
        DynamicMixingDataset,
        MixtureFolderDataset,
        NoisySpeechFolderDataset,
    )

    data, model, seg = config.data, config.model, config.optim.segment_seconds
    if not data.train:
        raise ConfigError(
            "data.train is empty: set the training data folder in the config's [data] table "
            "or with --set data.train=PATH"
        )
    if data.kind == "dynamic":
        enhancement = model.task == "enhancement"
        return DynamicMixingDataset(
            data.train,
            data.noise if enhancement else None,
            task=model.task,
            num_sources=model.num_sources,
            sample_rate=model.sample_rate,
            segment_seconds=seg,
            snr_range=data.snr_range,
            gain_range=data.gain_range,
            level_range=data.level_range,
            epoch_length=data.epoch_length,
            seed=data.seed,
            split=data.train_split or None,
        )
    if data.kind == "mixture_folder":
        return MixtureFolderDataset(
            data.train, model.num_sources, model.sample_rate, seg, random_crop=True,
            seed=data.seed, **_mixture_folders(data),
        )
    return NoisySpeechFolderDataset(
        data.train, model.sample_rate, seg, random_crop=True, seed=data.seed,
        noisy_dir=data.noisy_dir, clean_dir=data.clean_dir,
    )


def _mixture_folders(data: DataConfig) -> dict[str, Any]:
    """The folder names of a mixture dataset: ``mix_dir`` and ``source_dirs`` (None: s1..sK)."""
    return {"mix_dir": data.mix_dir, "source_dirs": list(data.source_dirs) or None}


def build_valid_dataset(config: TrainConfig) -> Dataset | None:
    """Fixed validation items (centre crops of ``valid.seconds``); None without ``data.valid``."""
    from diffsep.train.data import MixtureFolderDataset, NoisySpeechFolderDataset

    data, model = config.data, config.model
    if not data.valid or config.valid.num_mixtures == 0:
        return None
    if model.task == "enhancement":
        return NoisySpeechFolderDataset(
            data.valid, model.sample_rate, config.valid.seconds, random_crop=False,
            noisy_dir=data.noisy_dir, clean_dir=data.clean_dir,
        )
    return MixtureFolderDataset(
        data.valid, model.num_sources, model.sample_rate, config.valid.seconds,
        random_crop=False, **_mixture_folders(data),
    )


class ShardSampler(Sampler[int]):
    """Indices of one epoch for one rank: a permutation seeded by ``(seed, epoch)``, padded to a
    multiple of ``world`` and dealt round-robin; the first ``skip`` are left out (resume)."""

    def __init__(self, length: int, *, seed: int, epoch: int, rank: int, world: int, skip: int = 0):
        generator = torch.Generator().manual_seed(_derive_seed(seed, epoch, 0x5A17))
        order = torch.randperm(length, generator=generator).tolist()
        padded = math.ceil(length / world) * world
        while len(order) < padded:  # repeat the start so that every rank gets as many
            order += order[: padded - len(order)]
        self.indices = order[rank::world][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _derive_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (numpy SeedSequence), stable across platforms."""
    return int(
        np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(2, np.uint64)[
            0
        ]
        >> 1
    )


def _epoch_batches(
    dataset: Dataset, config: TrainConfig, ctx: _Dist, epoch: int, skip_batches: int
) -> DataLoader:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    batch = config.optim.batch_size
    sampler = ShardSampler(
        _length(dataset),
        seed=config.data.seed,
        epoch=epoch,
        rank=ctx.rank,
        world=ctx.world,
        skip=skip_batches * batch,
    )
    workers = config.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        multiprocessing_context="spawn" if workers > 0 else None,
    )


def _length(dataset: Dataset) -> int:
    return len(dataset)  # type: ignore[arg-type]  (map-style datasets define __len__)


def _batches_per_epoch(dataset: Dataset, config: TrainConfig, world: int) -> int:
    per_rank = math.ceil(_length(dataset) / world)
    count = per_rank // config.optim.batch_size
    if count < 1:
        raise ConfigError(
            f"{config.data.train}: {_length(dataset)} item(s) cannot fill one batch of "
            f"{config.optim.batch_size} per process ({world} process(es))"
        )
    return count


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and all((path / f).is_file() for f in _CHECKPOINT_FILES):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 (SafetensorError, OSError)
        raise CheckpointError(
            f"{path}: cannot read ({str(err).strip() or type(err).__name__})"
        ) from None


def save_checkpoint(
    run_dir: Path,
    config: TrainConfig,
    network: nn.Module,
    ema: WeightEMA,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    position: _Position,
    keep: int,
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically; keep the newest ``keep`` checkpoints."""
    root = run_dir / CHECKPOINT_DIR
    final = root / _step_name(position.step)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        _save_tensors(network.state_dict(), staging / "model.safetensors")
        _save_tensors(ema.state_dict(), staging / "ema.safetensors")
        state = {
            "format": "diffsep-train-checkpoint",
            "diffsep_version": __version__,
            "step": position.step,
            "epoch": position.epoch,
            "batch_in_epoch": position.batch_in_epoch,
            "ema_updates": ema.num_updates,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "torch_rng": torch.get_rng_state(),
            "train_config_json": config.to_json(),
        }
        torch.save(state, staging / "state.pt")
        (staging / CONFIG_JSON).write_text(config.to_json(), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    except OSError as err:
        raise OutputError(f"{root}: cannot write checkpoint ({err.strerror or err})") from None
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """``(config, state)`` of a checkpoint folder; ``state`` holds ``model``, ``ema`` (tensor
    dicts) and the entries of state.pt. Everything loads without unpickling code."""
    path = Path(path)
    missing = [f for f in _CHECKPOINT_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (UnpicklingError, RuntimeError, OSError)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path / 'state.pt'}: cannot read ({detail})") from None
    if not isinstance(state, dict) or state.get("format") != "diffsep-train-checkpoint":
        raise CheckpointError(f"{path / 'state.pt'}: not a diffsep training state")
    config = config_from_json(state["train_config_json"], str(path / "state.pt"))
    state["model"] = _load_tensors(path / "model.safetensors")
    state["ema"] = _load_tensors(path / "ema.safetensors")
    return config, state


def _resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    path = Path(path).expanduser()
    if (path / "state.pt").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path}: neither a training checkpoint nor a run folder with one")
    return found


def _flatten(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def architecture_differences(ours: ModelConfig, theirs: ModelConfig) -> list[str]:
    """Settings (other than the sampler's) in which two model configs differ, as
    ``model.key: ours vs theirs`` lines; empty when weights of one fit the other."""
    mine = _flatten({k: v for k, v in ours.to_dict().items() if k != "sampler"}, "model.")
    other = _flatten({k: v for k, v in theirs.to_dict().items() if k != "sampler"}, "model.")
    return [f"{key}: {mine[key]!r} here, {other.get(key)!r} there"
            for key in mine if mine[key] != other.get(key)]


def initial_weights(spec: str, config: TrainConfig) -> tuple[dict[str, torch.Tensor], str]:
    """The weights named by ``optim.init_from`` for a fresh run, as float32 tensors, and a
    description of where they came from.

    ``spec``: a training checkpoint or run folder (its EMA weights), or anything ``--model``
    accepts (bundled name, model folder or file, the authors' checkpoint, Hub repo id).
    ConfigError when its architecture differs from ``config.model``.
    """
    from diffsep.checkpoint import load_model_files
    from diffsep.hub import resolve_model

    local = Path(spec).expanduser()
    if (local / "state.pt").is_file() or (local / CHECKPOINT_DIR).is_dir():
        checkpoint = _resolve_checkpoint(local)
        saved, state = read_checkpoint(checkpoint)
        model_config, weights, origin = saved.model, state["ema"], f"{checkpoint} (EMA)"
    else:
        path = resolve_model(spec, config.model.task)
        model_config, weights = load_model_files(path)
        origin = str(path)
    differences = architecture_differences(config.model, model_config)
    if differences:
        shown = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
        raise ConfigError(
            f"optim.init_from '{spec}': its model differs from this config's ({shown}); "
            "set [model] to its config.json values"
        )
    return {k: v.float() for k, v in weights.items()}, origin


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def training_card(
    config: TrainConfig,
    step: int,
    validation: dict[str, float] | None,
    validation_step: int | None = None,
) -> str:
    """Model card of an exported model: the generic card plus what it was trained on."""
    from diffsep.checkpoint import model_card

    params = sum(p.numel() for p in ScoreModel(config.model).parameters())
    data, optim, backbone = config.data, config.optim, config.model.backbone
    trained = (
        f"Trained with `diffsep train` (diffsep {__version__}) for {step} steps "
        f"(batch {optim.batch_size} x {optim.segment_seconds:g} s, Adam lr {optim.lr:g}, "
        f"EMA {optim.ema_decay:g}, p_T {optim.p_T:g}); the weights are the EMA. "
        f"Network: {params / 1e6:.2f} M parameters (nf={backbone.nf}, "
        f"ch_mult={list(backbone.ch_mult)}, {backbone.num_res_blocks} res block(s) per level)."
    )
    source = f"Data: {data.kind} from `{Path(data.train).name}`"
    if data.kind == "dynamic" and data.train_split:
        source += f" (split `{data.train_split}`)"
    if config.model.task == "enhancement" and data.noise:
        source += f" with noise from `{Path(data.noise).name}`"
    lines = [trained, "", source + "."]
    if validation:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(validation.items()))
        lines += [
            "",
            (
                f"Validation at step {validation_step if validation_step is not None else step} "
                f"({config.valid.num_mixtures} mixtures of "
                f"{config.valid.seconds:g} s, {config.valid.sampler_steps} steps): {shown}."
            ),
        ]
    description = "\n".join(lines)
    if config.output.description:
        description = config.output.description.strip() + "\n\n" + description
    return model_card(config.model, title=config.output.title or None, description=description)


def with_default_window(config: TrainConfig) -> TrainConfig:
    """``config`` with ``model.sampler.segment_seconds`` set to the training crop if unset."""
    if config.model.sampler.segment_seconds is not None:
        return config
    sampler = replace(config.model.sampler, segment_seconds=config.optim.segment_seconds)
    return replace(config, model=replace(config.model, sampler=sampler))


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    use_ema: bool = True,
    card: str | None = None,
) -> Path:
    """Write a diffsep model folder (config.json, model.safetensors, README.md) from a training
    checkpoint (or a run folder: its newest checkpoint). ``dtype`` defaults to the run's
    ``output.export_dtype``; ``use_ema=False`` exports the raw weights instead of the EMA.
    The model's default window is the training crop unless the config sets one."""
    from diffsep.checkpoint import save_model_folder

    path = _resolve_checkpoint(checkpoint)
    config, state = read_checkpoint(path)
    config = with_default_window(config)
    weights = state["ema"] if use_ema else state["model"]
    build_model(config.model, weights, "cpu", source=str(path))  # refuses weights that do not fit
    name = dtype or config.output.export_dtype
    if name not in _DTYPES:
        raise ConfigError(f"unknown export dtype {name!r}: use float32, float16 or bfloat16")
    step = int(state["step"])
    validation, validation_step = _last_validation(path.parent.parent, step)
    text = card if card is not None else training_card(config, step, validation, validation_step)
    return save_model_folder(out, config.model, weights, text, _DTYPES[name], overwrite=overwrite)


def _last_validation(run_dir: Path, up_to: int) -> tuple[dict[str, float] | None, int | None]:
    """The newest validation record at or before step ``up_to`` in ``metrics.jsonl``."""
    metrics = run_dir / METRICS_NAME
    if not metrics.is_file():
        return None, None
    last, last_step = None, None
    with contextlib.suppress(OSError, ValueError):
        for line in metrics.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("kind") == "valid" and int(record.get("step", -1)) <= up_to:
                skip = ("kind", "step", "time")
                last = {k: float(v) for k, v in record.items() if k not in skip}
                last_step = int(record["step"])
    return last, last_step


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _validation_items(
    dataset: Dataset | None, count: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if dataset is None:
        return None
    count = min(count, _length(dataset))
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


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class _ValidationCancelled(Exception):
    """A stop was requested while validating: the run stops without finishing it."""


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop checks between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = True

    def __enter__(self) -> _StopRequest:  # noqa: PYI034
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)


class _Logger:
    """Rank 0 writes ``train.log`` / ``metrics.jsonl`` and forwards lines to the hooks."""

    def __init__(self, run_dir: Path, hooks: TrainHooks, enabled: bool) -> None:
        self.enabled = enabled
        self.hooks = hooks
        self.log_path = run_dir / LOG_NAME
        self.metrics_path = run_dir / METRICS_NAME

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {text}\n")
        if self.hooks.on_message is not None:
            self.hooks.on_message(text)

    def metrics(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The backbone's autocast dtype: bf16 as configured on CUDA and on CPUs with native bf16
    (AVX-512 BF16 / AMX; elsewhere it is emulated and several times slower than float32),
    fp16 on CUDA only; None (float32) otherwise."""
    precision = config.optim.precision
    if precision == "fp32" or (precision == "fp16" and device.type != "cuda"):
        return None
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _step_generator(
    config: TrainConfig, rank: int, step: int, device: torch.device
) -> torch.Generator:
    """The noise of step ``step`` on ``rank``: a function of (seed, rank, step) only, so a
    resumed run draws exactly what an uninterrupted one would."""
    return torch.Generator(device=device).manual_seed(_derive_seed(config.optim.seed, rank, step))


def _check_resume_config(saved: TrainConfig, current: TrainConfig, where: Path) -> list[str]:
    """Refuse a resume with another model; list the other settings that changed."""
    if saved.model != current.model:
        raise ConfigError(
            f"{where}: the run folder holds a different model configuration; "
            "use a new output.dir or the saved train_config.json"
        )
    changed = []
    for section in ("data", "optim", "valid", "output"):
        old, new = getattr(saved, section).__dict__, getattr(current, section).__dict__
        changed += [f"{section}.{k}: {old[k]!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    return changed


def train(
    config: TrainConfig,
    *,
    device: str = "auto",
    resume: bool = True,
    hooks: TrainHooks | None = None,
    max_new_steps: int | None = None,
) -> TrainResult:
    """Train (or continue training) the model described by ``config``.

    ``resume``: continue from the newest checkpoint in ``config.output.dir`` if there is one
    (with ``resume=False`` an existing checkpoint is an error). ``max_new_steps`` stops after
    that many steps of this call (a checkpoint is written), e.g. for time-sliced training.
    """
    hooks = hooks or TrainHooks()
    created = _missing_folders(Path(config.output.dir).expanduser().absolute())
    ctx = _setup_distributed(device)
    try:
        return _train(config, ctx, resume, hooks, max_new_steps)
    except Exception:
        if ctx.is_main:  # a run that failed to start leaves no empty folders behind
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
        raise
    finally:
        if ctx.active and dist.is_initialized():
            dist.destroy_process_group()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _train(
    config: TrainConfig, ctx: _Dist, resume: bool, hooks: TrainHooks, max_new_steps: int | None
) -> TrainResult:
    run_dir = Path(config.output.dir).expanduser()
    if ctx.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{run_dir}: cannot create ({err.strerror or err})") from None
    log = _Logger(run_dir, hooks, ctx.is_main)
    device = ctx.device

    torch.manual_seed(config.optim.seed)
    if config.optim.threads:
        torch.set_num_threads(config.optim.threads)
    network = ScoreModel(config.model).to(device)
    sde = make_sde(config.model.sde, config.model.num_sources)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.optim.lr)
    use_scaler = device.type == "cuda" and config.optim.precision == "fp16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    ema = WeightEMA(network, config.optim.ema_decay)
    position = _Position()

    previous = latest_checkpoint(run_dir)
    if previous is not None:
        if not resume:
            raise OutputError(
                f"{run_dir}: already holds checkpoints (resume, or choose a new output.dir)"
            )
        saved_config, state = read_checkpoint(previous)
        changes = _check_resume_config(saved_config, config, previous)
        network.load_state_dict(state["model"])
        ema.load(state["ema"], int(state["ema_updates"]))
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        position = _Position(int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]))
        log.message(f"resumed from {previous} at step {position.step}")
        for change in changes:
            log.message(f"setting changed since the checkpoint: {change}")
    elif config.optim.init_from:
        weights, origin = initial_weights(config.optim.init_from, config)
        try:
            network.load_state_dict(weights)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"optim.init_from '{config.optim.init_from}': {first}") from None
        ema = WeightEMA(network, config.optim.ema_decay)
        log.message(f"initialised from {origin}")

    network.backbone_dtype = _autocast_dtype(config, device)
    if config.optim.precision != "fp32" and network.backbone_dtype is None and ctx.is_main:
        log.message(f"precision {config.optim.precision}: not native on this {device.type}, "
                    "training in float32")
    if config.optim.compile:
        network.backbone.compile(dynamic=False)
    train_model: nn.Module = network
    if ctx.world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )

    dataset = build_train_dataset(config)
    per_epoch = _batches_per_epoch(dataset, config, ctx.world)
    valid_items = (
        _validation_items(build_valid_dataset(config), config.valid.num_mixtures)
        if ctx.is_main
        else None
    )
    total = config.optim.steps
    params = sum(p.numel() for p in network.parameters())

    if ctx.is_main:
        (run_dir / CONFIG_JSON).write_text(config.to_json(), encoding="utf-8")
        log.message(
            f"diffsep {__version__} train: {config.model.task}, {config.model.num_sources} sources "
            f"at {config.model.sample_rate} Hz, {params / 1e6:.2f} M parameters, "
            f"{_length(dataset)} items/epoch, {per_epoch} batches/epoch x {ctx.world} process(es), "
            f"device {device}, steps {position.step}/{total}"
        )
        if hooks.on_start is not None:
            hooks.on_start(position.step, total)

    permutation_invariant = config.model.task == "separation"
    last_checkpoint: Path | None = previous
    last_export: Path | None = None
    last_validation: dict[str, float] = {}
    last_loss = math.nan
    last_save_time = time.monotonic()
    new_steps = 0
    status = "finished"
    running_loss: list[float] = []
    step_times: list[float] = []
    train_cpu = 0.0  # CPU seconds spent in training steps by this process (validation excluded)

    def checkpoint_now() -> None:
        nonlocal last_checkpoint, last_save_time
        if ctx.is_main:
            last_checkpoint = save_checkpoint(
                run_dir,
                config,
                network,
                ema,
                optimizer,
                scaler,
                position,
                config.output.keep_checkpoints,
            )
            log.message(f"checkpoint {last_checkpoint}")
        last_save_time = time.monotonic()

    def saved_at_current_step() -> bool:
        return last_checkpoint is not None and last_checkpoint.name == _step_name(position.step)

    def validate_and_export() -> None:
        nonlocal last_validation, last_export, train_cpu
        if not ctx.is_main:
            return
        if valid_items is not None:
            start = time.monotonic()

            def cancel_on_stop(step: int, steps: int) -> None:
                if stop.requested:
                    raise _ValidationCancelled

            try:
                last_validation = validate(config, ema.state_dict(), *valid_items, device,
                                           on_step=cancel_on_stop)
            except _ValidationCancelled:
                log.message(f"validation at step {position.step} cancelled: stop requested")
                return
            log.metrics({"kind": "valid", "step": position.step,
                         "train_cpu_s": round(train_cpu, 1), **last_validation})
            shown = ", ".join(f"{k} {v:.2f} dB" for k, v in last_validation.items())
            log.message(
                f"validation at step {position.step}: {shown} ({time.monotonic() - start:.0f} s)"
            )
        if config.output.export_on_validation:
            checkpoint_now()
            assert last_checkpoint is not None  # checkpoint_now() just wrote it
            last_export = export_model(last_checkpoint, run_dir / EXPORT_DIR, overwrite=True)
            log.message(f"exported EMA model to {last_export}")

    network.train()
    with _StopRequest() as stop:
        while position.step < total:
            loader = _epoch_batches(dataset, config, ctx, position.epoch, position.batch_in_epoch)
            for mix, sources in loader:
                started = time.monotonic()
                cpu_started = time.process_time()
                loss_value, grad_norm, lr = _train_step(
                    config,
                    ctx,
                    train_model,
                    network,
                    sde,
                    optimizer,
                    scaler,
                    ema,
                    mix,
                    sources,
                    position.step,
                    permutation_invariant,
                )
                position.step += 1
                position.batch_in_epoch += 1
                new_steps += 1
                last_loss = loss_value
                elapsed = time.monotonic() - started
                train_cpu += time.process_time() - cpu_started
                running_loss.append(loss_value)
                step_times.append(elapsed)
                if ctx.is_main and hooks.on_step is not None:
                    hooks.on_step(
                        StepInfo(position.step, total, loss_value, grad_norm, lr, elapsed)
                    )
                if position.step % config.output.log_every == 0:
                    mean_loss = float(np.mean(running_loss))
                    mean_time = float(np.mean(step_times))
                    log.metrics(
                        {
                            "kind": "train",
                            "step": position.step,
                            "loss": mean_loss,
                            "grad_norm": grad_norm,
                            "lr": lr,
                            "s_per_step": mean_time,
                            "train_cpu_s": round(train_cpu, 1),
                        }
                    )
                    log.message(
                        f"step {position.step}/{total} loss {mean_loss:.4f} grad {grad_norm:.3f} "
                        f"lr {lr:.2e} {mean_time:.2f} s/step"
                    )
                    running_loss.clear()
                    step_times.clear()

                if position.batch_in_epoch >= per_epoch:
                    position.epoch += 1
                    position.batch_in_epoch = 0

                done = position.step >= total
                every = config.valid.every
                if every and (position.step % every == 0 or done):
                    validate_and_export()
                minutes = config.output.checkpoint_minutes
                by_time = bool(minutes) and time.monotonic() - last_save_time >= 60.0 * minutes
                by_steps = bool(config.output.checkpoint_every) and (
                    position.step % config.output.checkpoint_every == 0
                )
                if _any_rank(ctx, by_time or by_steps) and not saved_at_current_step():
                    checkpoint_now()
                if _any_rank(ctx, stop.requested):
                    status = "interrupted"
                    break
                if max_new_steps is not None and new_steps >= max_new_steps and not done:
                    status = "paused"
                    break
                cpu_budget = 60.0 * config.optim.cpu_minutes
                if cpu_budget and _any_rank(ctx, train_cpu >= cpu_budget) and not done:
                    if every and position.step % every:
                        validate_and_export()  # a last point on the learning curve
                    status = "paused"
                    break
                if done:
                    break
                if position.batch_in_epoch == 0:
                    break  # new epoch: new loader
            if status != "finished":
                break

    if not saved_at_current_step():
        checkpoint_now()
    if status == "finished" and last_export is None and ctx.is_main:
        assert last_checkpoint is not None
        last_export = export_model(last_checkpoint, run_dir / EXPORT_DIR, overwrite=True)
        log.message(f"exported EMA model to {last_export}")
    fingerprint = weights_fingerprint(network)
    if ctx.world > 1:
        fingerprints: list[Any] = [None] * ctx.world
        dist.all_gather_object(fingerprints, fingerprint)
        if len(set(fingerprints)) != 1:
            log.message("warning: the processes ended with different weights")
    log.message(f"{status} at step {position.step}")
    return TrainResult(
        position.step, status, last_checkpoint, last_export, last_loss, last_validation, fingerprint
    )


def weights_fingerprint(network: nn.Module) -> str:
    """SHA-256 over the names and bytes of ``network``'s state_dict (float32, CPU)."""
    import hashlib

    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _any_rank(ctx: _Dist, flag: bool) -> bool:
    """True if ``flag`` is set on any rank (so that all ranks take the same branch)."""
    if ctx.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _train_step(
    config: TrainConfig,
    ctx: _Dist,
    train_model: nn.Module,
    network: nn.Module,
    sde: Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    ema: WeightEMA,
    mix: torch.Tensor,
    sources: torch.Tensor,
    step: int,
    permutation_invariant: bool,
) -> tuple[float, float, float]:
    """One optimiser step; returns (loss, gradient norm before clipping, learning rate)."""
    device = ctx.device
    mix, sources = normalize_batch(mix.to(device, torch.float32), sources.to(device, torch.float32))
    batch, num_sources, num_samples = sources.shape
    draw = draw_training_noise(
        batch,
        num_sources,
        num_samples,
        p_T=1.0 if step < config.optim.curriculum_steps else config.optim.p_T,
        t_min=config.optim.t_min,
        t_skew=config.optim.t_skew,
        shuffle_sources=permutation_invariant,
        generator=_step_generator(config, ctx.rank, step, device),
        T=sde.T,
        device=device,
    )
    x_t = network_input(sde, mix, sources, draw)
    if config.optim.objective == "sisdr":
        estimates = train_model(x_t, draw.t, mix, output="sources")
        loss = data_prediction_loss(
            sde,
            estimates,
            mix,
            sources,
            draw,
            permutation_invariant=permutation_invariant,
            score_weight=config.optim.score_weight,
            snr_clip=config.optim.snr_clip,
        ).mean()
    else:
        score = train_model(x_t, draw.t, mix)
        loss = diffsep_loss(
            sde, score, mix, sources, draw, permutation_invariant=permutation_invariant
        ).mean()

    warmup = config.optim.warmup_steps
    lr = config.optim.lr * (min(1.0, (step + 1) / warmup) if warmup else 1.0)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    clip = config.optim.grad_clip if config.optim.grad_clip > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(network.parameters(), clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    elif math.isfinite(grad_norm):
        optimizer.step()
    ema.update(network)
    loss_value = loss.detach()
    if ctx.world > 1:
        dist.all_reduce(loss_value, op=dist.ReduceOp.SUM)
        loss_value = loss_value / ctx.world
    return float(loss_value), grad_norm, lr
