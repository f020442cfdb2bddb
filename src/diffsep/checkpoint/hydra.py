"""The authors' composed Hydra config (in the checkpoint's hyper_parameters) -> ModelConfig."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffsep.config import (
    BackboneConfig,
    ModelConfig,
    SamplerConfig,
    SDEConfig,
    STFTConfig,
)
from diffsep.errors import (
    CheckpointError,
    ConfigError,
)

_MISSING = object()
_FULL_INTERPOLATION = re.compile(r"^\$\{\s*([A-Za-z_][\w\-]*(?:\.[\w\-]+)*)\s*\}$")
_ANY_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")


class _HydraConfig:
    """Read access to the authors' composed Hydra config, resolving absolute ``${a.b.c}``."""

    def __init__(self, root: Mapping[str, Any], path: Path) -> None:
        self.root = root
        self.path = path

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {message}")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value at dotted ``key`` with interpolations resolved (``default`` if absent)."""
        return self._lookup(key, default, seen=())

    def _lookup(self, key: str, default: Any, seen: tuple[str, ...]) -> Any:
        if key in seen:
            raise self.error(f"config interpolation cycle through '{key}'")
        node: Any = self.root
        for depth, part in enumerate(key.split(".")):
            node = self._resolve(node, ".".join(key.split(".")[:depth]), seen + (key,))
            if not isinstance(node, Mapping) or part not in node:
                if default is _MISSING:
                    raise self.error(f"config has no '{key}'")
                return default
            node = node[part]
        return self._resolve(node, key, seen + (key,))

    def _resolve(self, value: Any, key: str, seen: tuple[str, ...]) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _FULL_INTERPOLATION.match(value)
        if whole:
            return self._lookup(whole.group(1), _MISSING, seen)

        def substitute(match: re.Match[str]) -> str:
            inner = match.group(1).strip()
            if not _FULL_INTERPOLATION.match("${" + inner + "}"):
                raise self.error(f"config value '{key}' = '{value}' uses an unsupported resolver")
            return str(self._lookup(inner, _MISSING, seen))

        return _ANY_INTERPOLATION.sub(substitute, value)

    def section(self, key: str, allowed: set[str]) -> dict[str, Any]:
        """A mapping from the config whose keys must all be in ``allowed``."""
        node = self.get(key)
        if not isinstance(node, Mapping):
            raise self.error(f"config '{key}' is not a mapping")
        unknown = sorted(str(k) for k in node if k not in allowed)
        if unknown:
            raise self.error(f"unsupported setting(s) in config '{key}': {', '.join(unknown)}")
        return {k: self.get(f"{key}.{k}") for k in node}


_SCORE_MODEL_TARGET = "models.score_models.ScoreModelNCSNpp"
_BACKBONE_TARGET = "models.ncsnpp.NCSNpp"
_SDE_KINDS = {
    "sdes.sdes.MixSDE": ("mix", "separation"),
    "sdes.sdes.PriorMixSDE": ("prior_mix", "enhancement"),
}

# NCSN++ constructor arguments our network hard-codes: any other value is unsupported.
_BACKBONE_FIXED = {
    "scale_by_sigma": True,
    "nonlinearity": "swish",
    "resamp_with_conv": True,
    "conditional": True,
    "fir": True,
    "skip_rescale": True,
    "resblock_type": "biggan",
    "progressive": "output_skip",
    "progressive_input": "input_skip",
    "progressive_combine": "sum",
    "embedding_type": "fourier",
    "centered": False,
}
# NCSN++ arguments that do not affect inference (init_scale only scales the initial weights;
# the channel counts are overwritten by the score model from num_sources).
_BACKBONE_IGNORED = {"_target_", "init_scale", "num_channels_in", "num_channels_out"}
_BACKBONE_TUPLES = ("ch_mult", "attn_resolutions", "fir_kernel")


def _number(cfg: _HydraConfig, key: str, kind: type, default: Any = _MISSING) -> Any:
    value = cfg.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise cfg.error(f"config '{key}' should be {kind.__name__}, got {value!r}")
    return value


def _backbone_config(cfg: _HydraConfig) -> BackboneConfig:
    key = "model.score_model.backbone_args"
    args = cfg.get(key)
    if not isinstance(args, Mapping):
        raise cfg.error(f"config '{key}' is not a mapping")
    target = cfg.get(f"{key}._target_", None)
    if target != _BACKBONE_TARGET:
        raise cfg.error(f"unsupported backbone '{target}' (only {_BACKBONE_TARGET})")
    defaults = BackboneConfig()
    values: dict[str, Any] = {}
    for name in args:
        if name in _BACKBONE_IGNORED:
            continue
        value = cfg.get(f"{key}.{name}")
        if name in _BACKBONE_FIXED:
            if value != _BACKBONE_FIXED[name]:
                raise cfg.error(f"unsupported backbone setting {name}={value!r}")
        elif hasattr(defaults, name):
            if name in _BACKBONE_TUPLES:
                if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value
                ):
                    raise cfg.error(f"config '{key}.{name}' should be a list of ints")
                value = tuple(value)
            else:
                value = _number(cfg, f"{key}.{name}", type(getattr(defaults, name)))
            values[name] = value
        # any other key is swallowed by the reference NCSN++ (**unused_kwargs): ignore it too
    return BackboneConfig(**values)


def _stft_config(cfg: _HydraConfig) -> STFTConfig:
    key = "model.score_model"
    stft = cfg.section(
        f"{key}.stft_args",
        {"n_fft", "hop_length", "center", "pad_mode", "win_length", "normalized", "onesided"},
    )
    for name in ("n_fft", "hop_length"):
        if not isinstance(stft.get(name), int) or isinstance(stft.get(name), bool):
            raise cfg.error(f"config '{key}.stft_args.{name}' should be an int")
    # torchaudio's Spectrogram defaults: center=True, pad_mode='reflect', win_length=n_fft
    if stft.get("center", True) is not True or stft.get("pad_mode", "reflect") != "constant":
        raise cfg.error("unsupported STFT padding (only center=True with pad_mode='constant')")
    if stft.get("win_length") not in (None, stft["n_fft"]) or stft.get("normalized", False):
        raise cfg.error("unsupported STFT window (only win_length=n_fft, normalized=False)")
    if stft.get("onesided", True) is not True:
        raise cfg.error("unsupported two-sided STFT")
    transform = cfg.get(f"{key}.transform", "exponent")
    if transform != "exponent":
        raise cfg.error(f"unsupported spectrogram transform '{transform}' (only 'exponent')")
    if cfg.get(f"{key}.spec_trans_learnable", False):
        raise cfg.error("unsupported learnable spectrogram transform (spec_trans_learnable=true)")
    exponent = _number(cfg, f"{key}.spec_abs_exponent", float, 0.5)
    factor = _number(cfg, f"{key}.spec_factor", float, 3.0)  # ScoreModelNCSNpp's default
    return STFTConfig(
        n_fft=stft["n_fft"],
        hop_length=stft["hop_length"],
        spec_abs_exponent=abs(exponent),  # the reference uses |exponent| and |factor|
        spec_factor=abs(factor),
    )


def _sde_config(cfg: _HydraConfig, num_sources: int) -> tuple[SDEConfig, str]:
    key = "model.sde"
    target = cfg.get(f"{key}._target_", None)
    if target not in _SDE_KINDS:
        raise cfg.error(f"unsupported SDE '{target}' (only {', '.join(_SDE_KINDS)})")
    kind, task = _SDE_KINDS[target]
    allowed = {"_target_", "ndim", "d_lambda", "sigma_min", "sigma_max", "N"}
    if kind == "prior_mix":
        allowed.add("avg_len")
    cfg.section(key, allowed)
    ndim = _number(cfg, f"{key}.ndim", int)
    if ndim != num_sources:
        raise cfg.error(f"config sde.ndim={ndim} differs from num_sources={num_sources}")
    sde = SDEConfig(
        kind=kind,  # type: ignore[arg-type]
        gamma=_number(cfg, f"{key}.d_lambda", float),
        sigma_min=_number(cfg, f"{key}.sigma_min", float),
        sigma_max=_number(cfg, f"{key}.sigma_max", float),
        avg_len=_number(cfg, f"{key}.avg_len", int, SDEConfig().avg_len),
    )
    return sde, task


def model_config_from_hyper_parameters(hyper_parameters: Any, path: Path) -> ModelConfig:
    """ModelConfig from the checkpoint's ``hyper_parameters`` (already plain data)."""
    if not isinstance(hyper_parameters, Mapping):
        raise CheckpointError(f"{path}: checkpoint has no hyper_parameters mapping")
    root = hyper_parameters.get("config", hyper_parameters)
    if not isinstance(root, Mapping) or not isinstance(root.get("model"), Mapping):
        raise CheckpointError(f"{path}: hyper_parameters hold no DiffSep 'model' config")
    cfg = _HydraConfig(root, path)
    target = cfg.get("model.score_model._target_", None)
    if target != _SCORE_MODEL_TARGET:
        raise cfg.error(f"unsupported score model '{target}' (only {_SCORE_MODEL_TARGET})")
    num_sources = _number(cfg, "model.score_model.num_sources", int)
    sde, task = _sde_config(cfg, num_sources)
    # separate.py reads exactly these three sampler settings; other keys never reach inference
    sampler = SamplerConfig(
        steps=_number(cfg, "model.sampler.N", int),
        snr=_number(cfg, "model.sampler.snr", float),
        corrector_steps=_number(cfg, "model.sampler.corrector_steps", int),
        t_eps=_number(cfg, "model.t_eps", float),
    )
    try:
        return ModelConfig(
            task=task,  # type: ignore[arg-type]
            num_sources=num_sources,
            sample_rate=_number(cfg, "model.fs", int),
            stft=_stft_config(cfg),
            backbone=_backbone_config(cfg),
            sde=sde,
            sampler=sampler,
        )
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None

