"""Function-preserving widening of a trained score network (Net2WiderNet, Chen et al. 2016).

A network with backbone ``nf`` doubled starts from a trained narrower one and computes the same
function: every channel of the narrow network is copied twice, a layer that reads copied
channels reads each copy with half the weight, and the two halves are nudged by ``+e`` and
``-e`` (their sum is unchanged) so that the copies receive different gradients and can drift
apart in training. Channels are copied a GroupNorm group (4 channels) at a time, so every
GroupNorm of the wider network, with twice the groups or as many groups twice as large (where
``backbone.max_groups`` caps them), normalises by the statistics of one narrow group. The
attention's query is scaled by 1/sqrt(2): its dot products run over twice the channels, and
its softmax scale is 1/sqrt(channels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from diffsep.errors import ConfigError
from diffsep.nn.layers import NIN, AttnBlock, GaussianFourierProjection, num_groups

GROUP = 4  # channels per GroupNorm group in a narrow network that can be widened


def copy_index(old_size: int) -> torch.Tensor:
    """(2 old_size,) int64: the narrow channel each wide channel copies.

    Wide channels ``[8q, 8q + 4)`` and ``[8q + 4, 8q + 8)`` both copy narrow group ``q``
    (channels ``[4q, 4q + 4)``), in order.
    """
    wide = torch.arange(2 * old_size)
    return GROUP * (wide // (2 * GROUP)) + wide % GROUP


def copy_sign(old_size: int) -> torch.Tensor:
    """(2 old_size,) float32: +1 on the first copy of each narrow channel, -1 on the second."""
    wide = torch.arange(2 * old_size)
    return 1.0 - 2.0 * ((wide // GROUP) % 2).float()


def widen_tensor(
    narrow: torch.Tensor,
    shape: torch.Size,
    out_axes: tuple[int, ...],
    in_axes: tuple[int, ...],
    noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """``narrow`` grown to ``shape``: each axis keeps its size or doubles.

    A doubled output axis copies (:func:`copy_index`); a doubled input axis copies, halves and
    adds ``+-e`` to the two copies, ``e ~ noise * std(narrow) * N(0, 1)``. ValueError for any
    other change of size.
    """
    wide = narrow.float()
    halved: list[int] = []
    for axis, (old, new) in enumerate(zip(narrow.shape, shape, strict=True)):
        if new == old:
            continue
        if new != 2 * old or axis not in out_axes + in_axes:
            raise ValueError(f"cannot widen axis {axis} from {old} to {new}")
        if axis in in_axes:
            halved.append(axis)
        else:
            wide = wide.index_select(axis, copy_index(old))
    scale = float(wide.std()) if wide.numel() > 1 else 0.0
    for axis in halved:
        old = wide.shape[axis]
        e = torch.randn(wide.shape, generator=generator) * (noise * scale)
        sign_shape = [1] * wide.ndim
        sign_shape[axis] = 2 * old
        sign = copy_sign(old).reshape(sign_shape)
        index = copy_index(old)
        wide = wide.index_select(axis, index) / 2 + e.index_select(axis, index) * sign
    return wide.to(narrow.dtype)


def _axes(module: nn.Module, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(output axes, input axes) of parameter ``name`` of ``module``."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return ((0,), (1,)) if name == "weight" else ((0,), ())
    if isinstance(module, NIN):
        return ((1,), (0,)) if name == "W" else ((0,), ())
    if isinstance(module, (nn.GroupNorm, GaussianFourierProjection)):
        return (0,), ()
    return (), ()


def _check_group_norm(norm: nn.GroupNorm, name: str, narrow_max_groups: int) -> None:
    """A wide GroupNorm must see copies of narrow groups of :data:`GROUP` channels."""
    narrow_channels = norm.num_channels // 2
    narrow_groups = num_groups(narrow_channels, narrow_max_groups)
    if narrow_groups * GROUP != narrow_channels or norm.num_groups not in (
        2 * narrow_groups, narrow_groups
    ):
        raise ConfigError(
            f"{name}: cannot widen a GroupNorm of {narrow_channels} channels in "
            f"{narrow_groups} groups to {norm.num_channels} in {norm.num_groups} groups "
            f"(widening needs groups of {GROUP} channels in the narrow network; a larger "
            "backbone.max_groups in the wide one keeps them)"
        )


def widen_state_dict(
    narrow: Mapping[str, torch.Tensor],
    network: nn.Module,
    *,
    narrow_max_groups: int = 32,
    noise: float = 1e-2,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """``network``'s state_dict filled from the state_dict ``narrow`` of the same architecture
    with half its width, computing the same function (up to float rounding).
    ``narrow_max_groups``: the narrow backbone's ``max_groups``; ``noise``: the relative size of
    the +-e that tells copies apart; ``seed``: its random draw.

    Raises ConfigError when a tensor is missing or cannot be widened.
    """
    generator = torch.Generator().manual_seed(seed)
    target = network.state_dict()
    missing = sorted(set(target) - set(narrow))
    if missing:
        raise ConfigError(f"cannot widen: the narrow weights lack {', '.join(missing[:3])}")
    wide: dict[str, torch.Tensor] = {}
    for module_name, module in network.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module.named_parameters(recurse=False):
            key = prefix + name
            if param.shape == narrow[key].shape:
                wide[key] = narrow[key].clone()
                continue
            if isinstance(module, nn.GroupNorm):
                _check_group_norm(module, key, narrow_max_groups)
            out_axes, in_axes = _axes(module, name)
            try:
                wide[key] = widen_tensor(narrow[key], param.shape, out_axes, in_axes, noise,
                                         generator)
            except ValueError as err:
                raise ConfigError(f"cannot widen {key}: {err}") from None
    for module_name, module in network.named_modules():
        query = f"{module_name}.NIN_0" if module_name else "NIN_0"
        if isinstance(module, AttnBlock) and module.NIN_0.W.shape != narrow[f"{query}.W"].shape:
            for name in (f"{query}.W", f"{query}.b"):
                wide[name] = wide[name] / math.sqrt(2.0)
    for key, value in target.items():
        if key not in wide:  # buffers (STFT windows)
            if value.shape != narrow[key].shape:
                raise ConfigError(f"cannot widen {key}: {tuple(narrow[key].shape)} -> "
                                  f"{tuple(value.shape)}")
            wide[key] = narrow[key].clone()
    return wide
