"""Where a model comes from: a bundled default, a local path or a Hugging Face Hub repo.

``resolve_model(spec, task)`` turns what the user passed to ``--model`` into a local file or
folder that :func:`diffsep.checkpoint.load_model_files` reads:

- ``None`` -> the bundled default model for the task (shipped inside the wheel);
- a bundled model name (``diffsep-sep-8k``, ...) -> that bundled folder;
- an existing path -> itself;
- ``owner/name[@revision]`` -> files downloaded into the normal Hugging Face cache. A repo in
  diffsep format gives ``config.json`` + ``model.safetensors`` (+ ``README.md``); the authors'
  repo ``fakufaku/diffsep`` gives ``checkpoint.pt``. The cache is tried first, so a model
  downloaded once needs no network. ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` and
  ``HF_HUB_CACHE`` are read when called (not only when huggingface_hub was imported). An
  endpoint that cannot be resolved or connected to is reported at once, without
  huggingface_hub's ~25 s of retries (see :func:`endpoint_unreachable`).
"""

from __future__ import annotations

import importlib.resources
import os
import re
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from diffsep.checkpoint import AUTHORS_CHECKPOINT_SUFFIXES, CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from diffsep.config import Task
from diffsep.errors import CheckpointError, ConfigError, ModelNotFoundError, first_lines

__all__ = [
    "AUTHORS_CHECKPOINT_NAME",
    "BUNDLED_MODELS",
    "DEFAULT_MODELS",
    "HUB_MODELS",
    "BundledModel",
    "HubModel",
    "ModelInfo",
    "ProgressCallback",
    "bundled_model_path",
    "download_model",
    "list_models",
    "parse_repo_spec",
    "resolve_model",
]

AUTHORS_CHECKPOINT_NAME = "checkpoint.pt"

ProgressCallback = Callable[[str, int, "int | None"], None]
"""``on_progress(filename, bytes_done, bytes_total_or_None)`` during a download."""


@dataclass(frozen=True)
class BundledModel:
    """A model shipped with the package, in ``diffsep/_models/<folder>`` (Hub layout)."""

    folder: str
    task: Task
    sample_rate: int
    description: str


@dataclass(frozen=True)
class HubModel:
    """A known model on the Hugging Face Hub and the files it is made of."""

    task: Task
    sample_rate: int
    files: tuple[str, ...]
    description: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "diffsep-sep-8k": BundledModel(
        "sep-8k", "separation", 8000,
        "small network (CPU, then 7.5 GPU-minutes): does not separate well yet",
    ),
    "diffsep-enh-16k": BundledModel(
        "enh-16k", "enhancement", 16000,
        "small network (CPU, then 18 GPU-minutes): removes only part of the noise",
    ),
}

DEFAULT_MODELS: dict[str, str] = {"separation": "diffsep-sep-8k", "enhancement": "diffsep-enh-16k"}

HUB_MODELS: dict[str, HubModel] = {
    "fakufaku/diffsep": HubModel(
        "separation",
        8000,
        (AUTHORS_CHECKPOINT_NAME,),
        "the authors' WSJ0-2mix model (ICASSP 2023), downloaded once",
    ),
}

_OUR_FILES = (CONFIG_NAME, WEIGHTS_NAME)


# ---------------------------------------------------------------------------------------------
# Bundled models
# ---------------------------------------------------------------------------------------------


def _bundled_roots() -> list[Path]:
    """Folders that may hold bundled models: the installed package's ``_models``, then the
    top-level ``models/`` of a source checkout (editable installs, running from ``src``)."""
    roots: list[Path] = []
    packaged = importlib.resources.files("diffsep") / "_models"
    if isinstance(packaged, Path):
        roots.append(packaged)
    package_dir = Path(__file__).resolve().parent
    if package_dir.parent.name == "src":
        roots.append(package_dir.parent.parent / "models")
    return roots


def _is_model_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _OUR_FILES)


def bundled_model_path(name: str) -> Path | None:
    """The folder of a bundled model, or None when it is not installed."""
    entry = BUNDLED_MODELS[name]
    for root in _bundled_roots():
        folder = root / entry.folder
        if _is_model_folder(folder):
            return folder
    return None


def _require_bundled(name: str) -> Path:
    folder = bundled_model_path(name)
    if folder is None:
        entry = BUNDLED_MODELS[name]
        raise ModelNotFoundError(
            f"bundled model '{name}' ({entry.task}, {entry.sample_rate} Hz) is not installed "
            "with this copy of diffsep; pass --model with a model folder, a .ckpt file or a "
            "Hugging Face repo id (e.g. --model fakufaku/diffsep for separation)"
        )
    return folder


# ---------------------------------------------------------------------------------------------
# Spec parsing
# ---------------------------------------------------------------------------------------------

_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"
_REPO_SPEC = re.compile(rf"^(?P<repo>{_REPO_PART}/{_REPO_PART})(?:@(?P<revision>[^\s@]+))?$")
_FILE_SUFFIXES = (*AUTHORS_CHECKPOINT_SUFFIXES, ".safetensors", ".json")


def parse_repo_spec(spec: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo_id, revision or None); None when not of that form."""
    match = _REPO_SPEC.match(spec)
    if match is None:
        return None
    repo = match.group("repo")
    if ".." in repo or "--" in repo or repo.endswith(_FILE_SUFFIXES):
        return None
    return repo, match.group("revision")


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or "\\" in spec
        or spec.endswith(_FILE_SUFFIXES)
        or (len(spec) > 1 and spec[1] == ":")  # a Windows drive
    )


def resolve_model(
    spec: str | os.PathLike[str] | None,
    task: Task = "separation",
    *,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """A local model file or folder for ``--model`` (None means the task's bundled default).

    Raises ModelNotFoundError with one actionable message when the model cannot be found or
    downloaded (offline, unknown repo, missing bundled model, ...).
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if task not in DEFAULT_MODELS:
            raise ConfigError(f"unknown task '{task}' (expected {' or '.join(DEFAULT_MODELS)})")
        return _require_bundled(DEFAULT_MODELS[task])
    text = os.fspath(spec).strip()
    local = Path(text).expanduser()
    if local.exists():
        return local
    if text in BUNDLED_MODELS:
        return _require_bundled(text)
    repo = None if _looks_like_path(text) else parse_repo_spec(text)
    if repo is None:
        raise ModelNotFoundError(
            f"model '{text}': no such file or folder, and not a bundled model "
            f"({', '.join(BUNDLED_MODELS)}) or a Hugging Face repo id (owner/name[@revision])"
        )
    return download_model(repo[0], repo[1], on_progress=on_progress)


# ---------------------------------------------------------------------------------------------
# Hugging Face Hub
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _HubSettings:
    endpoint: str | None
    cache_dir: str | None
    offline: bool


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_settings() -> _HubSettings:
    """The Hub settings of the environment *now*, in huggingface_hub's own precedence."""
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache and os.environ.get("HF_HOME"):
        cache = os.path.join(os.environ["HF_HOME"], "hub")
    if cache:
        cache = os.path.expandvars(os.path.expanduser(cache))
    offline = (
        bool(constants.HF_HUB_OFFLINE)
        or _env_true("HF_HUB_OFFLINE")
        or _env_true("TRANSFORMERS_OFFLINE")
    )
    return _HubSettings(endpoint=endpoint, cache_dir=cache or None, offline=offline)


def _cache_location(settings: _HubSettings) -> str:
    from huggingface_hub import constants

    return settings.cache_dir or constants.HF_HUB_CACHE


def _progress_class(on_progress: ProgressCallback | None) -> type:
    """A tqdm class that draws nothing and reports bytes to ``on_progress``."""
    from tqdm.auto import tqdm

    class _ReportingBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._label = str(kwargs.get("desc") or "")
            self._done = int(kwargs.get("initial") or 0)
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if on_progress is not None:
                on_progress(self._label, self._done, self.total)
            return super().update(n)

    return _ReportingBar


def _cached_model(repo_id: str, revision: str | None, settings: _HubSettings) -> Path | None:
    """A fully cached model of the repo (our folder or the authors' file), else None."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> Path | None:
        found = try_to_load_from_cache(
            repo_id, filename, cache_dir=settings.cache_dir, revision=revision
        )
        return Path(found) if isinstance(found, str) else None

    config = cached(CONFIG_NAME)
    if config is not None and _is_model_folder(config.parent):
        return config.parent
    return cached(AUTHORS_CHECKPOINT_NAME)


def _download_instructions(repo_id: str, revision: str | None) -> str:
    known = HUB_MODELS.get(repo_id)
    files = " ".join(known.files) if known else ""
    rev = f" --revision {revision}" if revision else ""
    command = f"hf download {repo_id}{(' ' + files) if files else ''}{rev}"
    target = (
        f"/path/to/{known.files[0]}" if known and len(known.files) == 1 else "/path/to/model-folder"
    )
    return (
        f"run `{command}` on a machine with internet access and copy the Hugging Face cache "
        f"here, or pass --model {target}"
    )


def _unavailable(
    repo_id: str, revision: str | None, why: str, settings: _HubSettings
) -> ModelNotFoundError:
    at = f"@{revision}" if revision else ""
    return ModelNotFoundError(
        f"model '{repo_id}{at}' is not in the Hugging Face cache ({_cache_location(settings)}) "
        f"and {why}; {_download_instructions(repo_id, revision)}"
    )


def endpoint_unreachable(endpoint: str | None, timeout: float = 5.0) -> str | None:
    """Why the Hub ``endpoint`` (default https://huggingface.co) cannot be reached, found with one
    name lookup and one TCP connection (at most ``timeout`` s), or None when it can be.

    huggingface_hub retries a failed request with back-off (~25 s in all); without DNS or a
    route there is no point. Behind a proxy only a real request can tell, so this says None.
    """
    url = urllib.parse.urlsplit(endpoint or "https://huggingface.co")
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    if (proxies.get(url.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"cannot resolve {host}"
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err.strerror or err}"


def _unreachable(
    repo_id: str, revision: str | None, detail: str, settings: _HubSettings
) -> ModelNotFoundError:
    return _unavailable(
        repo_id,
        revision,
        f"the Hub ({settings.endpoint or 'huggingface.co'}) cannot be reached ({detail}); "
        "set HF_HUB_OFFLINE=1 to skip the attempt",
        settings,
    )


def download_model(
    repo_id: str,
    revision: str | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """The cached (or freshly downloaded) model of a Hub repo: a folder or ``checkpoint.pt``."""
    settings = _hub_settings()
    cached = _cached_model(repo_id, revision, settings)
    if cached is not None:
        return cached
    if settings.offline:
        raise _unavailable(repo_id, revision, "downloads are disabled (HF_HUB_OFFLINE=1)", settings)
    reason = endpoint_unreachable(settings.endpoint)
    if reason is not None:
        raise _unreachable(repo_id, revision, reason, settings)
    return _download(repo_id, revision, settings, on_progress)


def _download(
    repo_id: str,
    revision: str | None,
    settings: _HubSettings,
    on_progress: ProgressCallback | None,
) -> Path:
    import inspect

    from huggingface_hub import hf_hub_download
    from huggingface_hub import utils as errors  # the error classes, in every supported version

    from diffsep import __version__

    options: dict[str, Any] = {
        "cache_dir": settings.cache_dir,
        "endpoint": settings.endpoint,
        "library_name": "diffsep",
        "library_version": __version__,
    }
    if "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        options["tqdm_class"] = _progress_class(on_progress)  # no bars drawn by the library

    def fetch_optional(filename: str, rev: str | None) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=rev, **options))
        except errors.EntryNotFoundError as err:
            if isinstance(err, errors.LocalEntryNotFoundError):
                raise  # not cached and the Hub cannot be reached: not "absent from the repo"
            return None

    at = f"@{revision}" if revision else ""
    try:
        config = fetch_optional(CONFIG_NAME, revision)
        if config is not None:
            commit = config.parent.name  # snapshots/<commit>/config.json: pin the other files
            if fetch_optional(WEIGHTS_NAME, commit) is None:
                raise ModelNotFoundError(
                    f"Hugging Face repo '{repo_id}{at}' has {CONFIG_NAME} but no {WEIGHTS_NAME}"
                )
            fetch_optional(CARD_NAME, commit)
            return config.parent
        checkpoint = fetch_optional(AUTHORS_CHECKPOINT_NAME, revision)
        if checkpoint is not None:
            return checkpoint
    except errors.RevisionNotFoundError:
        raise ModelNotFoundError(
            f"Hugging Face repo '{repo_id}' has no revision '{revision}'"
        ) from None
    except errors.GatedRepoError:
        raise ModelNotFoundError(
            f"Hugging Face repo '{repo_id}' is gated: accept its terms on the Hub and log in "
            "with `hf auth login`"
        ) from None
    except errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"Hugging Face repo '{repo_id}' not found (or private: log in with `hf auth login`)"
        ) from None
    except errors.LocalEntryNotFoundError as err:
        # raised when the Hub cannot be reached and nothing is cached
        cause = err.__cause__ or err.__context__
        detail = type(cause).__name__ if cause is not None else "no response"
        raise _unreachable(repo_id, revision, detail, settings) from None
    except errors.OfflineModeIsEnabled:
        raise _unavailable(
            repo_id, revision, "downloads are disabled (HF_HUB_OFFLINE=1)", settings
        ) from None
    except errors.HfHubHTTPError as err:
        raise ModelNotFoundError(
            f"cannot download from Hugging Face repo '{repo_id}{at}': {first_lines(err)}"
        ) from None
    except ValueError as err:  # huggingface_hub's HFValidationError for ids it rejects
        raise ModelNotFoundError(
            f"'{repo_id}{at}' is not a valid Hugging Face repo id ({err})"
        ) from None
    except OSError as err:
        raise CheckpointError(
            f"cannot store '{repo_id}' in the Hugging Face cache ({_cache_location(settings)}): "
            f"{err.strerror or err}"
        ) from None
    raise ModelNotFoundError(
        f"Hugging Face repo '{repo_id}{at}' holds no diffsep model: neither {CONFIG_NAME} + "
        f"{WEIGHTS_NAME} (diffsep format) nor {AUTHORS_CHECKPOINT_NAME} (the authors' format)"
    )


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``diffsep models``."""

    name: str  # what to pass to --model
    task: Task
    sample_rate: int
    source: Literal["bundled", "hub"]
    description: str
    location: Path | None  # local folder/file when available without network
    default: bool

    @property
    def available(self) -> bool:
        return self.location is not None


def list_models() -> list[ModelInfo]:
    """Bundled models (installed or not) and known Hub models (cached or not)."""
    rows: list[ModelInfo] = []
    defaults = set(DEFAULT_MODELS.values())
    for name, entry in BUNDLED_MODELS.items():
        rows.append(
            ModelInfo(
                name=name,
                task=entry.task,
                sample_rate=entry.sample_rate,
                source="bundled",
                description=entry.description,
                location=bundled_model_path(name),
                default=name in defaults,
            )
        )
    settings = _hub_settings()
    for repo_id, hub_entry in HUB_MODELS.items():
        try:
            location = _cached_model(repo_id, None, settings)
        except Exception:  # noqa: BLE001 (a damaged cache must not break the listing)
            location = None
        rows.append(
            ModelInfo(
                name=repo_id,
                task=hub_entry.task,
                sample_rate=hub_entry.sample_rate,
                source="hub",
                description=hub_entry.description,
                location=location,
                default=False,
            )
        )
    return rows
