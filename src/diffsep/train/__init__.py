"""Training: datasets (data.py); the loss and the training loop live beside them."""

from __future__ import annotations

from diffsep.train.data import (
    DynamicMixingDataset,
    MixtureFolderDataset,
    NoisySpeechFolderDataset,
    collate_padded,
)

__all__ = [
    "DynamicMixingDataset",
    "MixtureFolderDataset",
    "NoisySpeechFolderDataset",
    "collate_padded",
]
