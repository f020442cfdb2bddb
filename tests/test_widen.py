"""Widening a trained score network to twice its channels (diffsep.nn.widen)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffsep.config import BackboneConfig, ModelConfig, SamplerConfig, SDEConfig, STFTConfig
from diffsep.errors import ConfigError
from diffsep.nn.score_model import ScoreModel
from diffsep.nn.widen import copy_index, copy_sign, widen_state_dict, widen_tensor

NARROW = ModelConfig(
    task="separation",
    num_sources=2,
    sample_rate=8000,
    stft=STFTConfig(n_fft=62, hop_length=16, frame_multiple=4),
    backbone=BackboneConfig(nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                            image_size=32),
    sde=SDEConfig(),
    sampler=SamplerConfig(steps=3),
    parameterisation="data_skip",
)


def with_backbone(config: ModelConfig, **changes: object) -> ModelConfig:
    return dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, **changes))


def trained_like(config: ModelConfig, seed: int) -> ScoreModel:
    """A network whose weights are all random and non-zero (unlike a fresh one's last layers),
    so that every path of the function is exercised."""
    torch.manual_seed(seed)
    network = ScoreModel(config).eval()
    with torch.no_grad():
        for param in network.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn_like(param))
    return network


def outputs(network: ScoreModel) -> torch.Tensor:
    torch.manual_seed(1)
    x = 0.1 * torch.randn(2, 2, 1200)
    t = torch.tensor([1.0, 0.2])
    with torch.no_grad():
        return network(x, t, x.sum(1, keepdim=True), output="sources")


def test_copy_index_copies_each_group_of_four_twice_in_order() -> None:
    assert copy_index(8).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7]
    assert copy_sign(4).tolist() == [1, 1, 1, 1, -1, -1, -1, -1]
    index = copy_index(12)
    assert torch.bincount(index).tolist() == [2] * 12


def test_widen_tensor_copies_outputs_and_splits_inputs() -> None:
    narrow = torch.randn(4, 8, 3, 3)
    wide = widen_tensor(narrow, torch.Size([8, 16, 3, 3]), (0,), (1,), 0.1,
                        torch.Generator().manual_seed(0))
    # each output row is copied; the two copies of an input sum to its narrow weight but differ
    sums = torch.zeros(8, 8, 3, 3).index_add_(1, copy_index(8), wide)
    torch.testing.assert_close(sums, narrow[copy_index(4)])
    assert not torch.allclose(wide[:, :4], wide[:, 4:8])
    with pytest.raises(ValueError, match="axis 1 from 8 to 12"):
        widen_tensor(narrow, torch.Size([8, 12, 3, 3]), (0,), (1,), 0.1, torch.Generator())


@pytest.mark.parametrize(("ch_mult", "max_groups"), [((1, 2), 32), ((1, 1), 2)])
def test_widened_network_computes_the_same_function(ch_mult: tuple[int, ...],
                                                    max_groups: int) -> None:
    # max_groups 2: the wide network's 16-channel GroupNorms keep 2 groups, now of 8 channels,
    # each one narrow group of 4 copied twice; otherwise twice the groups of 4
    narrow_config = with_backbone(NARROW, ch_mult=ch_mult, max_groups=max_groups)
    narrow = trained_like(narrow_config, seed=0)
    wide = ScoreModel(with_backbone(narrow_config, nf=8)).eval()
    weights = widen_state_dict(narrow.state_dict(), wide, narrow_max_groups=max_groups)
    wide.load_state_dict(weights)
    expected = outputs(narrow)
    assert expected.abs().max() > 0.01
    torch.testing.assert_close(outputs(wide), expected, atol=2e-5, rtol=1e-4)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(
        p.numel() for p in narrow.parameters())
    # without the +-e the copies would stay identical in training; with it they differ
    conv = "backbone.all_modules.4.Conv_1.weight"
    assert not torch.allclose(weights[conv][:, :4], weights[conv][:, 4:8])
    # another seed draws other +-e, still the same function
    other = widen_state_dict(narrow.state_dict(), wide, narrow_max_groups=max_groups, seed=1)
    assert not torch.equal(other[conv], weights[conv])


def test_widening_refuses_groups_it_cannot_copy() -> None:
    # 24 narrow channels (16 + 8 at a skip) in 6 groups of 4 become 48 channels in 8 groups of
    # 6: no copy of narrow groups has those statistics
    narrow_config = with_backbone(NARROW, ch_mult=(1, 2, 4), max_groups=8)
    narrow = ScoreModel(narrow_config)
    wide = ScoreModel(with_backbone(narrow_config, nf=8))
    with pytest.raises(ConfigError, match="48 in 8 groups.*larger backbone.max_groups"):
        widen_state_dict(narrow.state_dict(), wide, narrow_max_groups=8)
    wide = ScoreModel(with_backbone(narrow_config, nf=8, max_groups=16))
    widen_state_dict(narrow.state_dict(), wide, narrow_max_groups=8)
    with pytest.raises(ConfigError, match="lack"):
        widen_state_dict({}, wide)


def test_max_groups_caps_the_group_norm_groups() -> None:
    def largest_group_count(config: ModelConfig) -> int:
        return max(m.num_groups for m in ScoreModel(config).modules()
                   if isinstance(m, torch.nn.GroupNorm))

    wide = with_backbone(NARROW, nf=16, ch_mult=(2, 8))  # up to 256 channels at the skips
    assert largest_group_count(wide) == 32  # the NCSN++ cap
    assert largest_group_count(with_backbone(wide, max_groups=64)) == 64  # 256 // 4
    assert largest_group_count(with_backbone(wide, max_groups=8)) == 8
    with pytest.raises(ConfigError, match="max_groups must be >= 1"):
        ScoreModel(with_backbone(wide, max_groups=0))
