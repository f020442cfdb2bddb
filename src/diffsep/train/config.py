"""Training configuration: frozen dataclasses read from TOML, YAML or JSON, with ``key.sub=value``
overrides.

A run is fully described by a :class:`TrainConfig`; it is written as JSON into every training
checkpoint and beside the log, so a checkpoint can always be traced back to its settings.

TOML layout (every table and key is optional; unknown keys are errors)::

    [model]            # a diffsep.config.ModelConfig: task, num_sources, sample_rate, ...
    [model.backbone]   # NCSN++ width/depth
    [data]             # what to train and validate on
    [optim]            # Adam, batch, segment, steps, p_T, EMA, precision
    [valid]            # periodic separation of a few validation mixtures
    [output]           # run folder, checkpoint/export cadence

A ``.yaml`` / ``.yml`` file holds the same tables as nested mappings (``model: {backbone:
{nf: 16}}``). Relative paths in ``[data]`` and ``[output]`` are resolved against the config
file's folder by :func:`load_train_config`, so a recipe works from any working directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from diffsep.config import ModelConfig
from diffsep.errors import ConfigError

DataKind = Literal["dynamic", "mixture_folder", "noisy_folder"]
Precision = Literal["fp32", "bf16", "fp16"]
Objective = Literal["score_matching", "sisdr"]
ExportDtype = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class DataConfig:
    """Training and validation data.

    ``kind='dynamic'``: ``train`` is a folder of speaker folders (or a manifest CSV) mixed on
    the fly (:class:`~diffsep.train.data.DynamicMixingDataset`), with ``noise`` for
    enhancement and ``train_split`` selecting ``<folder>/<split>``. ``'mixture_folder'``:
    ``train`` is a WSJ0-2mix/LibriMix-style root (``mix/``, ``s1/`` ...; other folder names
    with ``mix_dir`` and ``source_dirs``, e.g. LibriMix's ``mix_clean``, or ``mix_both`` with
    ``source_dirs = ["s1", "s2", "noise"]`` and three sources). ``'noisy_folder'``: a
    VoiceBank-DEMAND-style root (``noisy/``, ``clean/``; or ``noisy_dir``, ``clean_dir``).
    ``valid`` is always a fixed set in the folder layout of the task (those same folder names);
    empty disables the separation part of validation. ``recorded_share`` (dynamic mixing from
    a manifest CSV with a ``recorded`` column, as ``recipes/make_corpus.py`` writes): the
    probability that a speaker drawn is a recorded voice rather than TTS; unset, speakers are
    drawn uniformly. ``noise_recorded_share`` (enhancement, a noise manifest with that column):
    the same for the noise files, recorded noise against synthetic noise and babble.
    ``speed_range`` / ``noise_speed_range`` (dynamic mixing; unset: off): speed perturbation,
    each speech / noise window played at a speed factor drawn uniformly from the range (tempo
    and pitch together; 0.5 to 2), voices and noises beyond the ones on disk.
    """

    kind: DataKind = "dynamic"
    train: str = ""
    noise: str = ""
    train_split: str = "train"
    valid: str = ""
    epoch_length: int = 20000  # items per epoch for dynamic mixing
    snr_range: tuple[float, float] = (-5.0, 20.0)  # dB, enhancement
    gain_range: tuple[float, float] = (-2.5, 2.5)  # dB, separation
    level_range: tuple[float, float] = (-35.0, -15.0)  # dBFS RMS of the mixture
    recorded_share: float | None = None  # dynamic, manifest: share of recorded-voice draws
    noise_recorded_share: float | None = None  # dynamic, manifest: share of recorded-noise draws
    speed_range: tuple[float, float] | None = None  # dynamic: speech speed factors [0.9, 1.1]
    noise_speed_range: tuple[float, float] | None = None  # dynamic, enhancement: the same, noise
    num_workers: int = 0
    seed: int = 0
    mix_dir: str = "mix"  # mixture folders: the mixtures' folder
    source_dirs: tuple[str, ...] = ()  # mixture folders: the sources' folders; () = s1 ... sK
    noisy_dir: str = "noisy"  # noisy/clean folders
    clean_dir: str = "clean"


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation. ``segment_seconds`` is the training crop; ``p_T`` the probability of the
    t = T branch (started from the true mixture, PIT for separation); ``t_min`` the lower end
    of the time draw and ``t_skew`` its shape (1: uniform; larger: more weight near T, see
    :func:`~diffsep.train.loss.draw_training_noise`); the first ``curriculum_steps`` steps
    train at t = T only. ``precision``: autocast dtype of the backbone (bf16 also on CPUs, fp16
    on CUDA only). ``objective``: ``score_matching`` (the paper) or ``sisdr`` (PIT negative
    SI-SDR of the source estimates plus ``score_weight`` times their implied score-matching
    loss with the weight clipped at ``snr_clip``; see :mod:`diffsep.train.loss`).
    ``compile``: ``torch.compile`` the backbone. ``threads``: CPU threads (0: PyTorch's default).
    ``cpu_minutes``: pause (resumably) once the run has spent that much CPU time in training
    steps (counted across resumes), for comparisons at equal compute.
    ``lr_drops``: ``[[step, lr], ...]``, from each ``step`` on the learning rate is ``lr``
    (steps increasing; before the first, ``lr`` with its warm-up).
    ``init_from``: a model (bundled name, folder, file or Hub id) or a training run/checkpoint
    whose weights start a fresh run (fine-tuning); its architecture must match ``[model]``
    (``parameterisation`` and ``stft`` may differ: a warm start)."""

    lr: float = 2e-4
    warmup_steps: int = 0
    lr_drops: tuple[tuple[int, float], ...] = ()
    batch_size: int = 4
    segment_seconds: float = 2.0
    grad_clip: float = 5.0
    steps: int = 200_000
    p_T: float = 0.1
    t_min: float = 0.03
    ema_decay: float = 0.999
    precision: Precision = "bf16"
    seed: int = 0
    t_skew: float = 1.0
    curriculum_steps: int = 0
    objective: Objective = "score_matching"
    score_weight: float = 0.0
    snr_clip: float = 5.0
    compile: bool = False
    threads: int = 0
    cpu_minutes: float = 0.0  # pause the run after this much training CPU time (0: no limit)
    init_from: str = ""  # weights that start a fresh run (see diffsep.train.loop.initial_weights)


@dataclass(frozen=True)
class ValidConfig:
    """Periodic validation: separate ``num_mixtures`` items of ``data.valid`` (centre crops of
    ``seconds``) with the EMA weights and the given sampler settings (``sampler = false``: only
    the network's one-call estimate at t = T, which is always logged too); log SI-SDR(i).

    ``whole_files``: also separate the first that many files of ``data.valid`` whole, the way
    ``diffsep separate --seed 0`` runs the exported model (its windows and default sampler),
    logged as ``si_sdr_whole``/``si_sdri_whole``; every ``whole_every`` steps (a multiple of
    ``every``; 0: at every validation) and at the run's last validation. Short crops can rank
    checkpoints differently from whole files."""

    every: int = 5000
    sampler: bool = True
    num_mixtures: int = 4
    seconds: float = 4.0
    sampler_steps: int = 30
    corrector_steps: int = 1
    seed: int = 0
    whole_files: int = 0
    whole_every: int = 0


@dataclass(frozen=True)
class OutputConfig:
    """Run folder layout: ``dir/train.log``, ``dir/checkpoints/step-XXXXXXXX/``, ``dir/export/``."""

    dir: str = "runs/diffsep"
    log_every: int = 25
    checkpoint_minutes: float = 10.0
    checkpoint_every: int = 0  # steps; 0: only by time, at validation and at the end
    keep_checkpoints: int = 2
    export_on_validation: bool = True
    export_dtype: ExportDtype = "float16"
    title: str = ""  # model card title of exports
    description: str = ""  # model card text of exports


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``diffsep train`` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    valid: ValidConfig = field(default_factory=ValidConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`: unknown keys and wrongly typed values raise ConfigError."""
        config = _build(cls, data, "")
        validate(config)
        return config


# ---------------------------------------------------------------------------------------------
# Building dataclasses from nested dicts (with light type checking)
# ---------------------------------------------------------------------------------------------


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {', '.join(unknown)}")
    kwargs = {
        name: _coerce(hints[name], value, f"{where}.{name}" if where else name)
        for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or 'config'}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and type(None) in typing.get_args(hint):
            return None
        return _coerce(options[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def validate(config: TrainConfig) -> None:
    """Range checks that the dataclasses cannot express; ConfigError names the key."""
    o, v, d, out = config.optim, config.valid, config.data, config.output
    checks = [
        (o.lr > 0, "optim.lr must be positive"),
        (o.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (all(lr > 0 for _, lr in o.lr_drops), "optim.lr_drops: learning rates must be positive"),
        (all(a[0] < b[0] for a, b in zip(o.lr_drops, o.lr_drops[1:]))
         and all(step >= 0 for step, _ in o.lr_drops),
         "optim.lr_drops: steps must be >= 0 and increasing"),
        (o.batch_size >= 1, "optim.batch_size must be at least 1"),
        (o.segment_seconds > 0, "optim.segment_seconds must be positive"),
        (o.grad_clip > 0 or o.grad_clip == 0, "optim.grad_clip must be >= 0 (0: off)"),
        (o.steps >= 1, "optim.steps must be at least 1"),
        (0.0 <= o.p_T <= 1.0, "optim.p_T must be in [0, 1]"),
        (0.0 < o.t_min < 1.0, "optim.t_min must be in (0, 1)"),
        (0.0 <= o.ema_decay < 1.0, "optim.ema_decay must be in [0, 1)"),
        (o.t_skew >= 1.0, "optim.t_skew must be >= 1 (1: uniform times)"),
        (o.curriculum_steps >= 0, "optim.curriculum_steps must be >= 0"),
        (o.score_weight >= 0.0, "optim.score_weight must be >= 0"),
        (o.snr_clip > 0.0, "optim.snr_clip must be positive"),
        (o.threads >= 0, "optim.threads must be >= 0 (0: PyTorch's default)"),
        (o.cpu_minutes >= 0, "optim.cpu_minutes must be >= 0 (0: no limit)"),
        (v.every >= 0, "valid.every must be >= 0 (0: off)"),
        (v.num_mixtures >= 0, "valid.num_mixtures must be >= 0"),
        (v.seconds > 0, "valid.seconds must be positive"),
        (v.sampler_steps >= 1, "valid.sampler_steps must be at least 1"),
        (v.corrector_steps >= 0, "valid.corrector_steps must be >= 0"),
        (v.whole_files >= 0, "valid.whole_files must be >= 0 (0: off)"),
        (v.whole_every >= 0, "valid.whole_every must be >= 0 (0: at every validation)"),
        (not (v.every and v.whole_every) or v.whole_every % v.every == 0,
         "valid.whole_every must be a multiple of valid.every (whole files are scored at "
         "validations)"),
        (d.epoch_length >= 1, "data.epoch_length must be at least 1"),
        (d.num_workers >= 0, "data.num_workers must be >= 0"),
        (d.recorded_share is None or 0.0 <= d.recorded_share <= 1.0,
         "data.recorded_share must be in [0, 1]"),
        (d.recorded_share is None or d.kind == "dynamic",
         "data.recorded_share applies to dynamic mixing (data.kind = 'dynamic') only"),
        (d.noise_recorded_share is None or 0.0 <= d.noise_recorded_share <= 1.0,
         "data.noise_recorded_share must be in [0, 1]"),
        (d.noise_recorded_share is None or d.kind == "dynamic",
         "data.noise_recorded_share applies to dynamic mixing (data.kind = 'dynamic') only"),
        (d.speed_range is None or d.kind == "dynamic",
         "data.speed_range applies to dynamic mixing (data.kind = 'dynamic') only"),
        (d.noise_speed_range is None or d.kind == "dynamic",
         "data.noise_speed_range applies to dynamic mixing (data.kind = 'dynamic') only"),
        (all(r is None or 0.5 <= r[0] <= r[1] <= 2.0
             for r in (d.speed_range, d.noise_speed_range)),
         "data.speed_range and data.noise_speed_range must be [low, high] with "
         "0.5 <= low <= high <= 2"),
        (out.log_every >= 1, "output.log_every must be at least 1"),
        (out.checkpoint_minutes >= 0, "output.checkpoint_minutes must be >= 0 (0: off)"),
        (out.checkpoint_every >= 0, "output.checkpoint_every must be >= 0 (0: off)"),
        (out.keep_checkpoints >= 1, "output.keep_checkpoints must be at least 1"),
        (bool(out.dir), "output.dir must not be empty"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    folders = {"data.mix_dir": d.mix_dir, "data.noisy_dir": d.noisy_dir,
               "data.clean_dir": d.clean_dir}
    folders.update({f"data.source_dirs[{i}]": name for i, name in enumerate(d.source_dirs)})
    for key, name in folders.items():
        if not name or Path(name).name != name or name in (".", ".."):
            raise ConfigError(f"{key} must be a folder name inside the dataset, got {name!r}")
    if d.source_dirs and len(d.source_dirs) != config.model.num_sources:
        raise ConfigError(
            f"data.source_dirs names {len(d.source_dirs)} folder(s) for "
            f"model.num_sources = {config.model.num_sources}"
        )
    if not math.isfinite(o.lr) or not math.isfinite(o.grad_clip):
        raise ConfigError("optim.lr and optim.grad_clip must be finite")
    if config.model.task == "enhancement" and config.model.num_sources != 2:
        raise ConfigError("model.num_sources must be 2 for enhancement (speech, noise)")
    if d.kind == "noisy_folder" and config.model.task != "enhancement":
        raise ConfigError("data.kind 'noisy_folder' needs model.task = 'enhancement'")
    if d.noise_speed_range is not None and config.model.task != "enhancement":
        raise ConfigError("data.noise_speed_range applies to enhancement (noise) only")
    if d.kind == "dynamic" and config.model.task == "enhancement" and not d.noise:
        raise ConfigError("data.noise is required for enhancement with dynamic mixing")


# ---------------------------------------------------------------------------------------------
# TOML + overrides
# ---------------------------------------------------------------------------------------------


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # Python 3.10
        import tomli
    except ModuleNotFoundError:
        raise ConfigError("reading TOML needs Python 3.11+ or the 'tomli' package") from None
    return tomli


_YAML_SUFFIXES = (".yaml", ".yml")

# YAML 1.1 (PyYAML) reads ``1e-4`` as a string; YAML 1.2 and TOML read it as a number.
_YAML_FLOAT = r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
|\.[0-9_]+(?:[eE][-+][0-9]+)?
|[-+]?\.(?:inf|Inf|INF)
|\.(?:nan|NaN|NAN))$"""


def _parse_yaml(text: str) -> Any:
    """YAML text -> Python objects, safely (plain data only), with YAML 1.2 floats."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(_YAML_FLOAT, re.VERBOSE), list("-+0123456789.")
    )
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def _check_plain(value: Any, where: str) -> None:
    """ConfigError unless ``value`` is plain data: tables, lists, strings, numbers, booleans
    (a TOML or YAML date, a YAML set or binary is none of these)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where or 'config'}: key {key!r} is not a string")
            _check_plain(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, where)
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ConfigError(
            f"{where}: {type(value).__name__} values are not settings (quote it: \"{value}\")"
        )


def _parse_config_text(text: str, path: Path) -> dict[str, Any]:
    """The tables of a TOML or (by suffix) YAML or JSON config file (a run's saved
    ``train_config.json``), plain data only; ConfigError naming the file."""
    suffix = path.suffix.lower()
    kind = "YAML" if suffix in _YAML_SUFFIXES else "JSON" if suffix == ".json" else "TOML"
    try:
        if kind == "YAML":
            data = _parse_yaml(text) or {}
        else:
            data = json.loads(text) if kind == "JSON" else _toml_module().loads(text)
    except Exception as err:  # noqa: BLE001 (yaml.YAMLError, TOMLDecodeError, JSONDecodeError)
        detail = " ".join(str(err).split())
        raise ConfigError(f"{path}: invalid {kind} ({detail})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a {kind} config must be a mapping of tables (model, data, optim, "
            f"...), not a {type(data).__name__}"
        )
    try:
        _check_plain(data, "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> ``(["optim", "lr"], 1e-4)``.

    The value is read as a TOML value (numbers, booleans, ``[1, 2]``, quoted strings); if that
    fails (or gives a date) it is taken as a bare string, so ``data.train=/data/speech`` works
    unquoted.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    raw = raw.strip()
    try:
        value = _toml_module().loads(f"value = {raw}")["value"]
        _check_plain(value, key)
    except Exception:  # noqa: BLE001 (TOMLDecodeError, or a date): not a setting literal
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """A copy of the nested dict ``data`` with each ``key.sub=value`` override set."""
    result = json.loads(json.dumps(data))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a table")
            node = child
        node[path[-1]] = value
    return result


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make the path keys of ``[data]`` and ``[output]`` absolute against ``base``; also
    ``optim.init_from`` when it names an existing path there (it may be a model name or a Hub
    repo id, which stay as they are)."""
    result = json.loads(json.dumps(data))
    optim = result.get("optim")
    if isinstance(optim, dict) and isinstance(optim.get("init_from"), str) and optim["init_from"]:
        candidate = Path(optim["init_from"]).expanduser()
        if not candidate.is_absolute() and (base / candidate).exists():
            optim["init_from"] = str((base / candidate).resolve())
    for section, keys in (("data", ("train", "noise", "valid")), ("output", ("dir",))):
        table = result.get(section)
        if not isinstance(table, dict):
            continue
        for key in keys:
            value = table.get(key)
            if isinstance(value, str) and value:
                path = Path(value).expanduser()
                table[key] = str(path if path.is_absolute() else (base / path).resolve())
    return result


def load_train_config(path: str | Path | None, overrides: typing.Sequence[str] = ()) -> TrainConfig:
    """Read a TOML, YAML (``.yaml``/``.yml``) or JSON (``.json``, as a run saves it) config,
    or start from the defaults with ``path=None``; apply overrides.

    Relative paths in the file resolve against its folder; relative paths given as overrides
    resolve against the current directory.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
        data = _resolve_paths(_parse_config_text(text, path), path.resolve().parent)
    data = _resolve_paths(apply_overrides(data, overrides), Path.cwd())
    where = str(path) if path is not None else "config"
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def config_from_json(text: str, where: str) -> TrainConfig:
    """Parse the JSON written by :meth:`TrainConfig.to_json` (ConfigError on problems)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where}: invalid JSON ({err})") from None
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
