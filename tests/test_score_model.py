"""The NCSN++ score network against the authors' reference: layout, numerics, resampling."""

from __future__ import annotations

import collections
import pickle
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err

from diffsep import spectral
from diffsep.checkpoint import read_authors_checkpoint
from diffsep.config import BackboneConfig, ModelConfig, STFTConfig
from diffsep.errors import ConfigError
from diffsep.nn.ncsnpp import NCSNpp
from diffsep.nn.resampling import downsample_2x, fir_kernel_2d, upsample_2x
from diffsep.nn.score_model import ScoreModel

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"
PREFIX = "score_model."
TOL = 1e-4  # max|a - b| <= TOL * max|ref|



def reference_layout(name: str) -> list[tuple[str, list[int], str]]:
    """(key, shape, dtype) of the "state_dict ... in file order" section of full-<name>-keys.txt."""
    text = (FIXTURES / f"full-{name}-keys.txt").read_text()
    section = text.split("## state_dict (key, shape, dtype) in file order\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        rows.append((key, dims, dtype))
    return rows


# ---------------------------------------------------------------- full-size layout


@pytest.fixture(scope="module")
def full_model() -> ScoreModel:
    return ScoreModel(ModelConfig(num_sources=2))


@pytest.mark.slow  # a full model run or a large network: over a second
@pytest.mark.parametrize("name", ["sep", "enh"])
def test_full_size_state_dict_matches_reference_layout(full_model, name):
    expected = reference_layout(name)
    assert len(expected) == 649
    actual = [
        (PREFIX + key, list(value.shape), str(value.dtype).removeprefix("torch."))
        for key, value in full_model.state_dict().items()
    ]
    assert actual == expected


def test_full_size_parameter_counts(full_model):
    params = dict(full_model.named_parameters())
    assert len(params) == 647
    assert sum(p.numel() for p in params.values()) == 65_623_366
    frozen = [k for k, p in params.items() if not p.requires_grad]
    assert frozen == ["backbone.all_modules.0.W"]
    assert sum(p.numel() for p in params.values() if p.requires_grad) == 65_623_238
    # model.parameters() order = state_dict order without the two window buffers (EMA indexing)
    buffers = ["stft.window", "stft_inv.window"]
    assert list(params) == [k for k in full_model.state_dict() if k not in buffers]
    for key in buffers:
        window = full_model.state_dict()[key]
        assert torch.equal(window, torch.hann_window(510, periodic=True))


# ---------------------------------------------------------------- reference numerics (nf=4)


@pytest.fixture(scope="module", params=["sep", "enh"])
def reference_case(request):
    name = request.param
    config, weights = read_authors_checkpoint(FIXTURES / f"small-{name}.ckpt")
    assert config.backbone.nf == 4
    model = ScoreModel(config).eval()
    model.load_state_dict(weights, strict=True)
    expected = torch.load(FIXTURES / f"expected-small-{name}.pt", weights_only=True)
    return name, model, expected


@pytest.mark.parametrize("row", [0, 1, 2], ids=["t=1", "t=t_eps", "t=mixed"])
def test_score_matches_reference_8000_samples(reference_case, row):
    _, model, ref = reference_case
    xt, mix = ref["score.L8000.xt"], ref["score.L8000.mix"]
    with torch.no_grad():
        out = model(xt, ref["score.L8000.t"][row], mix)
    assert out.dtype == torch.float32
    assert rel_err(out, ref["score.L8000.out"][row]) <= TOL


def test_score_matches_reference_unpadded_frames(reference_case):
    _, model, ref = reference_case
    xt, mix = ref["score.L8000.xt"][..., :7777], ref["score.L8000.mix"][..., :7777]
    assert spectral.num_frames(7777) == 64  # no frame padding on this path
    with torch.no_grad():
        out = model(xt, ref["score.L7777.t"][0], mix)
    assert rel_err(out, ref["score.L7777.out"][0]) <= TOL


def test_score_stages_match_reference_debug_case(reference_case):
    _, model, ref = reference_case
    xt, mix = ref["score.L8000.xt"][:1, :, :1000], ref["score.L8000.mix"][:1, :, :1000]
    t = ref["score.dbg.t"]
    with torch.no_grad():
        features = model.encode(xt, mix)
        assert rel_err(features, ref["score.dbg.features"]) <= TOL
        padded = spectral.pad_frames(features, model.config.stft.frame_multiple)
        assert padded.shape[-1] == int(ref["score.dbg.features_padded_frames"])
        assert torch.all(padded[..., features.shape[-1] :] == 0)
        backbone_out = model.run_backbone(features, t)
        assert rel_err(backbone_out, ref["score.dbg.backbone_out"]) <= TOL
        out = model.decode(backbone_out, xt.shape[-1])
        assert rel_err(out, ref["score.dbg.out"]) <= TOL
        assert torch.equal(model(xt, t, mix), out)


def test_batch_items_are_independent(reference_case):
    _, model, ref = reference_case
    xt, mix = ref["score.L8000.xt"][..., :2000], ref["score.L8000.mix"][..., :2000]
    t = torch.tensor([0.7, 0.2])
    with torch.no_grad():
        batched = model(xt, t, mix)
        single = model(xt[1:], t[1:], mix[1:])
    assert rel_err(batched[1:], single) <= 1e-5


def _load_raw_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's raw (non-EMA) state_dict, read with a whitelist unpickler."""

    class Inert:
        def __setstate__(self, state):
            self.state = state

    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("__builtin__", "dict"): dict,
        ("builtins", "dict"): dict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch", "FloatStorage"): torch.FloatStorage,
    }

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("omegaconf.") or (module, name) == ("typing", "Any"):
                return Inert
            if (module, name) in allowed:
                return allowed[(module, name)]
            raise pickle.UnpicklingError(f"refused global {module}.{name}")

    module = types.ModuleType("restricted_pickle")
    module.Unpickler = Unpickler
    module.load = pickle.load
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
    return {k.removeprefix(PREFIX): v for k, v in checkpoint["state_dict"].items()}


@pytest.mark.slow  # a full model run or a large network: over a second
def test_raw_training_weights_do_not_match(reference_case):
    """The fixtures tell EMA weights (used at inference) from the raw training weights."""
    name, _, ref = reference_case
    raw = _load_raw_state_dict(FIXTURES / f"small-{name}.ckpt")
    config, _ = read_authors_checkpoint(FIXTURES / f"small-{name}.ckpt")
    model = ScoreModel(config).eval()
    model.load_state_dict(raw, strict=True)
    with torch.no_grad():
        out = model(ref["score.L8000.xt"], ref["score.L8000.t"][2], ref["score.L8000.mix"])
    assert rel_err(out, ref["score.L8000.out"][2]) > 0.3


# ---------------------------------------------------------------- behaviour (small, random weights)


def small_model(num_sources: int = 2) -> ScoreModel:
    torch.manual_seed(0)
    return ScoreModel(ModelConfig(num_sources=num_sources, backbone=BackboneConfig(nf=4)))


def test_three_sources_change_channel_counts():
    model = small_model(num_sources=3)
    assert model.backbone.output_layer.weight.shape == (6, 8, 1, 1)
    assert model.backbone.all_modules[3].weight.shape == (4, 8, 3, 3)
    xt, mix = torch.randn(1, 3, 700), torch.randn(1, 1, 700)
    with torch.no_grad():
        out = model.eval()(xt, torch.tensor([0.5]), mix)
    assert out.shape == (1, 3, 700)
    assert torch.isfinite(out).all()


def test_forward_does_not_mutate_inputs_and_backward_reaches_all_trainable_weights():
    model = small_model().train()
    xt, mix, t = torch.randn(2, 2, 600), torch.randn(2, 1, 600), torch.tensor([0.9, 0.1])
    copies = (xt.clone(), mix.clone(), t.clone())
    model(xt, t, mix).square().mean().backward()
    assert all(torch.equal(a, b) for a, b in zip((xt, mix, t), copies, strict=True))
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize(
    ("xt_shape", "t_shape", "mix_shape"),
    [
        ((2, 3, 500), (2,), (2, 1, 500)),
        ((2, 2, 500), (1,), (2, 1, 500)),
        ((2, 2, 500), (2,), (2, 1, 400)),
        ((2, 2, 500), (2,), (2, 2, 500)),
    ],
)
def test_bad_input_shapes_raise(xt_shape, t_shape, mix_shape):
    model = small_model()
    with pytest.raises(ValueError):
        model(torch.randn(xt_shape), torch.rand(t_shape), torch.randn(mix_shape))


def test_backbone_rejects_unpadded_frames():
    model = small_model()
    with pytest.raises(ValueError, match="multiple of 64"):
        model.backbone(torch.randn(1, 6, 256, 11), torch.tensor([0.5]))


@pytest.mark.parametrize(
    "backbone",
    [
        BackboneConfig(nf=2),
        BackboneConfig(nf=132),
        BackboneConfig(ch_mult=()),
        BackboneConfig(image_size=100),
        BackboneConfig(fir_kernel=(1,)),
    ],
)
def test_invalid_backbone_config_raises(backbone):
    with pytest.raises(ConfigError):
        NCSNpp(backbone, channels_in=6, channels_out=4)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(stft=STFTConfig(n_fft=512)),
        ModelConfig(stft=STFTConfig(frame_multiple=32)),
        ModelConfig(stft=STFTConfig(spec_factor=0.0)),
        ModelConfig(num_sources=0),
    ],
)
def test_inconsistent_model_config_raises(config):
    with pytest.raises(ConfigError):
        ScoreModel(config)


# ---------------------------------------------------------------- FIR resampling


def upfirdn_direct(x: torch.Tensor, taps: list[float], up: int, down: int) -> torch.Tensor:
    """Textbook upfirdn2d (StyleGAN2): zero-stuff, pad, full 2-D convolution, decimate."""
    n = len(taps)
    k = torch.outer(
        torch.tensor(taps, dtype=torch.float64), torch.tensor(taps, dtype=torch.float64)
    )
    k = k / k.sum() * up * up
    p = n - up if up > 1 else n - down
    pad0, pad1 = ((p + 1) // 2 + up - 1, p // 2) if up > 1 else ((p + 1) // 2, p // 2)
    b, c, h, w = x.shape
    stuffed = torch.zeros(b, c, h * up, w * up, dtype=torch.float64)
    stuffed[..., ::up, ::up] = x.double()
    padded = F.pad(stuffed, (pad0, pad1, pad0, pad1))
    out = torch.zeros(b, c, padded.shape[-2] - n + 1, padded.shape[-1] - n + 1, dtype=torch.float64)
    for i in range(n):  # true convolution: flipped kernel
        for j in range(n):
            out += (
                k[n - 1 - i, n - 1 - j] * padded[..., i : i + out.shape[-2], j : j + out.shape[-1]]
            )
    return out[..., ::down, ::down].float()


@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1, 2, 3, 4]])
def test_fir_resampling_matches_upfirdn(taps):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 16)
    kernel = fir_kernel_2d(taps)
    up, down = upsample_2x(x, kernel), downsample_2x(x, kernel)
    assert up.shape == (2, 3, 16, 32) and down.shape == (2, 3, 4, 8)
    assert (up - upfirdn_direct(x, taps, up=2, down=1)).abs().max() <= 1e-6
    assert (down - upfirdn_direct(x, taps, up=1, down=2)).abs().max() <= 1e-6


def test_fir_resampling_preserves_constants_away_from_borders():
    x = torch.full((1, 2, 8, 8), 3.0)
    kernel = fir_kernel_2d([1, 3, 3, 1])
    assert torch.allclose(upsample_2x(x, kernel)[..., 2:-2, 2:-2], torch.tensor(3.0))
    assert torch.allclose(downsample_2x(x, kernel)[..., 1:-1, 1:-1], torch.tensor(3.0))


def test_attention_block_is_single_head_softmax_attention():
    """The fused (scaled_dot_product_attention) block computes the authors' explicit formula."""
    from diffsep.nn.layers import SQRT2, AttnBlock

    torch.manual_seed(0)
    block = AttnBlock(8).eval()
    with torch.no_grad():
        block.NIN_3.W.normal_()  # the authors' init makes this branch ~0; test it for real
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        h = block.GroupNorm_0(x)
        q, k, v = (nin(h).reshape(2, 8, 24) for nin in (block.NIN_0, block.NIN_1, block.NIN_2))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) / 8**0.5, dim=-1)
        attended = torch.bmm(v, weights.transpose(1, 2)).reshape(2, 8, 4, 6)
        expected = (x + block.NIN_3(attended)) / SQRT2
        assert rel_err(block(x), expected) < 1e-5


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
def test_parameterisations_give_consistent_scores_and_sources(kind):
    from dataclasses import replace

    from diffsep.config import SDEConfig
    from diffsep.sde import make_sde

    base = ModelConfig(num_sources=2, backbone=BackboneConfig(nf=4), sde=SDEConfig(kind=kind))
    sde = make_sde(base.sde, 2)
    torch.manual_seed(0)
    xt, mix = torch.randn(2, 2, 700), torch.randn(2, 1, 700)
    t = torch.tensor([0.1, 1.0])
    score_net = ScoreModel(base).eval()
    data_net = ScoreModel(replace(base, parameterisation="data")).eval()
    data_net.load_state_dict(score_net.state_dict())
    skip_net = ScoreModel(replace(base, parameterisation="data_skip")).eval()
    skip_net.load_state_dict(score_net.state_dict())
    with torch.no_grad():
        raw = score_net(xt, t, mix)
        # a score network: forward is the decoded output, sources come from Tweedie's formula
        sources = score_net(xt, t, mix, output="sources")
        assert torch.allclose(sources.sum(1, keepdim=True), mix, atol=1e-5)
        tweedie = sde.sources_from_score(xt, t, mix, raw)
        assert torch.allclose(sources - sources.mean(1, keepdim=True),
                              tweedie - tweedie.mean(1, keepdim=True), atol=1e-4)
        # a data network: the same decoded output, now read as sources summing to the mixture
        estimates = data_net(xt, t, mix, output="sources")
        assert torch.allclose(estimates.sum(1, keepdim=True), mix, atol=1e-5)
        assert torch.allclose(estimates - estimates.mean(1, keepdim=True),
                              raw - raw.mean(1, keepdim=True), atol=1e-5)
        assert torch.allclose(data_net(xt, t, mix),
                              sde.score_from_sources(xt, t, mix, estimates), rtol=1e-5)
        # a skip network: the decoded output is the scaled residual on top of c_skip Pbar x_t
        skipped = skip_net(xt, t, mix, output="sources")
        assert torch.allclose(skipped, sde.sources_from_skip(xt, t, mix, raw), atol=1e-5)
        assert torch.allclose(skipped.sum(1, keepdim=True), mix, atol=1e-5)
        assert torch.allclose(skip_net(xt, t, mix),
                              sde.score_from_sources(xt, t, mix, skipped), rtol=1e-5)


def test_unknown_parameterisation_is_a_config_error():
    from dataclasses import replace

    with pytest.raises(ConfigError, match="parameterisation"):
        ScoreModel(replace(ModelConfig(backbone=BackboneConfig(nf=4)), parameterisation="eps"))
    from_json = ModelConfig.from_dict({**ModelConfig().to_dict(), "parameterisation": "noise"})
    with pytest.raises(ConfigError, match="parameterisation"):
        ScoreModel(from_json)
