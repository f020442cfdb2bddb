"""Training checkpoints: the run folder's layout, atomic writes, reading them back (no code is
unpickled), and the weights a fresh run starts from (``optim.init_from``).

Run folder (``config.output.dir``)::

    train.log                     plain text log (appended across resumes)
    metrics.jsonl                 one JSON object per logged step / validation
    train_config.json             the configuration of the latest (re)start
    checkpoints/step-XXXXXXXX/    model.safetensors (raw weights), ema.safetensors (EMA),
                                  state.pt (optimizer, step, data position; loads with
                                  torch.load(weights_only=True)), train_config.json
    export/                       the EMA model in the diffsep format (config.json,
                                  model.safetensors, README.md), refreshed at each validation
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffsep import __version__
from diffsep.atomic import replacing_folder
from diffsep.config import ModelConfig
from diffsep.errors import CheckpointError, ConfigError, OutputError, first_lines
from diffsep.train.config import TrainConfig, config_from_json
from diffsep.train.ema import WeightEMA

CHECKPOINT_DIR = "checkpoints"


EXPORT_DIR = "export"


LOG_NAME = "train.log"


METRICS_NAME = "metrics.jsonl"


CONFIG_JSON = "train_config.json"


_STEP_DIR = re.compile(r"^step-(\d{8,})$")


_CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "state.pt", CONFIG_JSON)


@dataclass
class Position:
    """Where a run is: optimiser steps done, the data position, and the CPU seconds spent
    in training steps so far (rank 0's, validation excluded; carried across resumes)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_cpu_s: float = 0.0


def step_name(step: int) -> str:
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
    position: Position,
    keep: int,
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically; keep the newest ``keep`` checkpoints."""
    root = run_dir / CHECKPOINT_DIR
    final = root / step_name(position.step)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with replacing_folder(final) as staging:
            _save_tensors(network.state_dict(), staging / "model.safetensors")
            _save_tensors(ema.state_dict(), staging / "ema.safetensors")
            state = {
                "format": "diffsep-train-checkpoint",
                "diffsep_version": __version__,
                "step": position.step,
                "epoch": position.epoch,
                "batch_in_epoch": position.batch_in_epoch,
                "train_cpu_s": position.train_cpu_s,
                "ema_updates": ema.num_updates,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "torch_rng": torch.get_rng_state(),
                "train_config_json": config.to_json(),
            }
            torch.save(state, staging / "state.pt")
            (staging / CONFIG_JSON).write_text(config.to_json(), encoding="utf-8")
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
        detail = first_lines(err)
        raise CheckpointError(f"{path / 'state.pt'}: cannot read ({detail})") from None
    if not isinstance(state, dict) or state.get("format") != "diffsep-train-checkpoint":
        raise CheckpointError(f"{path / 'state.pt'}: not a diffsep training state")
    config = config_from_json(state["train_config_json"], str(path / "state.pt"))
    state["model"] = _load_tensors(path / "model.safetensors")
    state["ema"] = _load_tensors(path / "ema.safetensors")
    return config, state


def resolve_checkpoint(path: str | Path) -> Path:
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


# Settings a fresh run may change from its init_from weights: every tensor still fits, and
# the backbone's features carry over while training re-learns what its output means (another
# parameterisation) or sees (another STFT).
_WARM_START_KEYS = ("model.parameterisation:", "model.stft.")
# ... and with backbone.nf doubled, widened by diffsep.nn.widen (Net2WiderNet)
_WIDEN_KEYS = ("model.backbone.nf:", "model.backbone.max_groups:")


def initial_weights(spec: str, config: TrainConfig) -> tuple[dict[str, torch.Tensor], str]:
    """The weights named by ``optim.init_from`` for a fresh run, as float32 tensors, and a
    description of where they came from.

    ``spec``: a training checkpoint or run folder (its EMA weights), or anything ``--model``
    accepts (bundled name, model folder or file, the authors' checkpoint, Hub repo id).
    ConfigError when its architecture differs from ``config.model`` in more than
    ``_WARM_START_KEYS``, or, when ``config.model`` has twice its ``backbone.nf``, more than
    those and ``_WIDEN_KEYS``: then its weights are widened to the same function.
    """
    from diffsep.checkpoint import load_model_files
    from diffsep.hub import resolve_model

    local = Path(spec).expanduser()
    if (local / "state.pt").is_file() or (local / CHECKPOINT_DIR).is_dir():
        checkpoint = resolve_checkpoint(local)
        saved, state = read_checkpoint(checkpoint)
        model_config, weights, origin = saved.model, state["ema"], f"{checkpoint} (EMA)"
    else:
        path = resolve_model(spec, config.model.task)
        model_config, weights = load_model_files(path)
        origin = str(path)
    differences = architecture_differences(config.model, model_config)
    widen = config.model.backbone.nf == 2 * model_config.backbone.nf
    allowed = _WARM_START_KEYS + (_WIDEN_KEYS if widen else ())
    refused = [line for line in differences if not line.startswith(allowed)]
    if refused:
        shown = "; ".join(refused[:4]) + ("; ..." if len(refused) > 4 else "")
        raise ConfigError(
            f"optim.init_from '{spec}': its model differs from this config's ({shown}); "
            "set [model] to its config.json values (or twice its backbone.nf to widen it)"
        )
    weights = {k: v.float() for k, v in weights.items()}
    if widen:
        from diffsep.nn.score_model import ScoreModel
        from diffsep.nn.widen import widen_state_dict

        weights = widen_state_dict(weights, ScoreModel(config.model),
                                   narrow_max_groups=model_config.backbone.max_groups,
                                   seed=config.optim.seed)
        origin += ", widened to twice its channels (the same function)"
    if differences:
        origin += " as a warm start (" + "; ".join(differences) + ")"
    return weights, origin


def weights_fingerprint(network: nn.Module) -> str:
    """SHA-256 over the names and bytes of ``network``'s state_dict (float32, CPU)."""

    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
