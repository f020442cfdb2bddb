"""Model files: our Hub-layout folder (config.json + model.safetensors) and the authors' Lightning checkpoint.

Two formats are read, one is written:

- **diffsep format** (written and read): a folder laid out like a Hugging Face model repo,
  ``config.json`` (``ModelConfig.to_dict()``), ``model.safetensors`` (the ScoreModel state_dict)
  and ``README.md`` (model card); or one ``.safetensors`` file whose metadata carries the config.
- **authors' format** (read only): the PyTorch Lightning ``.ckpt`` / ``checkpoint.pt`` written by
  the reference training code. It is a pickle, so it is read with a restricted unpickler that
  admits only tensor rebuilding, plain containers and inert stand-ins for OmegaConf/Lightning
  classes; nothing in the file can import a module or run code. The EMA weights (what the
  reference uses at inference) are returned under ScoreModel state_dict names.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import types
import typing
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from diffsep import __version__
from diffsep.config import (
    FORMAT_VERSION,
    BackboneConfig,
    ModelConfig,
    SamplerConfig,
    SDEConfig,
    STFTConfig,
    model_segment_seconds,
)
from diffsep.errors import CheckpointError, ConfigError, ModelNotFoundError, OutputError

__all__ = [
    "AUTHORS_CHECKPOINT_SUFFIXES",
    "CARD_NAME",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "MissingEMAWarning",
    "convert_authors_checkpoint",
    "load_model_files",
    "model_card",
    "read_authors_checkpoint",
    "save_model_file",
    "save_model_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
AUTHORS_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")

_META_CONFIG = "diffsep_config"
_META_VERSION = "diffsep_version"


class MissingEMAWarning(UserWarning):
    """An authors' checkpoint has no ``ema`` entry, so its raw (non-averaged) weights are used."""


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------


class _InertStub:
    """Stand-in for a class the loader must never import (OmegaConf, Lightning, ...).

    It only records what the pickle hands it: constructor arguments, ``BUILD`` state and
    items/elements set on it. It has no behaviour, so a file cannot do anything through it.
    """

    qualified_name: typing.ClassVar[str] = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _InertStub:  # noqa: PYI034
        obj = object.__new__(cls)
        object.__setattr__(obj, "args", args)
        object.__setattr__(obj, "state", None)
        object.__setattr__(obj, "items", {})
        object.__setattr__(obj, "elements", [])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "state", state)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<stub {self.qualified_name}>"


class _RefusedGlobal(Exception):
    def __init__(self, qualified_name: str) -> None:
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


# Classes whose pickled instances are plain data in a training checkpoint. They are never
# imported: each maps to a fresh _InertStub subclass.
_STUB_MODULE_ROOTS = ("omegaconf", "pytorch_lightning", "lightning", "lightning_fabric")

_BUILTIN_MODULES = ("builtins", "__builtin__")  # protocol 2 pickles name builtins "__builtin__"

# Builtin types a pickle may call by name. All are pure constructors of plain values.
_BUILTIN_TYPES: dict[str, type] = {
    t.__name__: t
    for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray)
}


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call as ``_codecs.encode`` to rebuild ``bytes``; latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _RefusedGlobal("_codecs.encode (with a codec other than latin1)")
    return text.encode("latin1")


def _numpy_global(name: str) -> Any:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    table = {
        "scalar": core.multiarray.scalar,
        "_reconstruct": core.multiarray._reconstruct,
        "dtype": np.dtype,
        "ndarray": np.ndarray,
    }
    return table[name]


def _exact_globals() -> dict[str, Callable[[], Any]]:
    """Module-qualified name -> factory of the real object admitted for it."""
    table: dict[str, Callable[[], Any]] = {
        # tensors: torch.save writes each tensor as _rebuild_tensor_v2(storage, offset, size,
        # stride, requires_grad, backward_hooks[, metadata]); the storage itself comes from
        # torch's persistent_load, never from a global.
        "torch._utils._rebuild_tensor_v2": lambda: torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_tensor": lambda: torch._utils._rebuild_tensor,  # pre-1.0 files
        "torch._utils._rebuild_parameter": lambda: torch._utils._rebuild_parameter,
        "torch.Size": lambda: torch.Size,  # tuple subclass
        "torch.device": lambda: torch.device,  # value type, e.g. in optimizer/callback state
        # containers: state_dict is an OrderedDict; OmegaConf's resolver cache a defaultdict
        "collections.OrderedDict": lambda: collections.OrderedDict,
        "collections.defaultdict": lambda: collections.defaultdict,
        # OmegaConf node metadata stores typing.Any as the node's ref/element type
        "typing.Any": lambda: typing.Any,
        # protocol-2 bytes (and numpy scalar payloads)
        "_codecs.encode": lambda: _latin1_bytes,
    }
    for np_module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        # numpy scalars/arrays, e.g. a metric value logged as np.float64 in callback state
        table[f"{np_module}.scalar"] = lambda: _numpy_global("scalar")
        table[f"{np_module}._reconstruct"] = lambda: _numpy_global("_reconstruct")
    table["numpy.dtype"] = lambda: _numpy_global("dtype")
    table["numpy.ndarray"] = lambda: _numpy_global("ndarray")
    for module in _BUILTIN_MODULES:
        for name, cls in _BUILTIN_TYPES.items():
            table[f"{module}.{name}"] = lambda cls=cls: cls
    return table


_EXACT_GLOBALS = _exact_globals()


def _torch_global(name: str) -> Any:
    """``torch.<name>`` when it is a storage class or a dtype, else refuse."""
    if name.endswith("Storage"):
        with contextlib.suppress(KeyError, AttributeError):
            return torch.serialization.StorageType(name)  # typed storage marker (a dtype holder)
        if name == "UntypedStorage":
            return torch.UntypedStorage
    value = vars(torch).get(name)  # no getattr: torch's module __getattr__ may import things
    if isinstance(value, torch.dtype):
        return value
    raise _RefusedGlobal(f"torch.{name}")


def _make_restricted_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler admits only checkpoint data."""
    stub_classes: dict[str, type[_InertStub]] = {}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            qualified = f"{module}.{name}"
            factory = _EXACT_GLOBALS.get(qualified)
            if factory is not None:
                return factory()
            if module == "torch":
                return _torch_global(name)
            if module.split(".", 1)[0] in _STUB_MODULE_ROOTS and name.isidentifier():
                if qualified not in stub_classes:
                    stub_classes[qualified] = type(
                        name, (_InertStub,), {"qualified_name": qualified, "__module__": __name__}
                    )
                return stub_classes[qualified]
            raise _RefusedGlobal(qualified)

    def _refuse_plain_load(*args: Any, **kwargs: Any) -> Any:
        raise _RefusedGlobal("legacy (non-zip) torch serialization")

    module = types.ModuleType("diffsep_restricted_pickle")
    module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = _refuse_plain_load  # type: ignore[attr-defined]
    module.loads = _refuse_plain_load  # type: ignore[attr-defined]
    return module


def _check_torch_zip(path: Path) -> None:
    """Refuse anything but an intact ``torch.save`` zip (no TorchScript, no legacy pickle).

    Every record's CRC is checked (one sequential read, little memory): torch itself does not
    check them, so a damaged download would otherwise load with wrong weights.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError):
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (corrupt, truncated or a legacy format)"
        ) from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read file ({err.strerror or err})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch in {damaged})")
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (no single */data.pkl inside)")
    root = pickles[0].split("/")[0]
    if f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names):
        raise CheckpointError(f"{path}: a TorchScript archive, not a training checkpoint")


def _torch_load_restricted(path: Path) -> Any:
    """``torch.load`` through the restricted unpickler; every failure becomes CheckpointError."""
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such checkpoint file")
    _check_torch_zip(path)
    # Memory-mapped first: of the ~1.3 GB in a full training checkpoint only the EMA copy is
    # used. Files torch cannot map (e.g. odd record alignment) are read normally instead.
    try:
        return _torch_load(path, mmap=True)
    except CheckpointError:
        raise
    except Exception:  # noqa: BLE001, S110 (retried below without mmap)
        pass
    try:
        return _torch_load(path, mmap=False)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 (torch/zip/pickle raise many types)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({detail})") from None


def _torch_load(path: Path, *, mmap: bool) -> Any:
    restricted = _make_restricted_pickle_module()
    try:
        return torch.load(path, pickle_module=restricted, weights_only=False,
                          map_location="cpu", mmap=mmap)
    except _RefusedGlobal as refused:
        raise CheckpointError(
            f"{path}: refused to load '{refused.qualified_name}' from the pickle; "
            "a DiffSep checkpoint holds only tensors and plain data (is this file trusted?)"
        ) from None


# ---------------------------------------------------------------------------------------------
# Stubs -> plain data
# ---------------------------------------------------------------------------------------------

_MAX_DEPTH = 200


def _to_plain(obj: Any, where: str, depth: int = 0) -> Any:
    """Plain Python data (dict/list/scalars/tensors) from unpickled objects with stubs.

    An OmegaConf container stub yields its ``_content`` (dict of nodes, list of nodes, None or a
    string such as ``'???'`` or an interpolation); a leaf node stub yields its ``_val``.
    """
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: nested too deeply (or cyclic)")
    if isinstance(obj, _InertStub):
        state = obj.state
        if isinstance(state, dict):
            if "_content" in state:
                return _to_plain(state["_content"], where, depth + 1)
            if "_val" in state:
                return _to_plain(state["_val"], where, depth + 1)
        if obj.items and not obj.elements:
            return {_plain_key(k): _to_plain(v, where, depth + 1) for k, v in obj.items.items()}
        if obj.elements and not obj.items:
            return [_to_plain(v, where, depth + 1) for v in obj.elements]
        if len(obj.args) == 1 and state is None:  # e.g. an Enum rebuilt from its value
            return _to_plain(obj.args[0], where, depth + 1)
        raise CheckpointError(f"{where}: cannot interpret a pickled {obj.qualified_name} object")
    if isinstance(obj, type) and issubclass(obj, _InertStub):
        return obj.qualified_name
    if isinstance(obj, Mapping):
        return {_plain_key(k): _to_plain(v, where, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v, where, depth + 1) for v in obj]
    return obj


def _plain_key(key: Any) -> Any:
    if isinstance(key, type) and issubclass(key, _InertStub):
        return key.qualified_name
    if isinstance(key, _InertStub):
        return repr(key)
    return key


# ---------------------------------------------------------------------------------------------
# The authors' Hydra config -> ModelConfig
# ---------------------------------------------------------------------------------------------

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


def _model_config(hyper_parameters: Any, path: Path) -> ModelConfig:
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


# ---------------------------------------------------------------------------------------------
# The authors' checkpoint -> (ModelConfig, weights)
# ---------------------------------------------------------------------------------------------

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
    checkpoint = _torch_load_restricted(path)
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

    config = _model_config(_to_plain(checkpoint.get("hyper_parameters"), str(path)), path)

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


# ---------------------------------------------------------------------------------------------
# Our format: write
# ---------------------------------------------------------------------------------------------


def model_card(
    config: ModelConfig,
    *,
    title: str | None = None,
    description: str | None = None,
    source: str | None = None,
) -> str:
    """A Hugging Face model card (README.md with YAML front matter) for a DiffSep model."""
    task_tag = "speech-separation" if config.task == "separation" else "speech-enhancement"
    rate_khz = f"{config.sample_rate / 1000:g} kHz"
    title = title or f"DiffSep {config.task} model ({rate_khz})"
    what = (
        f"separates a single-channel mixture into {config.num_sources} speakers"
        if config.task == "separation"
        else "separates noisy speech into clean speech and noise"
    )
    lines = [
        "---",
        "library_name: diffsep",
        "license: mit",
        "pipeline_tag: audio-to-audio",
        "tags:",
        "  - audio",
        "  - speech",
        f"  - {task_tag}",
        "  - diffusion",
        "  - score-based",
        "---",
        "",
        f"# {title}",
        "",
        description or f"A DiffSep score-based diffusion model that {what}.",
        "",
        "## Settings",
        "",
        f"- task: {config.task}, {config.num_sources} outputs",
        f"- sample rate: {config.sample_rate} Hz",
        (
            f"- SDE: {config.sde.kind} (gamma {config.sde.gamma:g}, "
            f"sigma {config.sde.sigma_min:g}..{config.sde.sigma_max:g})"
        ),
        (
            f"- sampler: {config.sampler.steps} steps, snr {config.sampler.snr:g}, "
            f"{config.sampler.corrector_steps} corrector step(s), t_eps {config.sampler.t_eps:g}"
        ),
        f"- window: {model_segment_seconds(config):g} s (the default --segment)",
        f"- network: NCSN++ with nf={config.backbone.nf}",
        "",
    ]
    if source:
        lines += ["## Provenance", "", source, ""]
    lines += [
        "## Usage",
        "",
        "```sh",
        "pip install diffsep",
        f"diffsep {'separate' if config.task == 'separation' else 'enhance'} --model <this repo> input.wav",
        "```",
        "",
        "## Citation",
        "",
        (
            "R. Scheibler, Y. Ji, S.-W. Chung, J. Byun, S. Choe, M.-S. Choi, "
            '"Diffusion-based generative speech source separation", ICASSP 2023.'
        ),
        "",
    ]
    return "\n".join(lines)


def _tensors_for_saving(
    state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype, where: Path
) -> dict[str, torch.Tensor]:
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"{where}: unsupported weight dtype {dtype}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: state_dict entry {key!r} is not a named tensor")
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous().clone()  # own storage: safetensors refuses shared ones
    return tensors


def _safetensors_metadata(config: ModelConfig) -> dict[str, str]:
    return {
        "format": "pt",
        _META_CONFIG: json.dumps(config.to_dict(), sort_keys=True),
        _META_VERSION: __version__,
    }


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def save_model_folder(
    folder: str | os.PathLike[str],
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    card: str | None = None,
    dtype: torch.dtype = torch.float32,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``folder``, atomically.

    Everything is written to a temporary sibling folder that is renamed into place, so
    ``folder`` is either absent, the old model or the complete new one. Floating-point tensors
    are stored as ``dtype`` (float32, float16 or bfloat16). An existing ``folder`` is replaced
    only with ``overwrite=True``. Returns the folder.
    """
    from safetensors.torch import save_file

    folder = Path(folder).expanduser()
    if folder.exists() and not overwrite:
        raise OutputError(f"{folder}: already exists (pass overwrite=True to replace it)")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    tensors = _tensors_for_saving(state_dict, dtype, folder)
    config_json = json.dumps({**config.to_dict(), _META_VERSION: __version__}, indent=2) + "\n"
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    except OSError as err:
        raise OutputError(f"{folder}: cannot create ({err.strerror or err})") from None
    try:
        _write_text(staging / CONFIG_NAME, config_json)
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata=_safetensors_metadata(config))
        _fsync_file(staging / WEIGHTS_NAME)
        _write_text(staging / CARD_NAME, card if card is not None else model_card(config))
        for file in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
            os.chmod(staging / file, 0o644)  # safetensors creates its file private
        os.chmod(staging, 0o755)
        _swap_into_place(staging, folder)
    except OSError as err:
        raise OutputError(f"{folder}: cannot write model ({err.strerror or err})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing ``folder`` is moved aside first."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    retired.rmdir()
    os.rename(folder, retired)
    try:
        os.rename(staging, folder)
    except OSError:
        os.rename(retired, folder)  # put the old model back
        raise
    shutil.rmtree(retired, ignore_errors=True)


def save_model_file(
    path: str | os.PathLike[str],
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    *,
    overwrite: bool = False,
) -> Path:
    """Write one ``.safetensors`` file whose metadata carries the config JSON, atomically."""
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    if path.suffix != ".safetensors":
        raise OutputError(f"{path}: a single-file model must end in .safetensors")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: already exists (pass overwrite=True to replace it)")
    tensors = _tensors_for_saving(state_dict, dtype, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        os.close(handle)
    except OSError as err:
        raise OutputError(f"{path}: cannot create ({err.strerror or err})") from None
    temp = Path(temp_name)
    try:
        save_file(tensors, str(temp), metadata=_safetensors_metadata(config))
        _fsync_file(temp)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write model ({err.strerror or err})") from None
    finally:
        temp.unlink(missing_ok=True)
    return path


def convert_authors_checkpoint(
    src: str | os.PathLike[str],
    dst_folder: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    *,
    overwrite: bool = False,
    origin: str | None = None,
) -> Path:
    """Write ``src`` as a diffsep model folder; returns the folder.

    ``src`` is normally the authors' Lightning checkpoint (its EMA weights are used, and the
    model card records ``origin``, e.g. ``"hf://fakufaku/diffsep/checkpoint.pt"``, and the
    file's SHA-256). Any other model :func:`load_model_files` reads is re-saved as well (e.g.
    to store a float32 model as float16), keeping its model card when it has one.
    """
    src = Path(src).expanduser()
    checkpoint = _authors_checkpoint_in(src)
    if checkpoint is not None:
        config, weights = read_authors_checkpoint(checkpoint)
        card = model_card(
            config,
            source=(
                f"Converted by diffsep {__version__} from the authors' PyTorch Lightning "
                f"checkpoint `{origin or checkpoint.name}` (SHA-256 `{_sha256(checkpoint)}`), "
                "using its EMA weights, as the reference `separate.py` does. Reference code: "
                "https://github.com/fakufaku/diffusion-separation (MIT license)."
            ),
        )
    else:
        config, weights = load_model_files(src)
        card = _existing_card(src) or model_card(
            config, source=f"Re-saved by diffsep {__version__} from `{origin or src.name}`."
        )
    return save_model_folder(dst_folder, config, weights, card, dtype, overwrite=overwrite)


def _existing_card(src: Path) -> str | None:
    folder = src if src.is_dir() else src.parent
    card = folder / CARD_NAME
    if (src.is_dir() or src.name in (CONFIG_NAME, WEIGHTS_NAME)) and card.is_file():
        return _read_text(card)
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading any supported model file
# ---------------------------------------------------------------------------------------------


def load_model_files(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and float32 weights from a model folder or file.

    ``path`` may be a diffsep folder (``config.json`` + ``model.safetensors``), one of those two
    files, a single ``.safetensors`` file with the config in its metadata, an authors'
    Lightning checkpoint (``.ckpt``/``.pt``/``.pth``), or a folder holding exactly one such
    checkpoint (e.g. a download of ``fakufaku/diffsep``).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such model file or folder")
    if path.is_dir():
        return _load_folder(path)
    if path.name == CONFIG_NAME:
        return _load_folder(path.parent)
    if path.suffix == ".safetensors":
        if path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
            return _load_folder(path.parent)
        return _load_single_safetensors(path)
    if _authors_checkpoint_in(path) is not None:
        return read_authors_checkpoint(path)
    raise CheckpointError(
        f"{path}: unknown model file type (expected a folder, .safetensors, .ckpt or .pt)"
    )


def _checkpoints_in_folder(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in AUTHORS_CHECKPOINT_SUFFIXES
    )


def _authors_checkpoint_in(path: Path) -> Path | None:
    """The authors' checkpoint ``path`` designates: the file itself, or the single .ckpt/.pt
    of a folder that is not in our format; None otherwise."""
    if path.is_file():
        if path.suffix in AUTHORS_CHECKPOINT_SUFFIXES:
            return path
        if path.suffix not in (".safetensors", ".json") and zipfile.is_zipfile(path):
            return path
        return None
    if path.is_dir() and not (path / CONFIG_NAME).exists() and not (path / WEIGHTS_NAME).exists():
        checkpoints = _checkpoints_in_folder(path)
        return checkpoints[0] if len(checkpoints) == 1 else None
    return None


def _load_folder(folder: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if config_path.is_file() and weights_path.is_file():
        config = _config_from_json(_read_text(config_path), config_path)
        tensors, _ = _read_safetensors(weights_path)
        return config, tensors
    if config_path.is_file() or weights_path.is_file():
        missing = WEIGHTS_NAME if config_path.is_file() else CONFIG_NAME
        extra = ""
        if missing == WEIGHTS_NAME and (folder / f"{WEIGHTS_NAME}.index.json").is_file():
            extra = " (sharded weights are not supported)"
        raise CheckpointError(f"{folder}: model folder lacks {missing}{extra}")
    checkpoints = _checkpoints_in_folder(folder)
    if len(checkpoints) == 1:
        return read_authors_checkpoint(checkpoints[0])
    if len(checkpoints) > 1:
        names = ", ".join(p.name for p in checkpoints[:4])
        raise CheckpointError(f"{folder}: several checkpoints ({names}); pass one file")
    raise CheckpointError(
        f"{folder}: not a model folder (no {CONFIG_NAME} + {WEIGHTS_NAME}, no .ckpt/.pt file)"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read ({err})") from None


def _config_from_json(text: str, where: Path) -> ModelConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{where}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: config is not a JSON object")
    data = dict(data)
    data.pop(_META_VERSION, None)
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: config format_version {version!r} is newer than this diffsep supports "
            f"({FORMAT_VERSION}); upgrade diffsep"
        )
    try:
        return ModelConfig.from_dict(data)
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: invalid config ({err})") from None


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (floating point upcast to float32) and metadata of a .safetensors file."""
    from safetensors import safe_open

    with contextlib.suppress(OSError), open(path, "rb") as handle:
        if handle.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise CheckpointError(
                f"{path}: a Git LFS pointer, not the weights (run `git lfs pull` in the checkout)"
            )
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                tensors[key] = handle.get_tensor(key)
    except Exception as err:  # noqa: BLE001 (SafetensorError, OSError, ...)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: cannot read safetensors file ({detail})") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensors[key] = tensor.to(torch.float32)
    return tensors, metadata


def _load_single_safetensors(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    tensors, metadata = _read_safetensors(path)
    if _META_CONFIG in metadata:
        return _config_from_json(metadata[_META_CONFIG], path), tensors
    sibling = path.parent / CONFIG_NAME
    if sibling.is_file():
        return _config_from_json(_read_text(sibling), sibling), tensors
    raise CheckpointError(
        f"{path}: no model config (neither in the file's metadata nor a {CONFIG_NAME} beside it)"
    )
