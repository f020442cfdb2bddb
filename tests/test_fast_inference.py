"""Fast inference from the outside: --sampler/--tau/--grid-rho, --precision, --compile, NFE
reporting, their bad-input errors, and a CUDA smoke test (skipped without a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, speech_like, write_wav
from typer.testing import CliRunner

import diffsep.model as model_module
from diffsep.api import separate
from diffsep.cli import app
from diffsep.errors import ConfigError
from diffsep.model import sample_windows
from diffsep.sampling import SAMPLERS, network_calls
from diffsep.separator import separate_array
from diffsep.settings import run_settings

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def mixture(tmp_path: Path) -> Path:
    return write_wav(tmp_path / "in" / "a.wav",
                     speech_like(1.0, 8000, 1) + speech_like(1.0, 8000, 2, 220), 8000)


@pytest.mark.slow  # a full model run or a large network: over a second
def test_sampler_options_reach_the_run_and_the_summary(mixture, tmp_path, small_model_dirs,
                                                       small_sep_model):
    out = tmp_path / "out"
    result = invoke("separate", mixture, "-o", out, "--model", small_model_dirs["sep"],
                    "--sampler", "heun", "--steps", 3, "--tau", 0.6, "--grid-rho", 2,
                    "--seed", 4, "--float32", "--json", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    sampler = summary["sampler"]
    assert (sampler["method"], sampler["steps"], sampler["tau"], sampler["grid_rho"]) == (
        "heun", 3, 0.6, 2.0)
    assert summary["network_calls_per_window"] == 1 + 2 * 2 + 1
    assert summary["precision"] == "fp32" and summary["compile"] is False

    written, _ = sf.read(out / "s1" / "a.wav")
    audio, _ = sf.read(mixture)
    expected = separate(small_sep_model, audio.astype(np.float32), 8000, sampler="heun",
                        steps=3, tau=0.6, grid_rho=2.0, seed=4)
    np.testing.assert_allclose(written, expected[0], atol=1e-6)
    default = separate(small_sep_model, audio.astype(np.float32), 8000, steps=3, seed=4)
    assert not np.allclose(default[0], expected[0], atol=1e-3)  # the options changed the result


def test_header_names_the_sampler_and_its_network_calls(mixture, tmp_path, small_model_dirs):
    result = invoke("separate", mixture, "-o", tmp_path / "out", "--model",
                    small_model_dirs["sep"], "--sampler", "ddim", "--steps", 4, "--t-eps", 0.2,
                    "--json")
    assert result.exit_code == 0, result.output
    assert "sampler ddim, 4 steps = 4 network calls per window, fp32" in result.stderr
    assert json.loads(result.stdout)["sampler"]["t_eps"] == 0.2  # --t-eps reaches the run
    one = invoke("separate", mixture, "-o", tmp_path / "one", "--model", small_model_dirs["sep"],
                 "--sampler", "ddim", "--steps", 1)
    assert one.exit_code == 0, one.output
    assert "sampler ddim, 1 step = 1 network call per window, fp32" in one.stderr
    assert "made for one network call" not in result.stderr  # a score model: no caution


def test_more_steps_on_a_one_call_source_predictor_are_warned_about(mixture, tmp_path):
    # the bundled separation model predicts the sources and is made for its one-call estimate
    many = invoke("separate", mixture, "-o", tmp_path / "many", "--steps", 3)
    assert many.exit_code == 0, many.output
    assert ("warning: this model predicts the sources and is made for one network call per "
            "window: with 3 calls (ddim, 3 steps) it scores lower") in many.stderr
    assert "its default is ddim with 1 step" in many.stderr
    default = invoke("separate", mixture, "-o", tmp_path / "default")
    assert default.exit_code == 0 and "warning" not in default.stderr
    quiet = invoke("separate", mixture, "-o", tmp_path / "quiet", "--steps", 3, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


class Recording:
    """A Reporter that keeps the batch and network-call events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def run_started(self, files):
        pass

    def file_skipped(self, result):
        pass

    def file_started(self, job):
        pass

    def file_finished(self, result):
        pass

    def batch_started(self, windows, calls):
        self.events.append(("batch", windows, calls))

    def sampler_step(self, call, calls):
        self.events.append(("call", call, calls))

    def batch_finished(self, windows):
        pass


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_progress_counts_network_calls(small_sep_model, method):
    settings = run_settings(small_sep_model, sampler=method, steps=3, seed=0)
    reporter = Recording()
    separate_array(small_sep_model, speech_like(0.5, 8000, 3), 8000, settings, reporter)
    nfe = network_calls(settings.sampler)
    assert reporter.events == [("batch", 1, nfe)] + [("call", i, nfe) for i in range(nfe)]


# -- precision -------------------------------------------------------------------------------


@pytest.mark.slow  # bf16 convolutions are emulated on CPUs without bf16 kernels
def test_bf16_backbone_keeps_float32_around_it(small_sep_model, monkeypatch):
    """bf16 autocast covers the backbone only: float32 out, close to fp32, not identical."""
    expected = torch.load(FIXTURES / "expected-small-sep.pt", weights_only=True)
    mix = expected["full.wav"][None][..., :4000]
    mixes = torch.cat([mix, 0 * mix, 0.5 * mix])
    full = sample_windows(small_sep_model, mixes, [1, 2, 3],
                          run_settings(small_sep_model, steps=2).sampler)
    monkeypatch.setattr(model_module, "cpu_has_bf16", lambda: True)
    half = sample_windows(small_sep_model, mixes, [1, 2, 3],
                          run_settings(small_sep_model, steps=2).sampler, precision="bf16")
    assert small_sep_model.network.backbone_dtype is None  # restored after the call
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert torch.equal(half[1], torch.zeros_like(half[1]))
    err = ((half - full).norm() / full.norm()).item()
    assert 0 < err < 0.05, err


def test_bf16_is_refused_on_a_cpu_without_bf16_kernels(small_sep_model, monkeypatch):
    monkeypatch.setattr(model_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="precision: bf16 .* accepted here: fp32$"):
        run_settings(small_sep_model, precision="bf16")
    monkeypatch.setattr(model_module, "cpu_has_bf16", lambda: True)
    assert run_settings(small_sep_model, precision="bf16").precision == "bf16"


# -- bad input on the command line: one line, non-zero exit, nothing written ------------------


@pytest.mark.parametrize(
    "args,words",
    [
        (["--sampler", "rk4"], ["sampler", "rk4", "pc, euler, heun, ddim"]),
        (["--tau", "1.5"], ["tau", "(0.03, 1.0)"]),
        (["--tau", "0.01"], ["tau", "(0.03, 1.0)"]),
        (["--t-eps", "1.2"], ["t_eps", "(0, 1.0)"]),
        (["--t-eps", "0.4", "--tau", "0.3"], ["tau", "(0.4, 1.0)"]),
        (["--sampler", "heun", "--grid-rho", "0"], ["grid rho", "positive"]),
        (["--grid-rho", "3"], ["grid rho", "'pc'", "use 1"]),
        (["--sampler", "euler", "--steps", "1", "--no-denoise"], ["steps", ">= 2"]),
        (["--precision", "fp64"], ["precision", "fp32, bf16, fp16"]),
        (["--precision", "fp16"], ["precision", "fp16", "CUDA", "accepted here: fp32"]),
    ],
)
def test_bad_fast_inference_options(mixture, tmp_path, small_model_dirs, args, words):
    out = tmp_path / "out"
    result = invoke("separate", mixture, "-o", out, "--model", small_model_dirs["sep"], *args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not out.exists()


@pytest.mark.slow  # a full model run or a large network: over a second
def test_compile_without_a_compiler_is_a_clear_error(mixture, tmp_path, small_model_dirs,
                                                     monkeypatch):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/g++"))
    out = tmp_path / "out"
    result = invoke("separate", mixture, "-o", out, "--model", small_model_dirs["sep"],
                    "--compile")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--compile" in lines[0] and "C++ compiler" in lines[0], lines
    assert not out.exists()


def test_api_rejects_bad_options_before_running(small_sep_model):
    audio = speech_like(0.5, 8000, 1)
    with pytest.raises(ConfigError, match="sampler"):
        separate(small_sep_model, audio, 8000, sampler="nope")
    with pytest.raises(ConfigError, match="tau"):
        separate(small_sep_model, audio, 8000, tau=0.0)


# -- GPU -------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["sep", "enh"])
def test_cuda_reproduces_the_reference_run(name):
    """Fixture (e) on CUDA: the reference sampler with the reference's (CPU-drawn) noise."""
    from test_reference_run import ReferenceNoise

    from diffsep.checkpoint import read_authors_checkpoint
    from diffsep.nn.score_model import ScoreModel
    from diffsep.processing import normalize_mixture, rescale_to_mixture
    from diffsep.sampling import pc_sample
    from diffsep.sde import make_sde

    torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    ref = torch.load(FIXTURES / f"expected-small-{name}.pt", weights_only=True)
    config, state_dict = read_authors_checkpoint(FIXTURES / f"small-{name}.ckpt")
    network = ScoreModel(config)
    network.load_state_dict(state_dict)
    network = network.cuda().eval()
    noise = ReferenceNoise(int(ref["full.seed"]), channel_last_after_first=(name == "enh"))
    mix = ref["full.wav"][None].cuda()
    mix_norm, _, _ = normalize_mixture(mix)
    with torch.no_grad():
        raw = pc_sample(make_sde(config.sde, config.num_sources), network, mix_norm,
                        noise_fn=lambda like: noise(like.cpu()).cuda())
    sep = rescale_to_mixture(mix, raw).cpu()
    err = ((sep - ref["full.sep"]).abs().max() / ref["full.sep"].abs().max()).item()
    assert err < 1e-3, err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_separates_in_every_precision(small_model_dirs):
    from diffsep.loading import load_model

    expected = torch.load(FIXTURES / "expected-small-sep.pt", weights_only=True)
    wav = expected["full.wav"][0].numpy()
    gpu = load_model(str(small_model_dirs["sep"]), "separation", "cuda")
    full = separate(gpu, wav, 8000, seed=1, batch_size=4, sampler="heun", steps=4)
    for precision in ("bf16", "fp16"):
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            continue
        half = separate(gpu, wav, 8000, seed=1, batch_size=4, sampler="heun", steps=4,
                        precision=precision)
        assert half.dtype == np.float32 and np.isfinite(half).all()
        assert np.abs(half - full).max() < 0.1 * np.abs(full).max()


def test_lookahead_gives_the_same_files(tmp_path, small_sep_model):
    """Queueing batch k + 1 before fetching batch k (the CUDA pipeline) changes nothing."""
    from diffsep.files import open_file_job
    from diffsep.separator import run_jobs

    folder = tmp_path / "in"
    paths = [write_wav(folder / f"{i}.wav", speech_like(length, 8000, i), 8000)
             for i, length in enumerate((0.7, 1.6, 0.4))]
    settings = run_settings(small_sep_model, sampler="ddim", steps=2, seed=3, batch_size=2,
                            segment=0.5)
    from diffsep.settings import output_settings

    outputs = {}
    for ahead in (False, True):
        jobs = []
        for path in paths:
            out = (tmp_path / str(ahead) / f"{path.stem}-1.wav",
                   tmp_path / str(ahead) / f"{path.stem}-2.wav")
            jobs.append(open_file_job(small_sep_model, path, out, settings, output_settings()))
        results = run_jobs(small_sep_model, iter(jobs), settings, lookahead=ahead)
        assert [r.status for r in results] == ["ok"] * 3
        outputs[ahead] = [sf.read(p)[0] for r in results for p in r.outputs]
    for a, b in zip(outputs[False], outputs[True], strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_api_warns_too_when_a_one_call_model_gets_more_steps():
    import warnings

    import diffsep

    model = diffsep.load_model()  # the bundled separation model: a one-call source predictor
    audio = (speech_like(0.5, 8000, 1) + speech_like(0.5, 8000, 2, 220)).astype(np.float32)
    with pytest.warns(UserWarning, match="made for one network call per window: with 2 calls"):
        separate(model, audio, 8000, steps=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        separate(model, audio, 8000, seed=0)  # its default: no warning
