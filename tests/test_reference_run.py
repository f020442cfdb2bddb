"""Fixture (e): the reference ``separate()`` end to end on the small random-weight checkpoints.

The reference drew its noise from the global torch generator; we replay that stream through a local
``torch.Generator`` passed in as ``noise_fn``. For enhancement, draws after the first come from a
tensor with channel-last strides in the reference, which torch fills in a different order; the
replay reproduces that layout (see the fixture README, section (e)).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import rel_err

from diffsep.checkpoint import read_authors_checkpoint
from diffsep.nn.score_model import ScoreModel
from diffsep.processing import normalize_mixture, rescale_to_mixture
from diffsep.sampling import pc_sample
from diffsep.sde import make_sde

FIXTURES = Path(__file__).parent / "fixtures" / "reference-diffsep"



class ReferenceNoise:
    """``noise_fn`` replaying the reference's global-generator draws from ``seed``."""

    def __init__(self, seed: int, channel_last_after_first: bool):
        self.gen = torch.Generator().manual_seed(seed)
        self.channel_last_after_first = channel_last_after_first
        self.draws: list[torch.Tensor] = []

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        B, K, N = like.shape
        if self.draws and self.channel_last_after_first:
            z = torch.empty(B, N, K).transpose(1, 2).normal_(generator=self.gen)
        else:
            z = torch.randn(B, K, N, generator=self.gen)
        self.draws.append(z)
        return z


@pytest.mark.slow  # two full 30-step reference runs (the fast loop keeps test_separator's)
@pytest.mark.parametrize("name", ["sep", "enh"])
def test_full_separation_reproduces_reference(name):
    ref = torch.load(FIXTURES / f"expected-small-{name}.pt", weights_only=True)
    config, state_dict = read_authors_checkpoint(FIXTURES / f"small-{name}.ckpt")
    model = ScoreModel(config)
    model.load_state_dict(state_dict)
    model.eval()
    sde = make_sde(config.sde, config.num_sources)
    assert sde.kind == ("mix" if name == "sep" else "prior_mix")

    calls = []

    def score_fn(x, t, mix):
        calls.append(float(t[0]))
        return model(x, t, mix)

    mix = ref["full.wav"][None]  # (1, 1, 8000)
    mix_norm, mean, std = normalize_mixture(mix)
    assert rel_err(mix_norm, ref["full.mix_norm"]) < 1e-5
    assert rel_err(mean, ref["full.norm_mean"]) < 1e-5 and rel_err(std, ref["full.norm_std"]) < 1e-5

    noise = ReferenceNoise(int(ref["full.seed"]), channel_last_after_first=(name == "enh"))
    s = config.sampler
    raw = pc_sample(
        sde,
        score_fn,
        mix_norm,
        steps=s.steps,
        snr=s.snr,
        corrector_steps=s.corrector_steps,
        t_eps=s.t_eps,
        denoise=s.denoise,
        noise_fn=noise,
    )
    sep = rescale_to_mixture(mix, raw)

    assert len(calls) == int(ref["full.nfe"]) == 60
    assert len(noise.draws) == 61
    assert torch.equal(noise.draws[0], ref["full.prior_noise_first_draw"])
    assert rel_err(raw, ref["full.raw"]) < 1e-4
    assert rel_err(sep, ref["full.sep"]) < 1e-4
