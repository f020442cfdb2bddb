"""A restricted unpickler for the authors' Lightning checkpoint: tensors and plain data only.

The checkpoint is a pickle. :func:`torch_load_restricted` admits only tensor rebuilding, plain
containers and inert stand-ins for OmegaConf/Lightning classes; nothing in the file can import
a module or run code. :func:`to_plain` turns the stand-ins into dicts and lists.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import pickle
import types
import typing
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from diffsep.errors import (
    CheckpointError,
    ModelNotFoundError,
    first_lines,
)


class _InertStub:
    """Stand-in for a class the loader must never import (OmegaConf, Lightning, ...).

    It only records what the pickle hands it: constructor arguments, ``BUILD`` state and
    items/elements set on it. It has no behaviour, so a file cannot do anything through it.
    """

    qualified_name: typing.ClassVar[str] = "?"
    args: tuple[Any, ...]
    state: Any
    items: dict[Any, Any]
    elements: list[Any]

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


def _identity(value: Any) -> Any:
    return value


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
            table[f"{module}.{name}"] = functools.partial(_identity, cls)
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


def torch_load_restricted(path: Path) -> Any:
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
        raise CheckpointError(f"{path}: cannot read checkpoint ({first_lines(err)})") from None


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


def to_plain(obj: Any, where: str, depth: int = 0) -> Any:
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
                return to_plain(state["_content"], where, depth + 1)
            if "_val" in state:
                return to_plain(state["_val"], where, depth + 1)
        if obj.items and not obj.elements:
            return {_plain_key(k): to_plain(v, where, depth + 1) for k, v in obj.items.items()}
        if obj.elements and not obj.items:
            return [to_plain(v, where, depth + 1) for v in obj.elements]
        if len(obj.args) == 1 and state is None:  # e.g. an Enum rebuilt from its value
            return to_plain(obj.args[0], where, depth + 1)
        raise CheckpointError(f"{where}: cannot interpret a pickled {obj.qualified_name} object")
    if isinstance(obj, type) and issubclass(obj, _InertStub):
        return obj.qualified_name
    if isinstance(obj, Mapping):
        return {_plain_key(k): to_plain(v, where, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, where, depth + 1) for v in obj]
    return obj


def _plain_key(key: Any) -> Any:
    if isinstance(key, type) and issubclass(key, _InertStub):
        return key.qualified_name
    if isinstance(key, _InertStub):
        return repr(key)
    return key

