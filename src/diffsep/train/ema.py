"""Exponential moving average of a network's weights (the weights used for inference).

After each optimiser step ``shadow = d * shadow + (1 - d) * param`` with the warm-up
``d = min(decay, (1 + n) / (10 + n))`` (n = updates so far), so early averages are not
dominated by the random initialisation. Buffers (e.g. STFT windows) are copied as they are.
The shadow is kept in float32 on the parameters' device.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class WeightEMA:
    """EMA of ``module``'s state_dict entries; keys are those of ``module.state_dict()``."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self._param_names = {name for name, _ in module.named_parameters()}
        self.shadow: dict[str, torch.Tensor] = {
            name: value.detach().float().clone() for name, value in module.state_dict().items()
        }

    def current_decay(self) -> float:
        """The decay the next update uses (warm-up included)."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Blend ``module``'s current parameters into the shadow; copy its buffers."""
        decay = self.current_decay()
        shadows, currents = [], []
        for name, value in module.state_dict().items():
            if name in self._param_names:
                shadows.append(self.shadow[name])
                currents.append(value.detach().float())
            else:
                self.shadow[name].copy_(value.detach())
        if shadows:
            torch._foreach_lerp_(shadows, currents, 1.0 - decay)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (float32 copies), loadable into the module."""
        return {name: value.clone() for name, value in self.shadow.items()}

    def load(self, shadow: Mapping[str, torch.Tensor], num_updates: int) -> None:
        """Restore a saved shadow (same keys) and update count."""
        missing = sorted(set(self.shadow) - set(shadow))
        extra = sorted(set(shadow) - set(self.shadow))
        if missing or extra:
            raise KeyError(f"EMA keys differ: missing {missing[:3]}, unexpected {extra[:3]}")
        for name, value in shadow.items():
            self.shadow[name].copy_(value.to(self.shadow[name].device, torch.float32))
        self.num_updates = int(num_updates)
