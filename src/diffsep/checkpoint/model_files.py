"""Our model format: a Hub-layout folder (config.json + model.safetensors + README.md) or one
``.safetensors`` file with the config in its metadata. Writing is atomic; reading also accepts
the authors' checkpoint (:mod:`diffsep.checkpoint.authors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from diffsep import __version__
from diffsep.atomic import replacing, replacing_folder
from diffsep.checkpoint.authors import (
    AUTHORS_CHECKPOINT_SUFFIXES,
    read_authors_checkpoint,
)
from diffsep.checkpoint.card import model_card
from diffsep.config import (
    FORMAT_VERSION,
    ModelConfig,
)
from diffsep.errors import (
    CheckpointError,
    ConfigError,
    ModelNotFoundError,
    OutputError,
    first_lines,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

_META_CONFIG = "diffsep_config"
_META_VERSION = "diffsep_version"


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
    _check_target(folder, overwrite)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder")
    tensors = _tensors_for_saving(state_dict, dtype, folder)
    config_json = json.dumps({**config.to_dict(), _META_VERSION: __version__}, indent=2) + "\n"
    with _model_output(folder), replacing_folder(folder) as staging:
        _write_text(staging / CONFIG_NAME, config_json)
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata=_safetensors_metadata(config))
        _fsync_file(staging / WEIGHTS_NAME)
        _write_text(staging / CARD_NAME, card if card is not None else model_card(config))
        for file in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
            os.chmod(staging / file, 0o644)  # safetensors creates its file private
        os.chmod(staging, 0o755)
    return folder


def _check_target(target: Path, overwrite: bool) -> None:
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists (pass overwrite=True to replace it)")


@contextlib.contextmanager
def _model_output(target: Path) -> Iterator[None]:
    """Create ``target``'s parent folder; an OSError while writing becomes OutputError."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{target}: cannot create ({err.strerror or err})") from None
    try:
        yield
    except OSError as err:
        raise OutputError(f"{target}: cannot write model ({err.strerror or err})") from None


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
    _check_target(path, overwrite)
    tensors = _tensors_for_saving(state_dict, dtype, path)
    with _model_output(path), replacing(path) as temp:
        save_file(tensors, str(temp), metadata=_safetensors_metadata(config))
        _fsync_file(temp)
        os.chmod(temp, 0o644)
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
        raise CheckpointError(
            f"{path}: cannot read safetensors file ({first_lines(err)})"
        ) from None
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
