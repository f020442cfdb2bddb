"""Model files: our Hub-layout folder (config.json + model.safetensors) and the authors' Lightning checkpoint.

Two formats are read, one is written:

- **diffsep format** (written and read; :mod:`~diffsep.checkpoint.model_files`): a folder laid
  out like a Hugging Face model repo, ``config.json`` (``ModelConfig.to_dict()``),
  ``model.safetensors`` (the ScoreModel state_dict) and ``README.md`` (model card,
  :mod:`~diffsep.checkpoint.card`); or one ``.safetensors`` file whose metadata carries the
  config.
- **authors' format** (read only; :mod:`~diffsep.checkpoint.authors`): the PyTorch Lightning
  ``.ckpt`` / ``checkpoint.pt`` written by the reference training code. It is a pickle, so it
  is read with a restricted unpickler (:mod:`~diffsep.checkpoint.unpickler`); its Hydra config
  becomes a ModelConfig (:mod:`~diffsep.checkpoint.hydra`). The EMA weights (what the
  reference uses at inference) are returned under ScoreModel state_dict names.
"""

from diffsep.checkpoint.authors import (
    AUTHORS_CHECKPOINT_SUFFIXES,
    MissingEMAWarning,
    read_authors_checkpoint,
)
from diffsep.checkpoint.card import model_card
from diffsep.checkpoint.model_files import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    convert_authors_checkpoint,
    load_model_files,
    save_model_file,
    save_model_folder,
)

__all__ = [
    "AUTHORS_CHECKPOINT_SUFFIXES",
    "CARD_NAME",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "MissingEMAWarning",
    "convert_authors_checkpoint",
    "load_model_files",
    "model_card",
    "read_authors_checkpoint",
    "save_model_file",
    "save_model_folder",
]
