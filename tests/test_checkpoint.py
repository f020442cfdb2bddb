"""Model files: the authors' Lightning checkpoint (restricted unpickler, EMA) and our Hub-layout format."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from diffsep.checkpoint import (
    MissingEMAWarning,
    convert_authors_checkpoint,
    load_model_files,
    model_card,
    model_files,
    read_authors_checkpoint,
    save_model_file,
    save_model_folder,
)
from diffsep.config import BackboneConfig, ModelConfig, SDEConfig
from diffsep.errors import CheckpointError, ModelNotFoundError, OutputError

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"
SEP = FIXTURES / "small-sep.ckpt"
ENH = FIXTURES / "small-enh.ckpt"
BUFFERS = ("score_model.stft.window", "score_model.stft_inv.window")


# ---------------------------------------------------------------------------------------------
# An independent reading of the fixtures (a plain, trusting unpickler: only for our own files)
# ---------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _TrustingUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("omegaconf"):
            return _Recorder
        return super().find_class("builtins" if module == "__builtin__" else module, name)


def _trusting_load(path: Path) -> dict:
    module = types.SimpleNamespace(Unpickler=_TrustingUnpickler, __name__="trusting_pickle")
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)


@pytest.fixture(scope="module")
def raw_sep() -> dict:
    return _trusting_load(SEP)


# ---------------------------------------------------------------------------------------------
# read_authors_checkpoint on the reference fixtures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "task", "kind", "rate"),
    [(SEP, "separation", "mix", 8000), (ENH, "enhancement", "prior_mix", 16000)],
)
def test_fixture_config(path, task, kind, rate):
    config, _ = read_authors_checkpoint(path)
    assert config.task == task
    assert config.sample_rate == rate
    assert config.num_sources == 2
    assert config.sde == SDEConfig(kind=kind, gamma=2.0, sigma_min=0.05, sigma_max=0.5, avg_len=510)
    assert config.backbone == BackboneConfig(nf=4)  # only nf is stored; the rest are defaults
    assert (config.stft.n_fft, config.stft.hop_length) == (510, 128)
    assert config.stft.spec_factor == 0.15  # the experiment's value, not model/default.yaml's 0.33
    assert config.stft.spec_abs_exponent == 0.5
    assert (config.sampler.steps, config.sampler.snr, config.sampler.corrector_steps) == (
        30,
        0.5,
        1,
    )
    assert config.sampler.t_eps == 0.03


@pytest.mark.parametrize("path", [SEP, ENH])
def test_fixture_weights_are_the_ema_shadow(path):
    raw = _trusting_load(path)
    state_dict, shadow = raw["state_dict"], raw["ema"]["shadow_params"]
    _, weights = read_authors_checkpoint(path)

    assert list(weights) == [k.removeprefix("score_model.") for k in state_dict]
    param_keys = [k for k in state_dict if k not in BUFFERS]
    assert len(param_keys) == len(shadow) == 647
    differing = []
    for key, ema_tensor in zip(param_keys, shadow):
        ours = weights[key.removeprefix("score_model.")]
        assert ours.dtype == torch.float32
        assert torch.equal(ours, ema_tensor), key
        if not torch.equal(ema_tensor, state_dict[key]):
            differing.append(key)
    assert len(differing) == 646
    assert "score_model.backbone.all_modules.0.W" not in differing
    for key in BUFFERS:
        assert torch.equal(weights[key.removeprefix("score_model.")], state_dict[key])
        assert torch.equal(state_dict[key], torch.hann_window(510, periodic=True))


def test_fixture_loads_without_omegaconf_or_lightning_imported():
    before = set(sys.modules)
    read_authors_checkpoint(SEP)
    imported = {m.split(".")[0] for m in set(sys.modules) - before}
    assert not imported & {"omegaconf", "pytorch_lightning", "lightning", "hydra"}


def test_returned_weights_do_not_alias_each_other():
    _, weights = read_authors_checkpoint(SEP)
    pointers = [t.untyped_storage().data_ptr() for t in weights.values() if t.numel()]
    assert len(set(pointers)) == len(pointers)


# ---------------------------------------------------------------------------------------------
# Synthetic checkpoints in the authors' layout
# ---------------------------------------------------------------------------------------------


def _reference_like_config() -> dict:
    return {
        "seed": 1,
        "path": {"datasets": {"wsj0_mix": "data/wsj0_mix"}},
        "datamodule": {"train": {"dataset": {"path": "${path.datasets.wsj0_mix}/train"}}},
        "model": {
            "n_speakers": 2,
            "fs": 8000,
            "t_eps": 0.03,
            "score_model": {
                "_target_": "models.score_models.ScoreModelNCSNpp",
                "num_sources": "${model.n_speakers}",
                "stft_args": {
                    "n_fft": 510,
                    "hop_length": 128,
                    "center": True,
                    "pad_mode": "constant",
                },
                "backbone_args": {"_target_": "models.ncsnpp.NCSNpp", "nf": 4},
                "transform": "exponent",
                "spec_abs_exponent": 0.5,
                "spec_factor": 0.15,
                "spec_trans_learnable": False,
            },
            "sde": {
                "_target_": "sdes.sdes.MixSDE",
                "ndim": "${model.n_speakers}",
                "d_lambda": 2.0,
                "sigma_min": 0.05,
                "sigma_max": 0.5,
                "N": 30,
            },
            "sampler": {"N": 30, "snr": 0.5, "corrector_steps": 1},
        },
    }


_DELETE = object()


def _edit(config: dict, **changes) -> dict:
    config = copy.deepcopy(config)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return config


def _synthetic_state() -> tuple[OrderedDict, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    state = OrderedDict(
        [
            ("score_model.backbone.output_layer.weight", torch.randn(4, 6, 1, 1, generator=gen)),
            ("score_model.backbone.output_layer.bias", torch.randn(4, generator=gen)),
            ("score_model.backbone.all_modules.0.W", torch.randn(2, generator=gen)),
            ("score_model.stft.window", torch.hann_window(8)),
            ("score_model.stft_inv.window", torch.hann_window(8)),
        ]
    )
    shadow = [t + 1.0 for k, t in state.items() if k not in BUFFERS]
    return state, shadow


def _write_checkpoint(path: Path, config: dict | None = None, *, ema="shadow", extra=None) -> Path:
    state, shadow = _synthetic_state()
    data = {
        "epoch": 3,
        "global_step": 10,
        "pytorch-lightning_version": "1.6.5",
        "state_dict": state,
        "hparams_name": "kwargs",
        "hyper_parameters": {"config": config if config is not None else _reference_like_config()},
    }
    if ema == "shadow":
        data["ema"] = {
            "decay": 0.999,
            "num_updates": 2,
            "shadow_params": shadow,
            "collected_params": None,
        }
    elif ema is not None:
        data["ema"] = ema
    data.update(extra or {})
    torch.save(data, path)
    return path


def test_synthetic_checkpoint_resolves_interpolations(tmp_path):
    config, weights = read_authors_checkpoint(_write_checkpoint(tmp_path / "a.ckpt"))
    assert config.num_sources == 2 and config.backbone.nf == 4
    state, shadow = _synthetic_state()
    assert torch.equal(weights["backbone.output_layer.bias"], shadow[1])
    assert torch.equal(weights["stft.window"], state["score_model.stft.window"])


def test_interpolation_into_num_sources_is_followed(tmp_path):
    config = _edit(
        _reference_like_config(), model__n_speakers="${model.fs_alias}", model__fs_alias=3
    )
    config = _edit(config, model__sde__ndim=3)
    loaded, _ = read_authors_checkpoint(_write_checkpoint(tmp_path / "a.ckpt", config))
    assert loaded.num_sources == 3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model__score_model__transform": "log"}, "transform 'log'"),
        ({"model__score_model___target_": "models.score_models.Other"}, "unsupported score model"),
        ({"model__sde___target_": "sdes.sdes.OUVESDE"}, "unsupported SDE"),
        ({"model__score_model__backbone_args___target_": "models.tcn.TCN"}, "unsupported backbone"),
        ({"model__score_model__backbone_args__resblock_type": "ddpm"}, "resblock_type"),
        ({"model__score_model__stft_args__pad_mode": "reflect"}, "STFT padding"),
        ({"model__score_model__stft_args__window_fn": "hamming"}, "window_fn"),
        ({"model__score_model__spec_trans_learnable": True}, "learnable"),
        ({"model__sde__ndim": 3}, "sde.ndim=3"),
        ({"model__sde__d_lambda": _DELETE}, "model.sde.d_lambda"),
        ({"model__sampler__N": "thirty"}, "model.sampler.N"),
        ({"model__n_speakers": "${model.nowhere}"}, "model.nowhere"),
        ({"model__n_speakers": "${model.n_speakers}"}, "cycle"),
        ({"model__fs": "${now:%Y}"}, "model.fs"),
    ],
)
def test_unsupported_or_broken_configs_are_rejected(tmp_path, changes, message):
    path = _write_checkpoint(tmp_path / "a.ckpt", _edit(_reference_like_config(), **changes))
    with pytest.raises(CheckpointError, match="a.ckpt") as err:
        read_authors_checkpoint(path)
    assert message in str(err.value)


def test_unused_settings_are_ignored_like_the_reference(tmp_path):
    config = _edit(
        _reference_like_config(),
        model__score_model__backbone_args__init_scale=0.0,
        model__score_model__backbone_args__whatever=1,  # NCSN++ swallows **unused_kwargs
        model__sampler__schedule="linear",  # separate.py never passes it on
        model__optimizer={"_target_": "torch.optim.Adam", "lr": "${model.fs}"},
    )
    loaded, _ = read_authors_checkpoint(_write_checkpoint(tmp_path / "a.ckpt", config))
    assert loaded.backbone == BackboneConfig(nf=4)


def test_backbone_arguments_present_in_the_config_are_used(tmp_path):
    config = _edit(
        _reference_like_config(),
        model__score_model__backbone_args__ch_mult=[1, 2, 2],
        model__score_model__backbone_args__num_res_blocks=1,
        model__score_model__backbone_args__fourier_scale=8,
    )
    loaded, _ = read_authors_checkpoint(_write_checkpoint(tmp_path / "a.ckpt", config))
    assert loaded.backbone == BackboneConfig(
        nf=4, ch_mult=(1, 2, 2), num_res_blocks=1, fourier_scale=8.0
    )


def test_missing_ema_warns_and_uses_state_dict(tmp_path):
    path = _write_checkpoint(tmp_path / "a.ckpt", ema=None)
    with pytest.warns(MissingEMAWarning, match="no EMA"):
        _, weights = read_authors_checkpoint(path)
    state, _ = _synthetic_state()
    for key, tensor in state.items():
        assert torch.equal(weights[key.removeprefix("score_model.")], tensor)


def test_ema_count_mismatch_is_an_error(tmp_path):
    _, shadow = _synthetic_state()
    path = _write_checkpoint(tmp_path / "a.ckpt", ema={"shadow_params": shadow[:-1]})
    with pytest.raises(CheckpointError, match="2 shadow tensors for 3 parameters"):
        read_authors_checkpoint(path)


def test_ema_shape_mismatch_is_an_error(tmp_path):
    _, shadow = _synthetic_state()
    shadow[1] = torch.zeros(5)
    path = _write_checkpoint(tmp_path / "a.ckpt", ema={"shadow_params": shadow})
    with pytest.raises(CheckpointError, match="output_layer.bias' has shape"):
        read_authors_checkpoint(path)


def test_state_dict_entries_outside_the_score_model_are_an_error(tmp_path):
    path = tmp_path / "a.ckpt"
    _write_checkpoint(path)
    data = _trusting_load(path)
    data["state_dict"]["loss.weight"] = torch.ones(1)
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="outside the score model"):
        read_authors_checkpoint(path)


def test_harmless_lightning_and_numpy_objects_in_other_sections_load(tmp_path, monkeypatch):
    """Lightning 1.x classes and numpy scalars become inert data; their modules are never imported."""
    import numpy as np

    package = types.ModuleType("pytorch_lightning")
    fake = types.ModuleType("pytorch_lightning.fake_parsing")
    package.fake_parsing = fake

    class AttributeDict(dict):
        pass

    class RunningStage:  # pickled by reduce, like an Enum member
        def __reduce__(self):
            return (type(self), ("train",))

        def __new__(cls, *args):
            return object.__new__(cls)

    for cls in (AttributeDict, RunningStage):
        cls.__module__, cls.__qualname__ = fake.__name__, cls.__name__
        setattr(fake, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    callbacks = {
        AttributeDict: AttributeDict(best_model_score=torch.tensor(1.5), best_model_path="x.ckpt"),
        "stage": RunningStage(),
        "score": np.float64(2.5),
        "scores": np.array([1.0, 2.0]),
        "raw": b"\x00\xff",
    }
    path = _write_checkpoint(tmp_path / "a.ckpt", extra={"callbacks": callbacks})
    monkeypatch.delitem(sys.modules, fake.__name__)
    monkeypatch.delitem(sys.modules, package.__name__)

    marker_before = set(sys.modules)
    config, weights = read_authors_checkpoint(path)
    assert config.backbone.nf == 4 and len(weights) == 5
    assert "pytorch_lightning" not in {m.split(".")[0] for m in set(sys.modules) - marker_before}
    assert "pytorch_lightning" not in sys.modules


# ---------------------------------------------------------------------------------------------
# Malicious and broken files
# ---------------------------------------------------------------------------------------------


def _zip_with_pickle(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    return path


def _binunicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


class _SystemCall:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _marker_command(marker: Path) -> str:
    return f"{sys.executable} -c \"open(r'{marker}', 'w').write('pwned')\""


def test_os_system_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = _write_checkpoint(
        tmp_path / "evil.ckpt", extra={"callbacks": {"x": _SystemCall(_marker_command(marker))}}
    )
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load '(posix|nt)\.system'"):
        read_authors_checkpoint(path)
    assert not marker.exists()
    # the payload is real: a plain unpickler runs it
    _trusting_load(path)
    assert marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("__builtin__", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("functools", "partial"),
        ("subprocess", "Popen"),
        ("torch", "load"),
        ("torch.hub", "load"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("collections", "OrderedDict.fromkeys"),
        ("numpy", "load"),
        ("pytorch_lightning.x", "a.b"),
    ],
)
def test_code_execution_globals_are_refused(tmp_path, module, name):
    marker = tmp_path / "marker"
    code = f"open(r'{marker}', 'w').write('pwned')"
    global_op = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    payload = b"\x80\x02" + global_op + _binunicode(code) + b"\x85R."
    path = _zip_with_pickle(tmp_path / "evil.ckpt", payload)
    with pytest.raises(CheckpointError, match="evil.ckpt: refused to load") as err:
        read_authors_checkpoint(path)
    assert f"'{module}.{name}'" in str(err.value)
    assert not marker.exists()
    if name in ("eval", "exec"):  # sanity: the payload is real and runs when trusted
        pickle.loads(payload)
        assert marker.exists()


def test_stub_classes_are_inert_when_called(tmp_path):
    """A pickle may *call* an omegaconf/lightning name: it only builds a stub, nothing runs."""
    marker = tmp_path / "marker"
    code = f"open(r'{marker}', 'w').write('pwned')"
    payload = (
        b"\x80\x02}q\x00(X\x0b\x00\x00\x00hyper_stuffq\x01"
        + b"comegaconf\nOmegaConf\n"
        + _binunicode(code)
        + b"\x85Ru."
    )
    path = _zip_with_pickle(tmp_path / "odd.ckpt", payload)
    with pytest.raises(CheckpointError, match="no state_dict"):
        read_authors_checkpoint(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_an_error(tmp_path):
    data = SEP.read_bytes()
    for size in (0, 100, len(data) // 2, len(data) - 30):
        path = tmp_path / f"cut{size}.ckpt"
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=f"cut{size}.ckpt"):
            read_authors_checkpoint(path)


def test_corrupt_pickle_inside_a_valid_zip_is_an_error(tmp_path):
    path = _zip_with_pickle(tmp_path / "bad.ckpt", b"\x80\x02}q\x00(X\x01\x00")
    with pytest.raises(CheckpointError, match="bad.ckpt: cannot read checkpoint"):
        read_authors_checkpoint(path)


def test_flipped_bit_in_a_tensor_record_is_an_error(tmp_path):
    """torch.load does not check the zip CRCs; a damaged download must not load silently."""
    data = bytearray(SEP.read_bytes())
    with zipfile.ZipFile(SEP) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("/data/5")))
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + 3] ^= 0x10
    path = tmp_path / "flip.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match=r"flip.ckpt: corrupt checkpoint \(checksum mismatch in .*data/5\)"
    ):
        read_authors_checkpoint(path)


def test_non_checkpoint_files_are_errors(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch zip checkpoint"):
        read_authors_checkpoint(text)
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": 1}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy"):
        read_authors_checkpoint(legacy)
    with pytest.raises(ModelNotFoundError, match="no such checkpoint"):
        read_authors_checkpoint(tmp_path / "absent.ckpt")
    plain = tmp_path / "list.pt"
    torch.save([torch.ones(1)], plain)
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        read_authors_checkpoint(plain)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, files remain
def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_authors_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Our format
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sep_model() -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    return read_authors_checkpoint(SEP)


def test_folder_round_trip_is_exact(tmp_path, sep_model):
    config, weights = sep_model
    folder = save_model_folder(tmp_path / "m", config, weights, card="# card\n")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    data = json.loads((folder / "config.json").read_text())
    assert data["diffsep_version"] and data["backbone"]["nf"] == 4
    assert (folder / "README.md").read_text() == "# card\n"
    loaded_config, loaded = load_model_files(folder)
    assert loaded_config == config
    assert set(loaded) == set(weights)
    for key, tensor in weights.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], tensor)
    # the same folder through each of its files
    for entry in (folder / "config.json", folder / "model.safetensors"):
        assert load_model_files(entry)[0] == config


def test_default_card_is_a_hub_model_card(tmp_path, sep_model):
    config, weights = sep_model
    folder = save_model_folder(tmp_path / "m", config, weights)
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: diffsep" in front and "license: mit" in front
    assert "speech-separation" in front
    assert "8000 Hz" in body
    assert f"- sampler: pc, {config.sampler.steps} steps = {2 * config.sampler.steps} network " \
        "calls per window, snr 0.5, 1 corrector step(s)" in body
    few = dataclasses.replace(config, parameterisation="data_skip", sampler=dataclasses.replace(
        config.sampler, method="ddim", steps=3, tau=0.5))
    body = model_card(few)
    assert "- sampler: ddim from tau 0.5, 3 steps = 4 network calls per window, t_eps" in body
    assert "snr" not in body and "output `data_skip`" in body


def test_float16_weights_load_as_float32(tmp_path, sep_model):
    config, weights = sep_model
    folder = save_model_folder(tmp_path / "m", config, weights, dtype=torch.float16)
    full = save_model_folder(tmp_path / "f32", config, weights)
    assert (folder / "model.safetensors").stat().st_size < 0.6 * (
        full / "model.safetensors"
    ).stat().st_size
    _, loaded = load_model_files(folder)
    for key, tensor in weights.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], tensor.half().float())


def test_single_file_carries_its_config(tmp_path, sep_model):
    config, weights = sep_model
    path = save_model_file(tmp_path / "sep.safetensors", config, weights)
    loaded_config, loaded = load_model_files(path)
    assert loaded_config == config
    assert torch.equal(loaded["backbone.all_modules.0.W"], weights["backbone.all_modules.0.W"])
    with pytest.raises(OutputError, match="already exists"):
        save_model_file(path, config, weights)
    save_model_file(path, config, weights, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["sep.safetensors"]


def test_existing_folder_is_kept_unless_overwrite(tmp_path, sep_model):
    config, weights = sep_model
    folder = save_model_folder(tmp_path / "m", config, weights, card="old\n")
    with pytest.raises(OutputError, match="already exists"):
        save_model_folder(folder, config, weights, card="new\n")
    assert (folder / "README.md").read_text() == "old\n"
    save_model_folder(folder, config, weights, card="new\n", overwrite=True)
    assert (folder / "README.md").read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no leftovers


def test_failed_write_leaves_nothing_half_written(tmp_path, sep_model, monkeypatch):
    import safetensors.torch

    config, weights = sep_model

    def disk_full(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        save_model_folder(tmp_path / "m", config, weights)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    save_model_folder(tmp_path / "m", config, weights, card="old\n")
    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OutputError):
        save_model_folder(tmp_path / "m", config, weights, card="new\n", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    assert (tmp_path / "m" / "README.md").read_text() == "old\n"


def test_non_tensor_state_is_refused(tmp_path, sep_model):
    config, _ = sep_model
    with pytest.raises(CheckpointError, match="not a named tensor"):
        save_model_folder(tmp_path / "m", config, {"a": [1.0]})
    assert not (tmp_path / "m").exists()


@pytest.mark.slow  # a full model run or a large network: over a second
def test_load_dispatches_authors_checkpoints(tmp_path, sep_model):
    config, weights = sep_model
    loaded_config, loaded = load_model_files(SEP)
    assert loaded_config == config
    assert torch.equal(
        loaded["backbone.output_layer.weight"], weights["backbone.output_layer.weight"]
    )
    folder = tmp_path / "download"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(SEP.read_bytes())
    assert load_model_files(folder)[0] == config
    (folder / "other.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="several checkpoints"):
        load_model_files(folder)


def test_convert_writes_our_format_with_provenance(tmp_path, sep_model):
    config, weights = sep_model
    folder = convert_authors_checkpoint(
        SEP, tmp_path / "converted", origin="hf://fakufaku/diffsep/checkpoint.pt"
    )
    card = (folder / "README.md").read_text()
    assert "fakufaku/diffsep/checkpoint.pt" in card and "EMA" in card
    assert model_files._sha256(SEP) in card
    loaded_config, loaded = load_model_files(folder)
    assert loaded_config == config
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_convert_resaves_our_own_models_keeping_the_card(tmp_path, sep_model):
    config, weights = sep_model
    full = save_model_folder(tmp_path / "full", config, weights, card="# my model\n")
    half = convert_authors_checkpoint(full / "config.json", tmp_path / "half", dtype=torch.float16)
    assert (half / "README.md").read_text() == "# my model\n"
    loaded_config, loaded = load_model_files(half)
    assert loaded_config == config
    assert all(torch.equal(loaded[k], weights[k].half().float()) for k in weights)
    with pytest.raises(ModelNotFoundError):
        convert_authors_checkpoint(tmp_path / "absent", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        ("missing", ModelNotFoundError, "no such model"),
        ("no_weights", CheckpointError, "lacks model.safetensors"),
        ("no_config", CheckpointError, "lacks config.json"),
        ("sharded", CheckpointError, "sharded"),
        ("bad_json", CheckpointError, "invalid JSON"),
        ("unknown_key", CheckpointError, "unknown key"),
        ("newer", CheckpointError, "newer than this diffsep"),
        ("corrupt_weights", CheckpointError, "cannot read safetensors"),
        ("empty_folder", CheckpointError, "not a model folder"),
        ("unknown_file", CheckpointError, "unknown model file type"),
        ("bare_safetensors", CheckpointError, "no model config"),
        ("lfs_pointer", CheckpointError, "Git LFS pointer"),
    ],
)
def test_broken_model_files(tmp_path, sep_model, setup, error, message):
    config, weights = sep_model
    folder = save_model_folder(tmp_path / "m", config, weights)
    target: Path = folder
    data = json.loads((folder / "config.json").read_text())
    if setup == "missing":
        target = tmp_path / "nothing"
    elif setup == "no_weights":
        (folder / "model.safetensors").unlink()
    elif setup == "no_config":
        (folder / "config.json").unlink()
    elif setup == "sharded":
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors.index.json").write_text("{}")
    elif setup == "bad_json":
        (folder / "config.json").write_text("{not json")
    elif setup == "unknown_key":
        (folder / "config.json").write_text(json.dumps({**data, "colour": "red"}))
    elif setup == "newer":
        (folder / "config.json").write_text(json.dumps({**data, "format_version": 99}))
    elif setup == "corrupt_weights":
        (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    elif setup == "empty_folder":
        target = tmp_path / "empty"
        target.mkdir()
    elif setup == "unknown_file":
        target = tmp_path / "model.bin"
        target.write_text("x")
    elif setup == "bare_safetensors":
        from safetensors.torch import save_file

        target = tmp_path / "bare" / "w.safetensors"
        target.parent.mkdir()
        save_file({"a": torch.ones(1)}, str(target))
    elif setup == "lfs_pointer":
        (folder / "model.safetensors").write_text(
            "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 280000\n"
        )
    with pytest.raises(error, match=message) as err:
        load_model_files(target)
    assert str(target.name) in str(err.value) or setup == "empty_folder"


def test_saved_model_files_are_readable_by_others(tmp_path):
    from diffsep.checkpoint import convert_authors_checkpoint

    folder = convert_authors_checkpoint(FIXTURES / "small-sep.ckpt", tmp_path / "m")
    for file in folder.iterdir():
        assert file.stat().st_mode & 0o044 == 0o044, file
