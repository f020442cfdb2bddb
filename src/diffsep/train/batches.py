"""Training and validation datasets from a config, and the per-rank batches of each epoch.

Epochs are permutations seeded by ``(data.seed, epoch)`` and dealt round-robin to the ranks,
so a resumed run (``skip_batches``) sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from diffsep.errors import ConfigError
from diffsep.train.config import DataConfig, TrainConfig
from diffsep.train.distributed import Dist


def build_train_dataset(config: TrainConfig) -> Dataset:
    """The training dataset of ``config.data``; items ``(mix (1, N), sources (K, N))``."""
    from diffsep.train.data import (
        DynamicMixingDataset,
        MixtureFolderDataset,
        NoisySpeechFolderDataset,
    )

    data, model, seg = config.data, config.model, config.optim.segment_seconds
    if not data.train:
        raise ConfigError(
            "data.train is empty: set the training data folder in the config's [data] table "
            "or with --set data.train=PATH"
        )
    if data.kind == "dynamic":
        enhancement = model.task == "enhancement"
        return DynamicMixingDataset(
            data.train,
            data.noise if enhancement else None,
            task=model.task,
            num_sources=model.num_sources,
            sample_rate=model.sample_rate,
            segment_seconds=seg,
            snr_range=data.snr_range,
            gain_range=data.gain_range,
            level_range=data.level_range,
            epoch_length=data.epoch_length,
            seed=data.seed,
            split=data.train_split or None,
            recorded_share=data.recorded_share,
            noise_recorded_share=data.noise_recorded_share,
            speed_range=data.speed_range,
            noise_speed_range=data.noise_speed_range,
        )
    if data.kind == "mixture_folder":
        return MixtureFolderDataset(
            data.train, model.num_sources, model.sample_rate, seg, random_crop=True,
            seed=data.seed, **_mixture_folders(data),
        )
    return NoisySpeechFolderDataset(
        data.train, model.sample_rate, seg, random_crop=True, seed=data.seed,
        noisy_dir=data.noisy_dir, clean_dir=data.clean_dir,
    )


def _mixture_folders(data: DataConfig) -> dict[str, Any]:
    """The folder names of a mixture dataset: ``mix_dir`` and ``source_dirs`` (None: s1..sK)."""
    return {"mix_dir": data.mix_dir, "source_dirs": list(data.source_dirs) or None}


def build_valid_dataset(config: TrainConfig, whole: bool = False) -> Dataset | None:
    """Fixed validation items: centre crops of ``valid.seconds``, or whole files with
    ``whole``; None without ``data.valid`` or when no items of that kind are asked for."""
    from diffsep.train.data import MixtureFolderDataset, NoisySpeechFolderDataset

    data, model = config.data, config.model
    count = config.valid.whole_files if whole else config.valid.num_mixtures
    if not data.valid or count == 0:
        return None
    seconds = None if whole else config.valid.seconds
    if model.task == "enhancement":
        return NoisySpeechFolderDataset(
            data.valid, model.sample_rate, seconds, random_crop=False,
            noisy_dir=data.noisy_dir, clean_dir=data.clean_dir,
        )
    return MixtureFolderDataset(
        data.valid, model.num_sources, model.sample_rate, seconds,
        random_crop=False, **_mixture_folders(data),
    )


class ShardSampler(Sampler[int]):
    """Indices of one epoch for one rank: a permutation seeded by ``(seed, epoch)``, padded to a
    multiple of ``world`` and dealt round-robin; the first ``skip`` are left out (resume)."""

    def __init__(self, length: int, *, seed: int, epoch: int, rank: int, world: int, skip: int = 0):
        generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 0x5A17))
        order = torch.randperm(length, generator=generator).tolist()
        padded = math.ceil(length / world) * world
        while len(order) < padded:  # repeat the start so that every rank gets as many
            order += order[: padded - len(order)]
        self.indices = order[rank::world][skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def derive_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (numpy SeedSequence), stable across platforms."""
    return int(
        np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(2, np.uint64)[
            0
        ]
        >> 1
    )


def epoch_batches(
    dataset: Dataset, config: TrainConfig, ctx: Dist, epoch: int, skip_batches: int
) -> DataLoader:
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    batch = config.optim.batch_size
    sampler = ShardSampler(
        dataset_length(dataset),
        seed=config.data.seed,
        epoch=epoch,
        rank=ctx.rank,
        world=ctx.world,
        skip=skip_batches * batch,
    )
    workers = config.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        multiprocessing_context="spawn" if workers > 0 else None,
    )


def dataset_length(dataset: Dataset) -> int:
    """Items in a map-style dataset (they all define ``__len__``)."""
    return len(cast(Sized, dataset))


def batches_per_epoch(dataset: Dataset, config: TrainConfig, world: int) -> int:
    per_rank = math.ceil(dataset_length(dataset) / world)
    count = per_rank // config.optim.batch_size
    if count < 1:
        raise ConfigError(
            f"{config.data.train}: {dataset_length(dataset)} item(s) cannot fill one batch of "
            f"{config.optim.batch_size} per process ({world} process(es))"
        )
    return count
