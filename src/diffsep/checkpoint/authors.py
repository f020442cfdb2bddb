"""The authors' Lightning checkpoint (``.ckpt`` / ``checkpoint.pt``) -> (ModelConfig, weights).

The weights are the EMA shadow, what the reference uses at inference, under ScoreModel
state_dict names.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from diffsep.checkpoint.hydra import model_config_from_hyper_parameters
from diffsep.checkpoint.unpickler import to_plain, torch_load_restricted
from diffsep.config import (
    ModelConfig,
)
from diffsep.errors import (
    CheckpointError,
)

AUTHORS_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


class MissingEMAWarning(UserWarning):
    """An authors' checkpoint has no ``ema`` entry, so its raw (non-averaged) weights are used."""


_PREFIX = "score_model."
# Buffers of the reference score model: in the state_dict, not in model.parameters() (nor EMA).
_BUFFER_KEYS = ("score_model.stft.window", "score_model.stft_inv.window")


def _ema_weights(state_dict: Mapping[str, Any], ema: Any, path: Path) -> dict[str, torch.Tensor]:
    """EMA shadow tensors named by the state_dict keys they belong to (buffers from state_dict).

    ``ema['shadow_params'][i]`` belongs to the i-th tensor of ``model.parameters()``, which is
    the state_dict order without the buffers.
    """
    param_keys = [k for k in state_dict if k not in _BUFFER_KEYS]
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not isinstance(shadow, (list, tuple)):
        raise CheckpointError(f"{path}: checkpoint 'ema' has no shadow_params list")
    if len(shadow) != len(param_keys):
        raise CheckpointError(
            f"{path}: checkpoint 'ema' has {len(shadow)} shadow tensors for "
            f"{len(param_keys)} parameters"
        )
    weights = dict(state_dict)
    for key, tensor in zip(param_keys, shadow):
        if not isinstance(tensor, torch.Tensor) or tensor.shape != state_dict[key].shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(
                f"{path}: EMA tensor for '{key}' has shape {got}, "
                f"expected {tuple(state_dict[key].shape)}"
            )
        weights[key] = tensor
    return weights


def read_authors_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and inference weights of the authors' Lightning checkpoint (``.ckpt``/``.pt``).

    The weights are the EMA shadow (what the reference's ``eval()`` runs with), keyed by
    ScoreModel state_dict names (the reference key minus ``score_model.``), float32, plus the
    two STFT window buffers. Without an ``ema`` entry the raw state_dict weights are returned
    and a :class:`MissingEMAWarning` is issued, as the reference does.
    """
    path = Path(path).expanduser()
    checkpoint = torch_load_restricted(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (top level is not a dict)")
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    outside = [k for k in state_dict if not (isinstance(k, str) and k.startswith(_PREFIX))]
    if outside:
        raise CheckpointError(
            f"{path}: unexpected state_dict entries outside the score model: {outside[:3]}"
        )
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry '{key}' is not a tensor")

    config = model_config_from_hyper_parameters(to_plain(checkpoint.get("hyper_parameters"), str(path)), path)

    ema = checkpoint.get("ema")
    if ema is None:
        warnings.warn(
            f"{path}: checkpoint has no EMA weights; using its raw training weights",
            MissingEMAWarning,
            stacklevel=2,
        )
        weights = dict(state_dict)
    else:
        weights = _ema_weights(state_dict, ema, path)
    # copy out of the memory-mapped file, as float32
    return config, {key[len(_PREFIX) :]: _as_float32(tensor) for key, tensor in weights.items()}


def _as_float32(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_floating_point():
        return tensor.detach().to(torch.float32, copy=True).contiguous()
    return tensor.detach().clone().contiguous()

