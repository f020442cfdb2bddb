#!/usr/bin/env python3
"""How good is a model's one-call source estimate at each diffusion time?

    python recipes/estimate_by_time.py MODEL data/corpus/sep-8k/valid-real --mixtures 16

For each time t, draws ``x_t`` from the forward process around the *true* sources of the first
MIXTURES validation items (centre crops of ``--seconds``, normalised as in training) and asks
the network for its estimate of the sources (``output="sources"``: Tweedie's formula for a
score network). Prints, per t, the PIT SI-SDR of the estimate, that of ``x_t`` itself, and the
mean least-squares gain of the estimate on its reference (1 is the right scale), as JSON lines.
A sampler that ends at ``t_eps`` follows these estimates: where the estimate is worse than
``x_t`` itself, ending there (``--t-eps``) loses quality. Enhancement scores the speech only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_TIMES = "1.0,0.8,0.6,0.4,0.2,0.1,0.05,0.03"


def main(argv: list[str] | None = None) -> int:
    import torch

    from diffsep.loading import load_model
    from diffsep.train.data import MixtureFolderDataset, NoisySpeechFolderDataset
    from diffsep.train.loss import normalize_batch, pit_si_sdr_loss, reorder_sources

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="model folder, bundled name or Hub id")
    parser.add_argument("valid", type=Path, help="validation folder (mix/ s1/ s2/ or noisy/ clean/)")
    parser.add_argument("--mixtures", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--times", default=DEFAULT_TIMES, help="comma-separated times in (0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = load_model(args.model, device="cpu")
    enhancement = model.config.task == "enhancement"
    dataset = (
        NoisySpeechFolderDataset(args.valid, model.sample_rate, args.seconds, random_crop=False)
        if enhancement
        else MixtureFolderDataset(args.valid, model.num_sources, model.sample_rate, args.seconds,
                                  random_crop=False)
    )
    items = [dataset[i] for i in range(min(args.mixtures, len(dataset)))]
    mix = torch.stack([torch.as_tensor(m) for m, _ in items])
    sources = torch.stack([torch.as_tensor(s) for _, s in items])
    mix, sources = normalize_batch(mix, sources)
    scored = 1 if enhancement else None

    def si_sdr_and_gain(estimates: torch.Tensor) -> tuple[float, float]:
        loss, order = pit_si_sdr_loss(estimates, sources, permutation_invariant=not enhancement,
                                      scored=scored)
        matched = reorder_sources(sources, order)[:, :scored]
        estimates = estimates[:, :scored]
        gain = (estimates * matched).sum(-1) / matched.square().sum(-1)
        return -float(loss.mean()), float(gain.mean())

    with torch.no_grad():
        for t_value in (float(v) for v in args.times.split(",")):
            t = torch.full((mix.shape[0],), t_value)
            x_t = model.sde.marginal_sample(sources, t, mix, torch.randn_like(sources))
            estimate = model.network(x_t, t, mix, output="sources")
            sdr, gain = si_sdr_and_gain(estimate)
            x_sdr, _ = si_sdr_and_gain(x_t)
            print(json.dumps({"t": t_value, "estimate_si_sdr": round(sdr, 2),
                              "x_t_si_sdr": round(x_sdr, 2), "gain": round(gain, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
