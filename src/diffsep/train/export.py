"""Export of a training checkpoint as a diffsep model folder, with its model card."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

import torch

from diffsep import __version__
from diffsep.errors import ConfigError
from diffsep.model import build_model
from diffsep.nn.score_model import ScoreModel
from diffsep.train.checkpoints import METRICS_NAME, read_checkpoint, resolve_checkpoint
from diffsep.train.config import OptimConfig, TrainConfig

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _objective_text(config: TrainConfig) -> str:
    """The training loss in words (enhancement scores the speech estimate, without PIT)."""
    if config.optim.objective == "score_matching":
        return "score matching"
    if config.model.task == "enhancement":
        return "SI-SDR of the speech estimate"
    return "PIT SI-SDR on the source estimates"


def _lr_text(optim: OptimConfig) -> str:
    """``'Adam lr 0.0003, 0.0001 after step 1500'``: the schedule after the warm-up."""
    drops = "".join(f", {lr:g} after step {step}" for step, lr in optim.lr_drops)
    return f"Adam lr {optim.lr:g}{drops}"


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
        f"(batch {optim.batch_size} x {optim.segment_seconds:g} s, {_lr_text(optim)}, "
        f"EMA {optim.ema_decay:g}, p_T {optim.p_T:g}, {_objective_text(config)}); "
        f"the weights are the EMA. "
        f"Network: {params / 1e6:.2f} M parameters (nf={backbone.nf}, "
        f"ch_mult={list(backbone.ch_mult)}, {backbone.num_res_blocks} res block(s) per level), "
        f"output parameterised as `{config.model.parameterisation}`."
    )
    if optim.init_from:
        # a local path is shown by its last part only (a card is published; a Hub id stays)
        origin = Path(optim.init_from).name if Path(optim.init_from).is_absolute() else (
            optim.init_from)
        trained += f" The run started from the weights of `{origin}` (`optim.init_from`)."
    source = f"Data: {data.kind} from `{Path(data.train).name}`"
    if data.kind == "dynamic" and data.train_split:
        source += f" (split `{data.train_split}`)"
    if config.model.task == "enhancement" and data.noise:
        source += f" with noise from `{Path(data.noise).name}`"
    lines = [trained, "", source + "."]
    if validation:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(validation.items()))
        how = (f"the sampler with {config.valid.sampler_steps} steps" if config.valid.sampler
               else "the one-call estimate at t = T only")
        lines += [
            "",
            (
                f"Validation at step {validation_step if validation_step is not None else step} "
                f"({config.valid.num_mixtures} mixtures of {config.valid.seconds:g} s, {how}): "
                f"{shown}."
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

    path = resolve_checkpoint(checkpoint)
    config, state = read_checkpoint(path)
    config = with_default_window(config)
    weights = state["ema"] if use_ema else state["model"]
    build_model(config.model, weights, "cpu", source=str(path))  # refuses weights that do not fit
    name = dtype or config.output.export_dtype
    if name not in _DTYPES:
        raise ConfigError(f"unknown export dtype {name!r}: use float32, float16 or bfloat16")
    step = int(state["step"])
    validation, validation_step = last_validation(path.parent.parent, step)
    text = card if card is not None else training_card(config, step, validation, validation_step)
    return save_model_folder(out, config.model, weights, text, _DTYPES[name], overwrite=overwrite)


def last_validation(run_dir: Path, up_to: int) -> tuple[dict[str, float] | None, int | None]:
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
