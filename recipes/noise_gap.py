#!/usr/bin/env python3
"""How much an enhancement model loses on voices and noises it has not trained on.

    python recipes/noise_gap.py models/enh-16k data/corpus --count 300

Mixes 2 s crops of the corpus's recorded voices with its recorded noise (rows of
``CORPUS/manifest.csv`` with ``recorded == "yes"``; recipes/make_corpus.py), in four cells:
speech from the ``train`` or ``valid`` split crossed with noise from the ``train`` or ``valid``
split, ``--count`` mixtures each, drawn as training draws them (DynamicMixingDataset, SNR
-5..20 dB, seed ``--seed``, the same draws for every model). Prints the mean SI-SDRi of the
model's default estimate (``diffsep.enhance``, ``--sampler-seed``) per cell with its standard
error: a model trained on the train split that does much better on the train noise than on
the valid noise, with the speakers' split making little difference, is short of noise variety
rather than of voices.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus.report import is_recorded, read_csv, write_csv  # noqa: E402

SPLITS = ("train", "valid")


def recorded_rows(rows: Sequence[dict[str, str]], kind: str, split: str) -> list[dict[str, str]]:
    """The manifest rows of ``kind`` (speech or noise) and ``split`` marked ``recorded``."""
    return [r for r in rows if r["kind"] == kind and r["split"] == split and is_recorded(r)]


def write_manifest(path: Path, rows: Sequence[dict[str, str]], root: Path) -> Path:
    """``rows`` as a manifest CSV at ``path`` with absolute paths (under ``root``)."""
    write_csv(path, [{**r, "path": str((root / r["path"]).resolve())} for r in rows])
    return path


def mean_and_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (0 for fewer than two values)."""
    from diffsep.metrics import mean_confidence_interval

    mean, _, std, n = mean_confidence_interval(values)
    return mean, std / n**0.5 if n > 1 else 0.0


def cell_improvements(model, speech: Path, noise: Path, count: int, seed: int,
                      sampler_seed: int, seconds: float, steps: int | None = None) -> list[float]:
    """SI-SDRi (dB) of the model's speech estimate (``steps``: its sampler's, or the model's
    default) on ``count`` crops of ``seconds``."""
    import diffsep
    from diffsep.metrics import si_sdr_improvement
    from diffsep.train.data import DynamicMixingDataset

    rate = model.config.sample_rate
    dataset = DynamicMixingDataset(speech, noise, task="enhancement", sample_rate=rate,
                                   segment_seconds=seconds, epoch_length=count, seed=seed)
    improvements = []
    for index in range(count):
        mix, sources = dataset[index]
        noisy, clean = mix[0].numpy(), sources[0].numpy()
        if not np.any(clean):
            continue  # a crop of silence: SI-SDR undefined
        estimate = diffsep.enhance(model, noisy, rate, seed=sampler_seed, steps=steps)
        improvements.append(float(si_sdr_improvement(clean, estimate, noisy)))
    return improvements


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="enhancement model (folder, bundled name, ...)")
    p.add_argument("corpus", type=Path, help="corpus folder with manifest.csv")
    p.add_argument("--count", type=int, default=300, help="mixtures per cell")
    p.add_argument("--seconds", type=float, default=2.0, help="crop length")
    p.add_argument("--seed", type=int, default=7, help="seed of the mixtures")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = args.corpus / "manifest.csv"
    if not manifest.is_file():
        print(f"noise_gap: {manifest}: no such manifest", file=sys.stderr)
        return 2
    rows = read_csv(manifest)
    cells = {(kind, split): recorded_rows(rows, kind, split)
             for kind in ("speech", "noise") for split in SPLITS}
    empty = [f"{split} {kind}" for (kind, split), found in cells.items() if not found]
    if empty:
        print(f"noise_gap: {manifest}: no recorded {', '.join(empty)}", file=sys.stderr)
        return 2
    from diffsep.loading import load_model

    model = load_model(args.model, "enhancement", "cpu")
    print(f"{args.model}: SI-SDRi of {args.count} crops of {args.seconds:g} s per cell "
          "(recorded voices, recorded noise)")
    with tempfile.TemporaryDirectory() as folder:
        paths = {key: write_manifest(Path(folder) / f"{key[0]}-{key[1]}.csv", found,
                                     args.corpus)
                 for key, found in cells.items()}
        for speech_split in SPLITS:
            for noise_split in SPLITS:
                values = cell_improvements(model, paths["speech", speech_split],
                                           paths["noise", noise_split], args.count, args.seed,
                                           args.sampler_seed, args.seconds, args.steps)
                mean, error = mean_and_error(values)
                print(f"speech {speech_split:5s} x noise {noise_split:5s}: {mean:+6.2f} dB "
                      f"(se {error:.2f}, n {len(values)})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
