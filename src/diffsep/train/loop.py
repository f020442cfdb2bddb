"""The training loop of ``diffsep train``: Adam + EMA steps, periodic validation, checkpoints
and export, stopping on a signal, a step count or a CPU budget.

A run restarts from its newest checkpoint (same step, optimizer state, data position and
noise stream), so an interrupted run continues as if it had not stopped. SIGINT / SIGTERM
finish the current step (cancelling a validation under way), write a checkpoint and return.
The run folder's layout is described in :mod:`diffsep.train.checkpoints`.

Multi-process training uses PyTorch DDP when started by ``torchrun`` (``WORLD_SIZE`` > 1 in
the environment): NCCL on GPUs, gloo on CPUs. Every rank sees a different shard of each epoch
and draws different noise; only rank 0 validates, writes checkpoints, exports and logs.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from diffsep import __version__
from diffsep.errors import CheckpointError, ConfigError, OutputError, first_lines
from diffsep.nn.score_model import ScoreModel, cpu_has_native_bf16
from diffsep.sde import DiffusionMixingSDE, make_sde
from diffsep.train.batches import (
    batches_per_epoch,
    build_train_dataset,
    build_valid_dataset,
    dataset_length,
    derive_seed,
    epoch_batches,
)
from diffsep.train.checkpoints import (
    CONFIG_JSON,
    EXPORT_DIR,
    LOG_NAME,
    METRICS_NAME,
    Position,
    initial_weights,
    latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
    step_name,
    weights_fingerprint,
)
from diffsep.train.config import OptimConfig, TrainConfig
from diffsep.train.distributed import Dist, any_rank, setup_distributed
from diffsep.train.ema import WeightEMA
from diffsep.train.export import export_model
from diffsep.train.loss import (
    data_prediction_loss,
    diffsep_loss,
    draw_training_noise,
    network_input,
    normalize_batch,
)
from diffsep.train.validation import (
    validate,
    validate_whole_files,
    validation_items,
    whole_file_items,
)

__all__ = ["StepInfo", "TrainHooks", "TrainResult", "export_model", "train", "train_step"]

RunStatus = Literal["finished", "interrupted", "paused"]


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
    status: RunStatus  # "paused": max_new_steps or optim.cpu_minutes reached
    checkpoint: Path | None
    export: Path | None
    last_loss: float = math.nan
    validation: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""  # SHA-256 of this process's final weights (equal on every rank)


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


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
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
    return torch.Generator(device=device).manual_seed(derive_seed(config.optim.seed, rank, step))


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
    ctx = setup_distributed(device)
    try:
        result = _Run(config, ctx, hooks).run(resume, max_new_steps)
        if ctx.active and dist.is_initialized():
            dist.barrier()  # no rank tears the group down while another still uses it
        return result
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


@dataclass
class TrainState:
    """What one optimiser step changes: the network (and ``train_model``, the same network
    or its DDP wrapper), its optimizer, gradient scaler (fp16 on CUDA) and EMA."""

    network: ScoreModel
    train_model: nn.Module
    sde: DiffusionMixingSDE
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: WeightEMA


def new_train_state(config: TrainConfig, device: torch.device) -> TrainState:
    """A freshly initialised network (seeded by ``optim.seed``) with Adam and an EMA."""
    torch.manual_seed(config.optim.seed)
    network = ScoreModel(config.model).to(device)
    use_scaler = device.type == "cuda" and config.optim.precision == "fp16"
    return TrainState(
        network=network,
        train_model=network,
        sde=make_sde(config.model.sde, config.model.num_sources),
        optimizer=torch.optim.Adam(network.parameters(), lr=config.optim.lr),
        scaler=torch.amp.GradScaler("cuda") if use_scaler else None,
        ema=WeightEMA(network, config.optim.ema_decay),
    )


class _Run:
    """One call of :func:`train`: the training state, the data position and the bookkeeping
    between steps (logging, validation, checkpoints, export, stop conditions)."""

    def __init__(self, config: TrainConfig, ctx: Dist, hooks: TrainHooks) -> None:
        self.config, self.ctx, self.hooks = config, ctx, hooks
        self.run_dir = Path(config.output.dir).expanduser()
        if ctx.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputError(
                    f"{self.run_dir}: cannot create ({err.strerror or err})"
                ) from None
        self.log = _Logger(self.run_dir, hooks, ctx.is_main)
        if config.optim.threads:
            torch.set_num_threads(config.optim.threads)
        self.state = new_train_state(config, ctx.device)
        self.position = Position()
        self.last_checkpoint: Path | None = None
        self.last_export: Path | None = None
        self.last_validation: dict[str, float] = {}
        self.last_loss = math.nan
        self.last_save_time = time.monotonic()
        self.valid_items: tuple[torch.Tensor, torch.Tensor] | None = None
        self.whole_items: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.stop: _StopRequest | None = None

    # -- setting up ------------------------------------------------------------------------------

    def restore(self, resume: bool) -> None:
        """Continue from the newest checkpoint, or start from ``optim.init_from``'s weights."""
        config, state = self.config, self.state
        previous = latest_checkpoint(self.run_dir)
        if previous is not None:
            if not resume:
                raise OutputError(
                    f"{self.run_dir}: already holds checkpoints (resume, or choose a new "
                    "output.dir)"
                )
            saved_config, saved = read_checkpoint(previous)
            changes = _check_resume_config(saved_config, config, previous)
            state.network.load_state_dict(saved["model"])
            state.ema.load(saved["ema"], int(saved["ema_updates"]))
            state.optimizer.load_state_dict(saved["optimizer"])
            if state.scaler is not None and saved.get("scaler"):
                state.scaler.load_state_dict(saved["scaler"])
            self.position = Position(
                int(saved["step"]), int(saved["epoch"]), int(saved["batch_in_epoch"]),
                float(saved.get("train_cpu_s", 0.0)),
            )
            self.last_checkpoint = previous
            self.log.message(f"resumed from {previous} at step {self.position.step}")
            for change in changes:
                self.log.message(f"setting changed since the checkpoint: {change}")
        elif config.optim.init_from:
            weights, origin = initial_weights(config.optim.init_from, config)
            try:
                state.network.load_state_dict(weights)
            except RuntimeError as err:
                first = first_lines(err)
                raise CheckpointError(
                    f"optim.init_from '{config.optim.init_from}': {first}"
                ) from None
            state.ema = WeightEMA(state.network, config.optim.ema_decay)
            self.log.message(f"initialised from {origin}")

    def prepare_network(self) -> None:
        """Precision, compilation and the DDP wrapper of the network."""
        config, ctx, network = self.config, self.ctx, self.state.network
        network.backbone_dtype = autocast_dtype(config, ctx.device)
        if config.optim.precision != "fp32" and network.backbone_dtype is None:
            self.log.message(
                f"precision {config.optim.precision}: not native on this {ctx.device.type}, "
                "training in float32"
            )
        if config.optim.compile:
            network.backbone.compile(dynamic=False)
        if ctx.world > 1:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.state.train_model = nn.parallel.DistributedDataParallel(network, device_ids=ids)

    # -- between steps -------------------------------------------------------------------------

    def checkpoint(self) -> None:
        if self.ctx.is_main:
            s = self.state
            self.last_checkpoint = save_checkpoint(
                self.run_dir, self.config, s.network, s.ema, s.optimizer, s.scaler,
                self.position, self.config.output.keep_checkpoints,
            )
            self.log.message(f"checkpoint {self.last_checkpoint}")
        self.last_save_time = time.monotonic()

    def saved_at_current_step(self) -> bool:
        saved = self.last_checkpoint
        return saved is not None and saved.name == step_name(self.position.step)

    def export(self) -> None:
        assert self.last_checkpoint is not None  # callers checkpoint first
        self.last_export = export_model(
            self.last_checkpoint, self.run_dir / EXPORT_DIR, overwrite=True
        )
        self.log.message(f"exported EMA model to {self.last_export}")

    def validate_and_export(self, last: bool) -> None:
        """Validate (``last``: the run's final validation, whole files included) and, with
        ``output.export_on_validation``, checkpoint and export."""
        if not self.ctx.is_main:
            return
        if self.valid_items is not None or self.whole_items:
            started = time.monotonic()
            stop = self.stop

            def cancel_on_stop(step: int, steps: int) -> None:
                if stop is not None and stop.requested:
                    raise _ValidationCancelled

            try:
                scores = self.validation_scores(cancel_on_stop, last)
            except _ValidationCancelled:
                self.log.message(
                    f"validation at step {self.position.step} cancelled: stop requested"
                )
                return
            if scores:  # empty when only whole files are validated and they are not due
                self.last_validation = scores
                self.log.metrics({"kind": "valid", "step": self.position.step,
                                  **self.cpu_record(), **scores})
                shown = ", ".join(f"{k} {v:.2f} dB" for k, v in scores.items())
                self.log.message(f"validation at step {self.position.step}: {shown} "
                                 f"({time.monotonic() - started:.0f} s)")
        if self.config.output.export_on_validation:
            self.checkpoint()
            self.export()

    def validation_scores(self, on_step: Callable[[int, int], None], last: bool) -> dict[str, float]:
        """The crop scores and, when due (``valid.whole_every``, or ``last``), the whole-file
        scores."""
        weights, valid = self.state.ema.state_dict(), self.config.valid
        scores = {}
        if self.valid_items is not None:
            scores = validate(self.config, weights, *self.valid_items, self.ctx.device,
                              on_step=on_step)
        whole_due = last or not valid.whole_every or self.position.step % valid.whole_every == 0
        if self.whole_items and whole_due:
            scores.update(validate_whole_files(self.config, weights, self.whole_items,
                                               self.ctx.device, on_item=on_step))
        return scores

    def checkpoint_due(self) -> bool:
        minutes = self.config.output.checkpoint_minutes
        every = self.config.output.checkpoint_every
        by_time = bool(minutes) and time.monotonic() - self.last_save_time >= 60.0 * minutes
        by_steps = bool(every) and self.position.step % every == 0
        return any_rank(self.ctx, by_time or by_steps) and not self.saved_at_current_step()

    # -- the loop --------------------------------------------------------------------------------

    def run(self, resume: bool, max_new_steps: int | None) -> TrainResult:
        config, ctx = self.config, self.ctx
        dataset = build_train_dataset(config)  # bad data fails before anything is written
        per_epoch = batches_per_epoch(dataset, config, ctx.world)
        self.restore(resume)
        self.prepare_network()
        if ctx.is_main:
            self.valid_items = validation_items(
                build_valid_dataset(config), config.valid.num_mixtures
            )
            self.whole_items = whole_file_items(
                build_valid_dataset(config, whole=True), config.valid.whole_files
            )
            (self.run_dir / CONFIG_JSON).write_text(config.to_json(), encoding="utf-8")
            params = sum(p.numel() for p in self.state.network.parameters())
            self.log.message(
                f"diffsep {__version__} train: {config.model.task}, "
                f"{config.model.num_sources} sources at {config.model.sample_rate} Hz, "
                f"{params / 1e6:.2f} M parameters, {dataset_length(dataset)} items/epoch, "
                f"{per_epoch} batches/epoch x {ctx.world} process(es), device {ctx.device}, "
                f"steps {self.position.step}/{config.optim.steps}"
            )
            if self.hooks.on_start is not None:
                self.hooks.on_start(self.position.step, config.optim.steps)

        self.state.network.train()
        with _StopRequest() as self.stop:
            status = self.loop(dataset, per_epoch, max_new_steps)
        return self.finish(status)

    def loop(self, dataset: Any, per_epoch: int, max_new_steps: int | None) -> RunStatus:
        """Steps until done, stopped, paused; returns how it ended."""
        config, ctx, position = self.config, self.ctx, self.position
        total, every = config.optim.steps, config.valid.every
        budget = 60.0 * config.optim.cpu_minutes  # training CPU-seconds; 0: no limit
        separation = config.model.task == "separation"
        progress = _Progress()
        new_steps = 0
        while position.step < total:
            loader = epoch_batches(dataset, config, ctx, position.epoch, position.batch_in_epoch)
            for mix, sources in loader:
                started, cpu_started = time.monotonic(), time.process_time()
                loss, grad_norm, lr = train_step(
                    config, ctx, self.state, mix, sources, position.step, separation
                )
                position.step += 1
                position.batch_in_epoch += 1
                new_steps += 1
                self.last_loss = loss
                elapsed = time.monotonic() - started
                self.position.train_cpu_s += time.process_time() - cpu_started
                if ctx.is_main and self.hooks.on_step is not None:
                    self.hooks.on_step(StepInfo(position.step, total, loss, grad_norm, lr, elapsed))
                progress.add(loss, elapsed)
                if position.step % config.output.log_every == 0:
                    self.log_progress(progress, grad_norm, lr)
                if position.batch_in_epoch >= per_epoch:
                    position.epoch += 1
                    position.batch_in_epoch = 0

                done = position.step >= total
                spent = bool(budget) and any_rank(ctx, position.train_cpu_s >= budget) and not done
                if every and (position.step % every == 0 or done or spent):
                    self.validate_and_export(last=done or spent)  # a last point on the curve
                if self.checkpoint_due():
                    self.checkpoint()
                assert self.stop is not None
                if any_rank(ctx, self.stop.requested):
                    return "interrupted"
                if max_new_steps is not None and new_steps >= max_new_steps and not done:
                    return "paused"
                if spent:
                    return "paused"
                if done:
                    return "finished"
                if position.batch_in_epoch == 0:
                    break  # new epoch: new loader
        return "finished"

    def cpu_record(self) -> dict[str, float]:
        """``{"train_cpu_s": ...}``: CPU seconds of training steps so far, to the millisecond."""
        return {"train_cpu_s": round(self.position.train_cpu_s, 3)}

    def log_progress(self, progress: _Progress, grad_norm: float, lr: float) -> None:
        mean_loss, mean_time = progress.take()
        step, total = self.position.step, self.config.optim.steps
        self.log.metrics({"kind": "train", "step": step, "loss": mean_loss,
                          "grad_norm": grad_norm, "lr": lr, "s_per_step": mean_time,
                          **self.cpu_record()})
        self.log.message(f"step {step}/{total} loss {mean_loss:.4f} grad {grad_norm:.3f} "
                         f"lr {lr:.2e} {mean_time:.2f} s/step")

    def finish(self, status: RunStatus) -> TrainResult:
        """Last checkpoint (and export when finished); the result, with a weight fingerprint
        compared across ranks."""
        if not self.saved_at_current_step():
            self.checkpoint()
        if status == "finished" and self.last_export is None and self.ctx.is_main:
            self.export()
        fingerprint = weights_fingerprint(self.state.network)
        if self.ctx.world > 1:
            fingerprints: list[Any] = [None] * self.ctx.world
            dist.all_gather_object(fingerprints, fingerprint)
            if len(set(fingerprints)) != 1:
                self.log.message("warning: the processes ended with different weights")
        self.log.message(f"{status} at step {self.position.step}")
        return TrainResult(self.position.step, status, self.last_checkpoint, self.last_export,
                           self.last_loss, self.last_validation, fingerprint)


class _Progress:
    """Losses and step times since the last log line."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.times: list[float] = []

    def add(self, loss: float, seconds: float) -> None:
        self.losses.append(loss)
        self.times.append(seconds)

    def take(self) -> tuple[float, float]:
        """Mean loss and mean seconds per step; starts a new window."""
        means = float(np.mean(self.losses)), float(np.mean(self.times))
        self.losses.clear()
        self.times.clear()
        return means


def train_step(
    config: TrainConfig,
    ctx: Dist,
    state: TrainState,
    mix: torch.Tensor,
    sources: torch.Tensor,
    step: int,
    permutation_invariant: bool,
) -> tuple[float, float, float]:
    """One optimiser step on a batch ``mix`` (B, 1, N), ``sources`` (B, K, N); returns (loss,
    gradient norm before clipping, learning rate)."""
    device, sde, train_model = ctx.device, state.sde, state.train_model
    optimizer, scaler = state.optimizer, state.scaler
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
            scored=1 if config.model.task == "enhancement" else None,
        ).mean()
    else:
        score = train_model(x_t, draw.t, mix)
        loss = diffsep_loss(
            sde, score, mix, sources, draw, permutation_invariant=permutation_invariant
        ).mean()

    lr = learning_rate(config.optim, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    clip = config.optim.grad_clip if config.optim.grad_clip > 0 else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(state.network.parameters(), clip))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    elif math.isfinite(grad_norm):
        optimizer.step()
    state.ema.update(state.network)
    loss_value = loss.detach()
    if ctx.world > 1:
        dist.all_reduce(loss_value, op=dist.ReduceOp.SUM)
        loss_value = loss_value / ctx.world
    return float(loss_value), grad_norm, lr


def learning_rate(optim: OptimConfig, step: int) -> float:
    """Learning rate of (0-based) ``step``: ``optim.lr`` after a linear warm-up over
    ``optim.warmup_steps``, then the rate of the last ``optim.lr_drops`` entry reached."""
    lr = optim.lr * (min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0)
    for start, dropped in optim.lr_drops:
        if step >= start:
            lr = dropped
    return lr
