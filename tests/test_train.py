"""Training: the loss, the EMA, the config, the loop (checkpoint, resume, export, DDP) and the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffsep.config import BackboneConfig, ModelConfig, SamplerConfig, SDEConfig, STFTConfig
from diffsep.errors import CheckpointError, ConfigError, OutputError
from diffsep.nn.score_model import ScoreModel
from diffsep.sde import DiffusionMixingSDE
from diffsep.train.config import (
    DataConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
    ValidConfig,
    apply_overrides,
    load_train_config,
    parse_override,
)
from diffsep.train.ema import WeightEMA
from diffsep.train.loss import (
    TrainingDraw,
    data_prediction_loss,
    diffsep_loss,
    draw_training_noise,
    implied_score_loss,
    network_input,
    normalize_batch,
    pit_si_sdr_loss,
    prior_branch_loss,
    reorder_sources,
    score_matching_loss,
    si_sdr,
)

RATE = 8000


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def _sde(k: int, kind: str = "mix") -> DiffusionMixingSDE:
    return DiffusionMixingSDE(num_sources=k, kind=kind, avg_len=15)


def _batch(k: int, b: int = 3, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sources = torch.randn(b, k, n, generator=g, dtype=torch.float64)
    return sources.sum(dim=1, keepdim=True), sources


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
@pytest.mark.parametrize("k", [2, 3])
def test_score_matching_loss_is_zero_for_the_true_score(k: int, kind: str) -> None:
    sde = _sde(k, kind)
    mix, _ = _batch(k)
    z = torch.randn(3, k, 64, dtype=torch.float64)
    t = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    true_score = -sde.apply_L_inv(z, t, mix)
    assert torch.allclose(
        score_matching_loss(sde, true_score, z, t, mix),
        torch.zeros(3, dtype=torch.float64),
        atol=1e-20,
    )
    # a zero score leaves the loss of the noise itself: mean z^2
    expected = z.square().mean(dim=(1, 2))
    assert torch.allclose(score_matching_loss(sde, torch.zeros_like(z), z, t, mix), expected)


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
@pytest.mark.parametrize("k", [2, 3])
def test_prior_branch_picks_the_matching_order(k: int, kind: str) -> None:
    sde = _sde(k, kind)
    mix, sources = _batch(k, b=2)
    z = torch.randn_like(sources)
    t = torch.ones(2, dtype=torch.float64)
    orders = list(itertools.permutations(range(k)))
    for index, order in enumerate(orders):
        mismatch = sde.prior_mean(mix) - sde.mean(sources[:, list(order)], t)
        z_order = z + sde.apply_L_inv(mismatch, t, mix)
        score = -sde.apply_L_inv(z_order, t, mix)  # the exact score for this order
        loss, best = prior_branch_loss(sde, score, z, t, mix, sources, permutation_invariant=True)
        assert torch.allclose(loss, torch.zeros(2, dtype=torch.float64), atol=1e-18)
        assert best.tolist() == [index, index]
        fixed, _ = prior_branch_loss(sde, score, z, t, mix, sources, permutation_invariant=False)
        if index == 0:
            assert torch.allclose(fixed, torch.zeros(2, dtype=torch.float64), atol=1e-18)
        else:  # without PIT only the given order counts, so another order costs something
            assert bool((fixed > 1e-3).all())


def test_prior_branch_mismatch_is_the_distance_to_the_model_mean() -> None:
    # with the plain noise as target (no mismatch term) the loss equals |L^-1 (y/K - mean_T)|^2
    sde = _sde(2)
    mix, sources = _batch(2, b=1, n=32)
    z = torch.randn_like(sources)
    t = torch.ones(1, dtype=torch.float64)
    score = -sde.apply_L_inv(z, t, mix)
    loss, _ = prior_branch_loss(sde, score, z, t, mix, sources, permutation_invariant=False)
    gap = sde.apply_L_inv(sde.prior_mean(mix) - sde.mean(sources, t), t, mix)
    assert torch.allclose(loss, gap.square().mean(dim=(1, 2)))
    assert float(loss) > 0.01


def test_network_input_and_combined_loss() -> None:
    k, b, n = 2, 4, 48
    sde = _sde(k)
    mix, sources = _batch(k, b=b, n=n)
    mix, sources = mix.float(), sources.float()
    g = torch.Generator().manual_seed(3)
    draw = draw_training_noise(b, k, n, p_T=0.5, t_min=0.03, shuffle_sources=True, generator=g)
    draw = dataclasses.replace(
        draw,
        at_T=torch.tensor([True, False, True, False]),
        t=torch.where(torch.tensor([True, False, True, False]), torch.ones(b), draw.t),
        order=torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]]),
    )
    x_t = network_input(sde, mix, sources, draw)
    ordered = reorder_sources(sources, draw.order)
    assert torch.equal(ordered[0], sources[0].flip(0))
    for i in (1, 3):
        expected = sde.marginal_sample(
            ordered[i : i + 1], draw.t[i : i + 1], mix[i : i + 1], draw.z[i : i + 1]
        )
        assert torch.allclose(x_t[i : i + 1], expected)
    for i in (0, 2):
        expected = sde.prior_sample(mix[i : i + 1], draw.z[i : i + 1])
        assert torch.allclose(x_t[i : i + 1], expected)
    score = torch.randn(b, k, n, generator=g)
    loss = diffsep_loss(sde, score, mix, sources, draw, permutation_invariant=True)
    ordinary = score_matching_loss(sde, score, draw.z, draw.t, mix)
    prior, _ = prior_branch_loss(
        sde, score, draw.z, draw.t, mix, sources, permutation_invariant=True
    )
    assert torch.allclose(loss[[1, 3]], ordinary[[1, 3]])
    assert torch.allclose(loss[[0, 2]], prior[[0, 2]])
    # the ordinary branch at its exact score has zero loss
    exact = -sde.apply_L_inv(draw.z, draw.t, mix)
    assert torch.allclose(
        diffsep_loss(sde, exact, mix, sources, draw, permutation_invariant=True)[[1, 3]],
        torch.zeros(2),
        atol=1e-6,
    )


def test_draw_training_noise() -> None:
    def draw(p: float, seed: int = 0, shuffle: bool = True) -> TrainingDraw:
        g = torch.Generator().manual_seed(seed)
        return draw_training_noise(
            500, 3, 8, p_T=p, t_min=0.03, shuffle_sources=shuffle, generator=g
        )

    d = draw(0.1)
    assert bool((d.t >= 0.03).all()) and bool((d.t <= 1.0).all())
    assert bool((d.t[d.at_T] == 1.0).all()) and bool((d.t[~d.at_T] < 1.0).all())
    assert 20 < int(d.at_T.sum()) < 90  # ~50 of 500
    assert not bool(draw(0.0).at_T.any()) and bool(draw(1.0).at_T.all())
    assert torch.equal(d.order.sort(dim=1).values, torch.arange(3).expand(500, 3))
    assert len({tuple(o) for o in d.order.tolist()}) == 6
    assert torch.equal(draw(0.1, shuffle=False).order, torch.arange(3).expand(500, 3))
    again = draw(0.1)
    assert torch.equal(again.z, d.z) and torch.equal(again.t, d.t)
    assert not torch.equal(draw(0.1, seed=1).z, d.z)


@pytest.mark.parametrize("kind", ["mix", "prior_mix"])
@pytest.mark.parametrize("k", [2, 3])
def test_implied_score_loss_is_the_score_matching_loss_of_the_implied_score(
    k: int, kind: str
) -> None:
    sde = _sde(k, kind)
    mix, sources = _batch(k, b=4)
    g = torch.Generator().manual_seed(5)
    estimates = sources + 0.3 * torch.randn(sources.shape, generator=g, dtype=torch.float64)
    estimates = estimates + (mix - estimates.sum(1, keepdim=True)) / k  # sums to the mixture
    t = torch.tensor([0.05, 0.3, 0.8, 1.0], dtype=torch.float64)
    at_T = torch.tensor([False, False, True, True])
    t = torch.where(at_T, torch.ones_like(t), t)
    z = torch.randn(sources.shape, generator=g, dtype=torch.float64)
    order = torch.arange(k).expand(4, k)
    draw = TrainingDraw(t=t, at_T=at_T, z=z, order=order)
    x_t = network_input(sde, mix, sources, draw)
    score = sde.score_from_sources(x_t, t, mix, estimates)
    paper = diffsep_loss(sde, score, mix, sources, draw, permutation_invariant=False)
    unclipped = implied_score_loss(sde, estimates, sources, t, mix, snr_clip=1e12)
    assert torch.allclose(unclipped, paper, rtol=1e-6)
    # min-SNR clipping only ever lowers the weight
    clipped = implied_score_loss(sde, estimates, sources, t, mix, snr_clip=0.5)
    assert bool((clipped <= unclipped * (1 + 1e-12)).all()) and bool((clipped < unclipped).any())


def test_pit_si_sdr_loss_finds_the_order_and_measures_in_db() -> None:
    g = torch.Generator().manual_seed(2)
    sources = torch.randn(2, 3, 400, generator=g, dtype=torch.float64)
    noise = torch.randn(sources.shape, generator=g, dtype=torch.float64)
    estimates = sources[:, [2, 0, 1]] + 0.1 * noise  # item b's estimate k is source order[k]
    loss, order = pit_si_sdr_loss(estimates, sources, permutation_invariant=True)
    assert order.tolist() == [[2, 0, 1], [2, 0, 1]]
    expected = -si_sdr(estimates, sources[:, [2, 0, 1]]).mean(dim=1)
    assert torch.allclose(loss, expected) and bool((loss < -15).all())  # ~20 dB
    fixed, identity = pit_si_sdr_loss(estimates, sources, permutation_invariant=False)
    assert identity.tolist() == [[0, 1, 2], [0, 1, 2]] and bool((fixed > 0).all())
    # SI-SDR ignores the scale of the estimate
    noisy = sources + 0.1 * noise
    assert torch.allclose(si_sdr(3.0 * noisy, sources), si_sdr(noisy, sources))
    total = data_prediction_loss(
        _sde(3), estimates, sources.sum(1, keepdim=True), sources,
        TrainingDraw(t=torch.ones(2, dtype=torch.float64), at_T=torch.ones(2, dtype=torch.bool),
                     z=noise, order=torch.arange(3).expand(2, 3)),
        permutation_invariant=True, score_weight=0.0, snr_clip=5.0,
    )
    assert torch.allclose(total, loss)


def test_skewed_time_draw_stays_in_range_and_favours_T() -> None:
    g = torch.Generator().manual_seed(0)
    plain = draw_training_noise(4000, 2, 8, p_T=0.0, t_min=0.03, shuffle_sources=False,
                                generator=g)
    g = torch.Generator().manual_seed(0)
    skewed = draw_training_noise(4000, 2, 8, p_T=0.0, t_min=0.03, shuffle_sources=False,
                                 generator=g, t_skew=3.0)
    for draw in (plain, skewed):
        assert float(draw.t.min()) >= 0.03 and float(draw.t.max()) <= 1.0
    assert abs(float(plain.t.mean()) - 0.515) < 0.02
    assert float(skewed.t.mean()) > 0.7  # E[1 - (1 - u)^3] = 3/4


def test_normalize_batch_keeps_the_sum() -> None:
    sources = torch.randn(2, 3, 100) * 0.1 + 0.05
    mix = sources.sum(dim=1, keepdim=True)
    mix_n, sources_n = normalize_batch(mix, sources)
    assert torch.allclose(sources_n.sum(dim=1, keepdim=True), mix_n, atol=1e-5)
    assert torch.allclose(mix_n.mean(dim=(1, 2)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(mix_n.std(dim=(1, 2)), torch.ones(2), atol=1e-5)
    assert torch.equal(mix, sources.sum(dim=1, keepdim=True))  # inputs untouched


# ---------------------------------------------------------------------------------------------
# EMA
# ---------------------------------------------------------------------------------------------


def test_weight_ema() -> None:
    net = torch.nn.Linear(2, 1)
    net.register_buffer("scale", torch.tensor(1.0))
    with torch.no_grad():
        net.weight.fill_(0.0)
        net.bias.fill_(0.0)
    ema = WeightEMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.scale.fill_(3.0)
    assert ema.current_decay() == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)
    ema.update(net)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    assert float(ema.shadow["scale"]) == 3.0  # buffers copied
    for _ in range(100):
        ema.update(net)
    assert ema.current_decay() == 0.5
    assert torch.allclose(ema.shadow["weight"], torch.ones(1, 2), atol=1e-6)
    other = WeightEMA(net, decay=0.5)
    other.load(ema.state_dict(), ema.num_updates)
    assert other.num_updates == 101 and torch.equal(other.shadow["weight"], ema.shadow["weight"])


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


RUN_TOML = (
    '[model]\ntask = "enhancement"\nsample_rate = 16000\n'
    "[model.backbone]\nnf = 32\nch_mult = [1, 2, 2]\n"
    '[data]\ntrain = "speech"\nnoise = "noise"\nsnr_range = [0, 10]\n'
    "[optim]\nlr = 1e-3\nbatch_size = 2\n"
    '[output]\ndir = "runs/x"\n'
)


def test_config_toml_overrides_and_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN_TOML)
    config = load_train_config(cfg, ["optim.lr=5e-4", "model.sde.kind=prior_mix", "optim.steps=7"])
    assert config.model.task == "enhancement" and config.model.sample_rate == 16000
    assert config.model.backbone.ch_mult == (1, 2, 2)
    assert config.model.sde.kind == "prior_mix"
    assert config.optim.lr == 5e-4 and config.optim.batch_size == 2 and config.optim.steps == 7
    assert config.data.snr_range == (0.0, 10.0)
    assert config.data.train == str(tmp_path / "speech")  # relative to the TOML file
    assert config.output.dir == str(tmp_path / "runs" / "x")
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    assert parse_override("data.train=/a b/c") == (["data", "train"], "/a b/c")
    assert parse_override("valid.every=0") == (["valid", "every"], 0)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=true"]) == {"a": {"b": 1, "c": True}}
    with pytest.raises(ConfigError, match="unknown key"):
        load_train_config(cfg, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_train_config(cfg, ["optim.batch_size=2.5"])
    with pytest.raises(ConfigError, match="p_T"):
        load_train_config(cfg, ["optim.p_T=2"])
    with pytest.raises(ConfigError, match="not one of"):
        load_train_config(cfg, ["optim.precision=fp8"])
    assert load_train_config(cfg, ["data.recorded_share=0.8"]).data.recorded_share == 0.8
    with pytest.raises(ConfigError, match="recorded_share must be in"):
        load_train_config(cfg, ["data.recorded_share=1.2"])
    with pytest.raises(ConfigError, match="recorded_share applies to dynamic"):
        load_train_config(cfg, ["data.recorded_share=0.5", "data.kind=noisy_folder"])
    noise_share = load_train_config(cfg, ["data.noise_recorded_share=0.8"])
    assert noise_share.data.noise_recorded_share == 0.8
    with pytest.raises(ConfigError, match="noise_recorded_share must be in"):
        load_train_config(cfg, ["data.noise_recorded_share=2"])
    with pytest.raises(ConfigError, match="noise_recorded_share applies to dynamic"):
        load_train_config(cfg, ["data.noise_recorded_share=0.5", "data.kind=noisy_folder"])
    speeds = load_train_config(cfg, ["data.speed_range=[0.9, 1.1]",
                                     "data.noise_speed_range=[0.95, 1.05]"])
    assert (speeds.data.speed_range, speeds.data.noise_speed_range) == ((0.9, 1.1), (0.95, 1.05))
    assert TrainConfig.from_dict(json.loads(speeds.to_json())) == speeds
    with pytest.raises(ConfigError, match="0.5 <= low <= high <= 2"):
        load_train_config(cfg, ["data.speed_range=[1.1, 0.9]"])
    with pytest.raises(ConfigError, match="speed_range applies to dynamic"):
        load_train_config(cfg, ["data.speed_range=[0.9, 1.1]", "data.kind=noisy_folder"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="cannot read"):
        load_train_config(tmp_path / "missing.toml")
    # init_from: an existing path resolves against the TOML folder; a Hub id stays as written
    (tmp_path / "base-model").mkdir()
    tuned = cfg.with_name("tuned.toml")
    tuned.write_text(cfg.read_text().replace("[optim]\n", '[optim]\ninit_from = "base-model"\n'))
    assert load_train_config(tuned).optim.init_from == str(tmp_path / "base-model")
    assert load_train_config(cfg, ["optim.init_from=fakufaku/diffsep"]).optim.init_from == (
        "fakufaku/diffsep"
    )


def test_learning_rate_warms_up_then_follows_the_drops(tmp_path: Path) -> None:
    from diffsep.train.loop import learning_rate

    optim = OptimConfig(lr=3e-4, warmup_steps=4, lr_drops=((10, 1e-4), (20, 3e-5)))
    rates = [learning_rate(optim, step) for step in (0, 3, 9, 10, 19, 20, 500)]
    assert rates == pytest.approx([0.75e-4, 3e-4, 3e-4, 1e-4, 1e-4, 3e-5, 3e-5])
    assert learning_rate(OptimConfig(lr=2e-4), 10**6) == 2e-4
    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN_TOML)
    config = load_train_config(cfg, ["optim.lr_drops=[[1952, 1e-4]]"])
    assert config.optim.lr_drops == ((1952, 1e-4),)
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    with pytest.raises(ConfigError, match="increasing"):
        load_train_config(cfg, ["optim.lr_drops=[[20, 1e-4], [10, 1e-5]]"])
    with pytest.raises(ConfigError, match="positive"):
        load_train_config(cfg, ["optim.lr_drops=[[20, 0.0]]"])
    with pytest.raises(ConfigError, match="expected 2 values"):
        load_train_config(cfg, ["optim.lr_drops=[[20]]"])


def test_yaml_config_reads_like_toml(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(RUN_TOML.replace("batch_size = 2\n", "batch_size = 2\nema_decay = 0.999\n"))
    yaml_text = (
        "model:\n  task: enhancement\n  sample_rate: 16000\n"
        "  backbone: {nf: 32, ch_mult: [1, 2, 2]}\n"
        "data:\n  train: speech\n  noise: noise\n  snr_range: [0, 10]\n"
        "optim:\n  lr: 1e-3          # YAML 1.1 would read this as a string\n"
        "  batch_size: 2\n  ema_decay: .999\n"
        "output:\n  dir: runs/x\n"
    )
    for name in ("run.yaml", "run.YML"):
        (tmp_path / name).write_text(yaml_text)
        config = load_train_config(tmp_path / name, ["optim.steps=7"])
        assert config == load_train_config(toml, ["optim.steps=7"])
        assert config.optim.lr == 1e-3 and config.data.train == str(tmp_path / "speech")
    (tmp_path / "empty.yaml").write_text("# nothing set\n")
    assert load_train_config(tmp_path / "empty.yaml") == load_train_config(None)
    (tmp_path / "list.yaml").write_text("- model\n- data\n")
    with pytest.raises(ConfigError, match=r"list.yaml: a YAML config must be a mapping"):
        load_train_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("optim:\n  lr: [1e-3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML") as err:
        load_train_config(tmp_path / "bad.yaml")
    assert "\n" not in str(err.value)
    # plain data only: no Python objects from a config file, and no dates (TOML has them too)
    (tmp_path / "object.yaml").write_text("optim: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_train_config(tmp_path / "object.yaml")
    (tmp_path / "date.yaml").write_text("output:\n  title: 2024-01-01\n")
    (tmp_path / "date.toml").write_text("[output]\ntitle = 2024-01-01\n")
    for name in ("date.yaml", "date.toml"):
        with pytest.raises(ConfigError, match=rf'{name}: output.title: date values are not '
                                              r'settings \(quote it: "2024-01-01"\)'):
            load_train_config(tmp_path / name)
    (tmp_path / "keys.yaml").write_text("1: x\n")
    with pytest.raises(ConfigError, match="key 1 is not a string"):
        load_train_config(tmp_path / "keys.yaml")
    assert parse_override("output.title=2024-01-01") == (["output", "title"], "2024-01-01")


def test_saved_train_config_json_is_a_config(tmp_path: Path) -> None:
    """The resume-mismatch error points at a run's train_config.json: it must load as one."""
    toml = tmp_path / "run.toml"
    toml.write_text(RUN_TOML)
    config = load_train_config(toml, ["optim.steps=7"])
    saved = tmp_path / "run" / "train_config.json"
    saved.parent.mkdir()
    saved.write_text(config.to_json())
    assert load_train_config(saved) == config
    assert load_train_config(saved, ["optim.steps=9"]).optim.steps == 9
    (tmp_path / "bad.json").write_text('{"optim": {"lr": }')
    with pytest.raises(ConfigError, match=r"bad.json: invalid JSON") as err:
        load_train_config(tmp_path / "bad.json")
    assert "\n" not in str(err.value)
    (tmp_path / "list.json").write_text('["model"]')
    with pytest.raises(ConfigError, match=r"list.json: a JSON config must be a mapping"):
        load_train_config(tmp_path / "list.json")


def _write_group(root: Path, name: str, signals: dict[str, np.ndarray]) -> None:
    for folder, x in signals.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        sf.write(root / folder / name, x, RATE, subtype="FLOAT")


def test_dataset_folder_names_from_the_config(tmp_path: Path) -> None:
    from diffsep.errors import AudioError
    from diffsep.train.batches import build_train_dataset, build_valid_dataset

    rng = np.random.default_rng(0)
    libri = tmp_path / "Libri2Mix" / "wav8k" / "min" / "train-360"  # LibriMix's own layout
    for name in ("a.wav", "b.wav"):
        s1, s2, noise = (0.1 * rng.standard_normal((3, RATE))).astype(np.float32)
        _write_group(libri, name, {"s1": s1, "s2": s2, "noise": noise, "mix_clean": s1 + s2,
                                   "mix_both": s1 + s2 + noise})
    base = TrainConfig(
        data=DataConfig(kind="mixture_folder", train=str(libri), valid=str(libri)),
        optim=OptimConfig(segment_seconds=0.1),
        valid=ValidConfig(seconds=0.2),
    )
    with pytest.raises(AudioError, match=r"folder missing .*found mix_both, mix_clean, noise"):
        build_train_dataset(base)

    clean = dataclasses.replace(base, data=dataclasses.replace(base.data, mix_dir="mix_clean"))
    mix, sources = build_train_dataset(clean)[0]
    assert sources.shape == (2, 800) and torch.allclose(sources.sum(0), mix[0], atol=1e-6)
    assert build_valid_dataset(clean)[1][1].shape == (2, 1600)

    both = TrainConfig.from_dict(apply_overrides(base.to_dict(), [
        "data.mix_dir=mix_both", 'data.source_dirs=["s1", "s2", "noise"]',
        "model.num_sources=3",
    ]))
    assert both.data.source_dirs == ("s1", "s2", "noise")
    for dataset in (build_train_dataset(both), build_valid_dataset(both)):
        mix, sources = dataset[1]
        assert sources.shape[0] == 3 and torch.allclose(sources.sum(0), mix[0], atol=1e-6)
    with pytest.raises(ConfigError, match=r"source_dirs names 3 folder\(s\) for model.num_sources = 2"):
        TrainConfig.from_dict(apply_overrides(both.to_dict(), ["model.num_sources=2"]))
    with pytest.raises(ConfigError, match=r"data.mix_dir must be a folder name"):
        TrainConfig.from_dict(apply_overrides(base.to_dict(), ["data.mix_dir=../mix"]))

    # VoiceBank-DEMAND as distributed: noisy_trainset_28spk_wav/ and clean_trainset_28spk_wav/
    vbd = tmp_path / "vbd"
    clean_speech = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    noisy = clean_speech + (0.01 * rng.standard_normal(RATE)).astype(np.float32)
    _write_group(vbd, "p226_001.wav", {"noisy_trainset_28spk_wav": noisy,
                                       "clean_trainset_28spk_wav": clean_speech})
    enh = TrainConfig.from_dict(apply_overrides(base.to_dict(), [
        "model.task=enhancement", "model.sde.kind=prior_mix", "data.kind=noisy_folder",
        f"data.train={vbd}", f"data.valid={vbd}", "data.noisy_dir=noisy_trainset_28spk_wav",
        "data.clean_dir=clean_trainset_28spk_wav",
    ]))
    mix, sources = build_train_dataset(enh)[0]
    assert torch.allclose(sources[0] + sources[1], mix[0], atol=1e-6)
    assert len(build_valid_dataset(enh)) == 1


def test_recipes_load() -> None:
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("train-sep-8k.toml", "train-sep-8k-skip.toml", "train-sep-8k-refine.toml",
                 "train-sep-8k-gpu.toml", "train-enh-16k.toml", "train-enh-16k-data.toml",
                 "train-enh-16k-refine.toml", "train-enh-16k-gpu.toml",
                 "train-enh-16k-gpu2.toml", "train-enh-16k-wide.toml",
                 "train-sep-8k-wide.toml"):
        config = load_train_config(recipes / name)
        from diffsep.nn.score_model import ScoreModel

        params = sum(p.numel() for p in ScoreModel(config.model).parameters())
        assert params * 2 < 40e6  # fp16 export under 40 MB
    sep = load_train_config(recipes / "train-sep-8k.toml")
    enh = load_train_config(recipes / "train-enh-16k.toml")
    # stage 2 of the separation model warm-starts from stage 1's run: same network
    from diffsep.train.checkpoints import architecture_differences

    skip = load_train_config(recipes / "train-sep-8k-skip.toml")
    assert (recipes / skip.optim.init_from).resolve() == Path(sep.output.dir).resolve()
    assert all(line.startswith("model.parameterisation:")
               for line in architecture_differences(skip.model, sep.model))
    # stage 3 continues stage 2's network unchanged, from the manifest, mostly recorded voices
    refine = load_train_config(recipes / "train-sep-8k-refine.toml")
    assert (recipes / refine.optim.init_from).resolve() == Path(skip.output.dir).resolve()
    assert architecture_differences(refine.model, skip.model) == []
    assert Path(refine.data.train).name == "manifest.csv"
    assert refine.data.recorded_share == 0.8
    assert (refine.optim.lr, refine.optim.p_T) == (1e-4, 0.9)
    # stage 5: the same network and loss with 32 x the batch, from the packed corpus
    gpu = load_train_config(recipes / "train-sep-8k-gpu.toml")
    assert architecture_differences(gpu.model, refine.model) == []
    assert (gpu.optim.batch_size, gpu.optim.lr, gpu.optim.lr_drops) == (128, 2e-4, ((618, 6e-5),))
    assert (gpu.optim.objective, gpu.optim.p_T, gpu.data.recorded_share) == ("sisdr", 0.9, 0.8)
    assert Path(gpu.data.train).parts[-3:] == ("pack", "sep-8k", "manifest.csv")
    # ... whose network is the bundled one
    from diffsep.checkpoint.model_files import load_model_files

    bundled_config, _ = load_model_files(recipes.parent / "models" / "sep-8k")
    assert architecture_differences(gpu.model, bundled_config) == []
    # the prepared wide separation run starts from it, widened
    from diffsep.train.checkpoints import initial_weights

    sep_wide = load_train_config(recipes / "train-sep-8k-wide.toml")
    assert (recipes / sep_wide.optim.init_from).resolve() == recipes.parent / "models" / "sep-8k"
    widened = architecture_differences(sep_wide.model, bundled_config)
    assert [line.split(":")[0] for line in widened] == ["model.backbone.nf",
                                                         "model.backbone.max_groups"]
    weights, origin = initial_weights(str(recipes / sep_wide.optim.init_from), sep_wide)
    assert "widened to twice its channels" in origin
    assert weights.keys() == ScoreModel(sep_wide.model).state_dict().keys()
    # and so does stage 2 of the enhancement model
    enh_data = load_train_config(recipes / "train-enh-16k-data.toml")
    assert (recipes / enh_data.optim.init_from).resolve() == Path(enh.output.dir).resolve()
    differences = architecture_differences(enh_data.model, enh.model)
    assert differences and all(line.startswith("model.parameterisation:")
                               for line in differences)
    assert enh_data.optim.lr_drops == ((1500, 1e-4),)
    # stages 3 to 5 of the enhancement model keep that network; stage 5 is the bundled one
    enh_refine = load_train_config(recipes / "train-enh-16k-refine.toml")
    assert (recipes / enh_refine.optim.init_from).resolve() == Path(enh_data.output.dir).resolve()
    enh_gpu = load_train_config(recipes / "train-enh-16k-gpu.toml")
    assert architecture_differences(enh_refine.model, enh_data.model) == []
    assert architecture_differences(enh_gpu.model, enh_refine.model) == []
    assert (enh_gpu.optim.batch_size, enh_gpu.optim.lr, enh_gpu.optim.lr_drops) == (
        128, 2e-4, ((937, 6e-5),))
    assert Path(enh_gpu.data.train).parts[-3:] == ("pack", "enh-16k", "manifest.csv")
    assert enh_gpu.data.noise == enh_gpu.data.train
    enh_gpu2 = load_train_config(recipes / "train-enh-16k-gpu2.toml")
    assert architecture_differences(enh_gpu2.model, enh_gpu.model) == []
    assert (enh_gpu2.optim.batch_size, enh_gpu2.optim.lr, enh_gpu2.optim.lr_drops) == (
        128, 1.5e-4, ((1001, 4.5e-5),))
    assert enh_gpu2.optim.init_from != enh_gpu.optim.init_from
    assert (enh_gpu2.data.train, enh_gpu2.data.noise) == (enh_gpu.data.train, enh_gpu.data.noise)
    bundled_enh, _ = load_model_files(recipes.parent / "models" / "enh-16k")
    assert architecture_differences(enh_gpu2.model, bundled_enh) == []
    # the prepared wide run starts from the bundled model, widened (its only differences)
    wide = load_train_config(recipes / "train-enh-16k-wide.toml")
    assert (recipes / wide.optim.init_from).resolve() == (recipes.parent / "models" / "enh-16k")
    assert all(line.startswith(("model.backbone.nf:", "model.backbone.max_groups:"))
               for line in architecture_differences(wide.model, bundled_enh))
    assert (wide.data.recorded_share, wide.data.noise_recorded_share) == (0.8, 0.7)
    weights, origin = initial_weights(str(recipes / wide.optim.init_from), wide)
    assert "widened to twice its channels" in origin
    assert weights.keys() == ScoreModel(wide.model).state_dict().keys()
    assert (sep.model.task, sep.model.sample_rate, sep.model.sde.kind) == (
        "separation",
        8000,
        "mix",
    )
    assert (enh.model.task, enh.model.sample_rate, enh.model.sde.kind) == (
        "enhancement",
        16000,
        "prior_mix",
    )


# ---------------------------------------------------------------------------------------------
# Tiny end-to-end runs
# ---------------------------------------------------------------------------------------------

TINY_MODEL = ModelConfig(
    task="separation",
    num_sources=2,
    sample_rate=RATE,
    stft=STFTConfig(n_fft=62, hop_length=16, frame_multiple=4),
    backbone=BackboneConfig(
        nf=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=32
    ),
    sde=SDEConfig(),
    sampler=SamplerConfig(steps=3),
)


def _tone(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(90, 300)
    x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
    return (0.1 * x * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))).astype(np.float32)


def _make_data(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    speech = root / "speech"
    for spk in range(3):
        for utt in range(2):
            path = speech / "train" / f"spk{spk}" / f"u{utt}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _tone(rng, 0.4), RATE)
    valid = root / "valid"
    for folder in ("mix", "s1", "s2"):
        (valid / folder).mkdir(parents=True)
    for i in range(2):
        s1, s2 = _tone(rng, 0.3), _tone(rng, 0.3)
        sf.write(valid / "s1" / f"v{i}.wav", s1, RATE)
        sf.write(valid / "s2" / f"v{i}.wav", s2, RATE)
        sf.write(valid / "mix" / f"v{i}.wav", s1 + s2, RATE)
    return speech, valid


def _tiny_config(root: Path, run: str, **optim: object) -> TrainConfig:
    speech, valid = (
        _make_data(root) if not (root / "speech").exists() else (root / "speech", root / "valid")
    )
    return TrainConfig(
        model=TINY_MODEL,
        data=DataConfig(kind="dynamic", train=str(speech), valid=str(valid), epoch_length=6),
        optim=OptimConfig(
            **{
                "lr": 1e-3,
                "batch_size": 2,
                "segment_seconds": 0.1,
                "steps": 4,
                "p_T": 0.5,
                "ema_decay": 0.9,
                **optim,
            }
        ),  # type: ignore[arg-type]
        valid=ValidConfig(every=3, num_mixtures=2, seconds=0.25, sampler_steps=2),
        output=OutputConfig(dir=str(root / run), checkpoint_minutes=0.0, log_every=1),
    )


def _losses(config: TrainConfig, **kw: object) -> tuple[list[float], object]:
    from diffsep.train.loop import TrainHooks, train

    losses: list[float] = []
    result = train(
        config, device="cpu", hooks=TrainHooks(on_step=lambda info: losses.append(info.loss)), **kw
    )  # type: ignore[arg-type]
    return losses, result


@pytest.mark.slow  # trains
def test_train_checkpoint_resume_and_export(tmp_path: Path) -> None:
    from diffsep.loading import load_model
    from diffsep.model import sample_windows
    from diffsep.train.checkpoints import latest_checkpoint, read_checkpoint
    from diffsep.train.export import export_model

    torch.set_num_threads(1)
    straight_cfg = _tiny_config(tmp_path, "straight")
    straight, result = _losses(straight_cfg)
    assert result.status == "finished" and result.step == 4 and len(straight) == 4
    assert all(math.isfinite(x) for x in straight)
    run = Path(straight_cfg.output.dir)
    log = (run / "train.log").read_text()
    assert "validation at step 3" in log and "si_sdr" in log
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "valid"] == [3, 4]

    # interrupted after 2 steps, then resumed: the same losses and the same weights
    resumed_cfg = _tiny_config(tmp_path, "resumed")
    first, paused = _losses(resumed_cfg, max_new_steps=2)
    assert paused.status == "paused" and paused.step == 2
    ckpt = latest_checkpoint(resumed_cfg.output.dir)
    assert ckpt is not None and ckpt.name == "step-00000002"
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["optimizer"]["state"]
    saved_cfg, _ = read_checkpoint(ckpt)
    assert saved_cfg == resumed_cfg
    second, finished = _losses(resumed_cfg)
    assert finished.step == 4
    assert first + second == straight  # bitwise identical continuation
    assert finished.fingerprint == result.fingerprint
    with pytest.raises(OutputError, match="already holds checkpoints"):
        _losses(resumed_cfg, resume=False)
    other_model = dataclasses.replace(
        resumed_cfg, model=dataclasses.replace(TINY_MODEL, num_sources=3)
    )
    with pytest.raises(ConfigError, match="different model"):
        _losses(other_model)

    # the export is a model folder the separator loads; fp16 on disk, EMA weights
    export = run / "export"
    assert (export / "config.json").is_file() and (export / "README.md").is_file()
    card = (export / "README.md").read_text()
    assert "for 4 steps" in card and "Validation at step 4" in card
    assert "the sampler with 2 steps" in card
    model = load_model(export, device="cpu")
    _, state = read_checkpoint(latest_checkpoint(run))
    for key, value in model.network.state_dict().items():
        assert torch.allclose(value, state["ema"][key].half().float())
    mixes = torch.randn(2, 1, 400) * 0.1
    est = sample_windows(model, mixes, [0, 1], model.config.sampler)
    assert est.shape == (2, 2, 400) and bool(torch.isfinite(est).all())
    raw = export_model(run, tmp_path / "raw32", dtype="float32", use_ema=False)
    raw_model = load_model(raw, device="cpu")
    for key, value in raw_model.network.state_dict().items():
        assert torch.equal(value, state["model"][key])
    with pytest.raises(CheckpointError):
        export_model(tmp_path, tmp_path / "nothing")


@pytest.mark.slow  # trains
def test_stop_request_cancels_a_validation_under_way(tmp_path: Path) -> None:
    import signal

    from diffsep.train.checkpoints import latest_checkpoint
    from diffsep.train.loop import TrainHooks, train

    torch.set_num_threads(1)
    config = _tiny_config(tmp_path, "stopped", steps=6)

    def stop_after_step_3(info) -> None:
        if info.step == 3:  # a validation is due before step 4; SIGTERM arrives first
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(config, device="cpu", hooks=TrainHooks(on_step=stop_after_step_3))
    assert result.status == "interrupted" and result.step == 3
    assert latest_checkpoint(config.output.dir).name == "step-00000003"
    run = Path(config.output.dir)
    assert "validation at step 3 cancelled: stop requested" in (run / "train.log").read_text()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["kind"] == "valid"]
    assert not (run / "export").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, config_json: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from diffsep.train.config import config_from_json
    from diffsep.train.loop import train

    result = train(config_from_json(config_json, "test"), device="cpu")
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"fingerprint": result.fingerprint, "step": result.step})
    )


@pytest.mark.slow  # trains
def test_ddp_gloo_two_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    config = _tiny_config(tmp_path, "ddp", steps=2)
    config = dataclasses.replace(config, valid=dataclasses.replace(config.valid, every=0))
    mp.spawn(
        _ddp_worker, args=(2, _free_port(), config.to_json(), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["step"] == ranks[1]["step"] == 2
    assert ranks[0]["fingerprint"] == ranks[1]["fingerprint"]
    # the weights moved away from the (shared) initialisation
    from diffsep.train.checkpoints import latest_checkpoint, read_checkpoint

    _, state = read_checkpoint(latest_checkpoint(config.output.dir))
    torch.manual_seed(config.optim.seed)
    from diffsep.nn.score_model import ScoreModel

    init = ScoreModel(config.model).state_dict()
    assert any(not torch.equal(init[k], state["model"][k]) for k in init)
    log = (Path(config.output.dir) / "train.log").read_text()
    assert "2 process(es)" in log and "different weights" not in log


@pytest.mark.slow  # trains
def test_cli_train_and_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from diffsep.cli import app
    from diffsep.loading import load_model

    speech, valid = _make_data(tmp_path)
    backbone = TINY_MODEL.backbone
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "[model]\nsample_rate = 8000\n"
        "[model.stft]\nn_fft = 62\nhop_length = 16\nframe_multiple = 4\n"
        f"[model.backbone]\nnf = {backbone.nf}\nch_mult = [1, 2]\nnum_res_blocks = 1\n"
        "attn_resolutions = []\nimage_size = 32\n"
        f'[data]\ntrain = "{speech}"\nvalid = "{valid}"\nepoch_length = 4\n'
        "[optim]\nbatch_size = 2\nsegment_seconds = 0.1\nsteps = 2\n"
        "[valid]\nevery = 2\nnum_mixtures = 1\nseconds = 0.2\nsampler_steps = 2\n"
        '[output]\ndir = "run"\n'
    )
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(cfg), "--set", "optim.steps=3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert json.loads((run / "train_config.json").read_text())["optim"]["steps"] == 3
    assert latest_checkpoint_name(run) == "step-00000003"
    result = runner.invoke(app, ["export", str(run), str(tmp_path / "model"), "--fp32"])
    assert result.exit_code == 0, result.output
    exported = load_model(tmp_path / "model", device="cpu").config
    assert exported.backbone.nf == backbone.nf
    # the exported model's default window is the training crop, unless the config sets one
    assert exported.sampler.segment_seconds == 0.1
    assert "- window: 0.1 s" in (tmp_path / "model" / "README.md").read_text()
    result = runner.invoke(app, ["train", str(cfg), "--set", f"output.dir={tmp_path / 'win'}",
                                 "--set", "optim.steps=1", "--set", "valid.every=0",
                                 "--set", "model.sampler.segment_seconds=0.5"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(tmp_path / "win"), str(tmp_path / "win-model")])
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "win-model", device="cpu").config.sampler.segment_seconds == 0.5
    result = runner.invoke(app, ["train", str(cfg), "--set", "optim.lr=-1"])
    assert result.exit_code == 1 and "optim.lr" in result.output
    result = runner.invoke(app, ["train", "--set", f"output.dir={tmp_path / 'none' / 'run'}"])
    assert result.exit_code == 1 and "--set data.train=PATH" in result.output
    assert not (tmp_path / "none").exists()  # a run that never started leaves no folders
    # fine-tuning from the exported model folder: a new run starts from its weights
    result = runner.invoke(app, ["train", str(cfg), "--set", f"output.dir={tmp_path / 'tuned'}", "--set",
                                 "optim.steps=1", "--init-from", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert "initialised from" in (tmp_path / "tuned" / "train.log").read_text()
    # the bundled separation model is far wider than this config: one clear error
    result = runner.invoke(app, ["train", str(cfg), "--set", f"output.dir={tmp_path / 'other'}",
                                 "--init-from", "diffsep-sep-8k"])
    assert result.exit_code == 1 and "model.backbone.nf: 4 here, 16 there" in result.output
    assert latest_checkpoint_name(tmp_path / "other") == ""


@pytest.mark.slow  # trains
def test_init_from_starts_a_fresh_run_from_the_ema_weights(tmp_path: Path) -> None:
    from diffsep.train.checkpoints import latest_checkpoint, read_checkpoint

    torch.set_num_threads(1)
    base_cfg = _tiny_config(tmp_path, "base")
    _losses(base_cfg)
    _, base_state = read_checkpoint(latest_checkpoint(base_cfg.output.dir))
    # lr so small that one Adam step moves no weight by more than ~1e-12
    tuned_cfg = _tiny_config(tmp_path, "tuned", steps=1, lr=1e-12, init_from=base_cfg.output.dir)
    _losses(tuned_cfg)
    _, tuned_state = read_checkpoint(latest_checkpoint(tuned_cfg.output.dir))
    assert tuned_state["step"] == 1
    for key, value in tuned_state["model"].items():
        assert torch.allclose(value, base_state["ema"][key], atol=1e-9), key
    assert "initialised from" in (Path(tuned_cfg.output.dir) / "train.log").read_text()
    # a fresh run without init_from starts elsewhere
    fresh_cfg = _tiny_config(tmp_path, "fresh", steps=1, lr=1e-12)
    _losses(fresh_cfg)
    _, fresh_state = read_checkpoint(latest_checkpoint(fresh_cfg.output.dir))
    assert any(not torch.allclose(v, base_state["ema"][k], atol=1e-6)
               for k, v in fresh_state["model"].items())
    other_width = dataclasses.replace(
        tuned_cfg,
        model=dataclasses.replace(TINY_MODEL, backbone=dataclasses.replace(
            TINY_MODEL.backbone, nf=12)),
        output=dataclasses.replace(tuned_cfg.output, dir=str(tmp_path / "other-width")),
    )
    with pytest.raises(ConfigError, match=r"model.backbone.nf: 12 here, 4 there"):
        _losses(other_width)
    # twice the width: the weights are widened and the network computes the same function
    wider = dataclasses.replace(
        other_width,
        model=dataclasses.replace(TINY_MODEL, backbone=dataclasses.replace(
            TINY_MODEL.backbone, nf=8)),
        output=dataclasses.replace(tuned_cfg.output, dir=str(tmp_path / "wider")),
    )
    _losses(wider)
    _, wider_state = read_checkpoint(latest_checkpoint(wider.output.dir))
    narrow_net, wide_net = ScoreModel(TINY_MODEL).eval(), ScoreModel(wider.model).eval()
    narrow_net.load_state_dict(base_state["ema"])
    wide_net.load_state_dict(wider_state["model"])
    assert sum(p.numel() for p in wide_net.parameters()) > 3 * sum(
        p.numel() for p in narrow_net.parameters())
    x, t = 0.1 * torch.randn(2, 2, 1600), torch.tensor([1.0, 0.3])
    with torch.no_grad():
        expected = narrow_net(x, t, x.sum(1, keepdim=True), output="sources")
        got = wide_net(x, t, x.sum(1, keepdim=True), output="sources")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert "widened to twice its channels" in (tmp_path / "wider" / "train.log").read_text()
    # another parameterisation or STFT: every tensor fits, so a warm start, said in the log
    warm = dataclasses.replace(
        tuned_cfg,
        model=dataclasses.replace(TINY_MODEL, parameterisation="data_skip", stft=dataclasses.replace(
            TINY_MODEL.stft, hop_length=8)),
        output=dataclasses.replace(tuned_cfg.output, dir=str(tmp_path / "warm")),
    )
    _losses(warm)
    _, warm_state = read_checkpoint(latest_checkpoint(warm.output.dir))
    for key, value in warm_state["model"].items():
        assert torch.allclose(value, base_state["ema"][key], atol=1e-9), key
    log = (Path(warm.output.dir) / "train.log").read_text()
    assert "as a warm start (model.stft.hop_length: 8 here, 16 there; " in log
    assert "model.parameterisation: 'data_skip' here, 'score' there)" in log


def test_training_card_says_objective_parameterisation_and_starting_weights(tmp_path: Path) -> None:
    from diffsep.train.export import training_card

    plain = _tiny_config(tmp_path, "plain")
    card = training_card(plain, 12, None)
    assert "for 12 steps" in card and "score matching" in card
    assert "parameterised as `score`" in card and "started from" not in card
    tuned = dataclasses.replace(
        plain,
        model=dataclasses.replace(TINY_MODEL, parameterisation="data_skip"),
        optim=dataclasses.replace(plain.optim, objective="sisdr",
                                  init_from=str(tmp_path / "runs" / "stage-1")),
    )
    card = training_card(tuned, 12, None)
    assert "PIT SI-SDR on the source estimates" in card and "`data_skip`" in card
    assert "started from the weights of `stage-1`" in card and str(tmp_path) not in card
    hub = dataclasses.replace(tuned, optim=dataclasses.replace(tuned.optim, init_from="me/model"))
    assert "started from the weights of `me/model`" in training_card(hub, 12, None)
    assert "Adam lr 0.001," in card
    enh = dataclasses.replace(
        tuned,
        model=dataclasses.replace(tuned.model, task="enhancement"),
        optim=dataclasses.replace(tuned.optim, lr=3e-4, lr_drops=((1500, 1e-4),)),
    )
    card = training_card(enh, 12, None)
    assert "SI-SDR of the speech estimate" in card and "PIT" not in card
    assert "Adam lr 0.0003, 0.0001 after step 1500," in card


def latest_checkpoint_name(run: Path) -> str:
    from diffsep.train.checkpoints import latest_checkpoint

    found = latest_checkpoint(run)
    return found.name if found else ""


@pytest.mark.slow  # trains
def test_sigterm_writes_a_checkpoint_and_the_run_resumes(tmp_path: Path) -> None:
    import signal

    from diffsep.train.checkpoints import latest_checkpoint
    from diffsep.train.loop import TrainHooks, train

    config = _tiny_config(tmp_path, "signal", steps=5)
    config = dataclasses.replace(config, valid=dataclasses.replace(config.valid, every=0))

    def on_step(info: object) -> None:
        if info.step == 2:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    result = train(config, device="cpu", hooks=TrainHooks(on_step=on_step))
    assert result.status == "interrupted" and result.step == 2
    assert latest_checkpoint(config.output.dir).name == "step-00000002"
    assert signal.getsignal(signal.SIGTERM) is before  # our handler is gone again
    resumed = train(config, device="cpu")
    assert resumed.status == "finished" and resumed.step == 5
    assert "resumed from" in (Path(config.output.dir) / "train.log").read_text()


@pytest.mark.slow  # trains
def test_loader_worker_processes_draw_the_same_batches(tmp_path: Path) -> None:
    # GPU runs read and mix audio in `data.num_workers` spawned processes: the items depend on
    # (seed, epoch, index) only, so the run is the same as with in-process loading
    torch.set_num_threads(1)
    in_process, _ = _losses(_tiny_config(tmp_path, "workers-0"))
    config = _tiny_config(tmp_path, "workers-2")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=2))
    with_workers, result = _losses(config)
    assert result.status == "finished" and len(with_workers) == 4
    assert with_workers == in_process


@pytest.mark.slow  # trains
def test_enhancement_run(tmp_path: Path) -> None:
    from diffsep.loading import load_model

    rng = np.random.default_rng(1)
    speech, _ = _make_data(tmp_path)
    noise = tmp_path / "noise" / "train"
    noise.mkdir(parents=True)
    sf.write(noise / "n0.wav", (0.05 * rng.standard_normal(RATE // 2)).astype(np.float32), RATE)
    valid = tmp_path / "valid-enh"
    for folder in ("noisy", "clean"):
        (valid / folder).mkdir(parents=True)
    clean = _tone(rng, 0.3)
    sf.write(valid / "clean" / "a.wav", clean, RATE)
    sf.write(
        valid / "noisy" / "a.wav",
        clean + 0.05 * rng.standard_normal(clean.size).astype(np.float32),
        RATE,
    )
    model = dataclasses.replace(
        TINY_MODEL, task="enhancement", sde=SDEConfig(kind="prior_mix", avg_len=31)
    )
    config = dataclasses.replace(
        _tiny_config(tmp_path, "enh", steps=2, p_T=0.5),
        model=model,
        data=DataConfig(
            kind="dynamic",
            train=str(speech),
            noise=str(tmp_path / "noise"),
            valid=str(valid),
            epoch_length=4,
        ),
        valid=ValidConfig(every=2, num_mixtures=1, seconds=0.25, sampler_steps=2),
    )
    from diffsep.train.loop import train

    result = train(config, device="cpu")
    assert result.status == "finished" and set(result.validation) == {"si_sdr", "si_sdri", "si_sdr_T", "si_sdri_T"}
    assert all(math.isfinite(v) for v in result.validation.values())
    loaded = load_model(result.export, device="cpu")
    assert loaded.config.task == "enhancement" and loaded.config.sde.kind == "prior_mix"


def test_mixed_precision_backbone_keeps_the_stft_in_float32() -> None:
    # what bf16 autocast does on CUDA, exercised with CPU autocast
    from diffsep.nn.score_model import ScoreModel

    torch.manual_seed(0)
    network = ScoreModel(TINY_MODEL)
    xt, mix = torch.randn(2, 2, 300), torch.randn(2, 1, 300)
    t = torch.tensor([0.2, 0.9])
    reference = network(xt, t, mix)
    network.backbone_dtype = torch.bfloat16
    mixed = network(xt, t, mix)
    assert mixed.dtype == torch.float32 and mixed.shape == reference.shape
    error = (mixed - reference).detach().norm() / reference.detach().norm()
    assert 0 < float(error) < 0.05
    mixed.square().mean().backward()
    trained = [p for p in network.parameters() if p.requires_grad]
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in trained)


@pytest.mark.slow  # trains
def test_data_prediction_run_with_curriculum_and_one_shot_validation(tmp_path: Path) -> None:
    from diffsep.loading import load_model
    from diffsep.model import sample_windows

    config = _tiny_config(tmp_path, "data", objective="sisdr", score_weight=0.1,
                          curriculum_steps=2, t_skew=2.0)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(TINY_MODEL, parameterisation="data"),
        valid=dataclasses.replace(config.valid, sampler=False),
    )
    losses, result = _losses(config)
    assert result.status == "finished" and len(losses) == 4
    assert all(math.isfinite(x) for x in losses)
    assert set(result.validation) == {"si_sdr_T", "si_sdri_T"}  # no sampler run
    run = Path(config.output.dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    cpu_seconds = [r["train_cpu_s"] for r in records]  # CPU time of the training steps so far
    assert cpu_seconds == sorted(cpu_seconds) and cpu_seconds[-1] > 0
    model = load_model(result.export, device="cpu")
    assert model.config.parameterisation == "data"
    card = (Path(result.export) / "README.md").read_text()
    assert "one-call estimate at t = T only" in card and "steps)" not in card
    est = sample_windows(model, torch.randn(2, 1, 400) * 0.1, [0, 1], model.config.sampler)
    assert est.shape == (2, 2, 400) and bool(torch.isfinite(est).all())


@pytest.mark.slow  # trains
def test_whole_file_validation_scores_what_the_exported_model_separates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import diffsep
    from diffsep.metrics import pit_si_sdr, si_sdr

    config = _tiny_config(tmp_path, "whole")
    config = dataclasses.replace(
        config,
        valid=dataclasses.replace(config.valid, every=1, num_mixtures=0, whole_files=2,
                                  whole_every=3, seed=5),
        output=dataclasses.replace(config.output, export_dtype="float32"),
    )
    _, result = _losses(config)
    run = Path(config.output.dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [3, 4]  # whole files only: every third step, the last
    assert set(result.validation) == {"si_sdr_whole", "si_sdri_whole"}
    # the exported model (step 4's EMA weights) through the public API gives the same numbers
    model = diffsep.load_model(result.export, device="cpu")
    assert model.config.sampler.segment_seconds == config.optim.segment_seconds
    gains = []
    for name in ("v0.wav", "v1.wav"):
        mix, rate = sf.read(tmp_path / "valid" / "mix" / name, dtype="float32")
        refs = np.stack([sf.read(tmp_path / "valid" / s / name, dtype="float32")[0]
                         for s in ("s1", "s2")])
        est = diffsep.separate(model, mix, rate, seed=5)
        _, per_source = pit_si_sdr(refs, est)
        gains.append(float((per_source - si_sdr(refs, mix[None, :])).mean()))
    assert valid[-1]["si_sdri_whole"] == pytest.approx(np.mean(gains), abs=1e-3)
    # recipes/validate_run.py ranks checkpoints by the same numbers
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "recipes" / "validate_run.py"
    spec = importlib.util.spec_from_file_location("validate_run", script)
    validate_run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validate_run)
    validate_run.main([str(run), "--whole", "2", "--seed", "5"])
    line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert line["step"] == 4 and line["train_cpu_min"] is not None
    assert line["si_sdri_whole"] == pytest.approx(valid[-1]["si_sdri_whole"], abs=1e-3)
    with pytest.raises(ConfigError, match="whole_files"):
        load_train_config(None, ["valid.whole_files=-1"])
    with pytest.raises(ConfigError, match="multiple of valid.every"):
        load_train_config(None, ["valid.every=25", "valid.whole_every=60"])


@pytest.mark.slow  # trains
def test_cpu_budget_pauses_the_run_with_a_last_validation(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, "budget", cpu_minutes=1e-6, steps=50)
    config = dataclasses.replace(config, valid=dataclasses.replace(config.valid, every=10))
    losses, result = _losses(config)
    assert result.status == "paused" and result.step == 1 and len(losses) == 1
    records = [json.loads(line)
               for line in (Path(config.output.dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [1]
    # the same run resumed with a larger budget: the CPU count goes on from where it was
    from diffsep.train.checkpoints import latest_checkpoint, read_checkpoint

    _, paused_state = read_checkpoint(latest_checkpoint(config.output.dir))
    paused_cpu = paused_state["train_cpu_s"]
    assert paused_cpu > 0
    more = dataclasses.replace(config, optim=dataclasses.replace(config.optim, cpu_minutes=0.0,
                                                                 steps=3))
    _, finished = _losses(more)
    assert finished.status == "finished" and finished.step == 3
    _, final_state = read_checkpoint(latest_checkpoint(config.output.dir))
    assert final_state["train_cpu_s"] > paused_cpu  # not restarted from zero
    records = [json.loads(line)
               for line in (Path(config.output.dir) / "metrics.jsonl").read_text().splitlines()]
    cpu = [r["train_cpu_s"] for r in records]
    assert cpu == sorted(cpu)
    with pytest.raises(ConfigError, match="cpu_minutes"):
        load_train_config(None, ["optim.cpu_minutes=-1"])


@pytest.mark.slow  # trains
def test_a_budget_pause_on_a_validation_step_still_scores_the_whole_files(tmp_path: Path) -> None:
    config = _tiny_config(tmp_path, "budget-whole", cpu_minutes=1e-6, steps=50)
    config = dataclasses.replace(config, valid=dataclasses.replace(
        config.valid, every=1, num_mixtures=1, whole_files=1, whole_every=10))
    _, result = _losses(config)
    assert result.status == "paused" and result.step == 1  # step 1: a validation, whole not due
    records = [json.loads(line)
               for line in (Path(config.output.dir) / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert len(valid) == 1 and {"si_sdri_T", "si_sdri_whole"} <= set(valid[0])


def test_enhancement_si_sdr_loss_scores_the_speech_only() -> None:
    g = torch.Generator().manual_seed(3)
    speech, noise = torch.randn(2, 1, 500, generator=g), torch.randn(2, 1, 500, generator=g)
    sources = torch.cat([speech, noise], dim=1)
    estimates = torch.cat([speech + 0.1 * noise, 5.0 * noise.flip(-1)], dim=1)  # noise way off
    both, _ = pit_si_sdr_loss(estimates, sources, permutation_invariant=False)
    speech_only, order = pit_si_sdr_loss(estimates, sources, permutation_invariant=False,
                                         scored=1)
    assert torch.allclose(speech_only, -si_sdr(estimates[:, 0], speech[:, 0]))
    assert bool((speech_only < both).all()) and order.tolist() == [[0, 1], [0, 1]]
