"""Quality against network calls (NFE) and seconds for each sampler, on a test split.

For every sampler setting, separates (or enhances) the first ``--files`` mixtures of a test
folder with the same seed and scores the estimates against the references: SI-SDRi (permutation
invariant for separation), PESQ (nb at 8 kHz, wb at 16 kHz) and ESTOI, with ``diffsep.metrics``
(the functions behind ``diffsep eval``). Prints one row per setting and its difference to the
reference setting (the first one, by default the authors' 60-NFE predictor-corrector).

    python benchmarks/bench_sampling.py --data data/corpus/sep-8k/test            # sep-8k model
    python benchmarks/bench_sampling.py --task enhancement --data data/corpus/enh-16k/test
    python benchmarks/bench_sampling.py ... --settings pc:30 heun:5 ddim:9:tau=0.5 --plot q.png

A setting is ``METHOD:STEPS[:KEY=VALUE...]`` with keys of ``SamplerConfig`` (``snr``,
``corrector_steps``, ``tau``, ``grid_rho``, ``denoise``, ``t_eps``); ``tau`` and ``grid_rho``
are off unless given, the other keys default to the model's. Test folders: ``mix/ s1/ s2/`` for
separation, ``noisy/ clean/`` for enhancement (what ``recipes/make_corpus.py`` writes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

DEFAULT_SETTINGS = [
    "pc:30",  # the reference: 60 NFE
    "pc:5",
    "pc:10:corrector_steps=0",
    "euler:10",
    "heun:3",
    "heun:5",
    "ddim:5",
    "ddim:10",
    "heun:5:tau=0.5",
    "ddim:9:tau=0.5",
]


@dataclass
class Row:
    setting: str
    nfe: int
    seconds: float  # sampling wall time over all files
    audio_seconds: float
    si_sdri: float
    pesq: float
    estoi: float
    si_sdri_per_file: list[float]


def parse_setting(text: str, base):  # -> SamplerConfig
    """``METHOD:STEPS[:KEY=VALUE...]`` -> sampler settings: the method and steps given, ``tau``
    and ``grid_rho`` off (None, 1) unless given, everything else (snr, corrector steps, t_eps,
    denoise) the model's ``base`` unless given. A model whose default starts from ``tau``
    must not turn ``pc:30`` into something other than the reference sampler."""
    from diffsep.errors import ConfigError
    from diffsep.sampling import check_sampler_settings

    parts = text.split(":")
    if len(parts) < 2:
        raise ConfigError(f"setting {text!r}: expected METHOD:STEPS[:KEY=VALUE...]")
    types = {f.name: f.type for f in fields(base)}
    changes: dict[str, object] = {"method": parts[0], "steps": int(parts[1]), "tau": None,
                                  "grid_rho": 1.0}
    for item in parts[2:]:
        key, _, value = item.partition("=")
        if key not in types or key in ("method", "steps", "segment_seconds"):
            raise ConfigError(f"setting {text!r}: unknown key {key!r}")
        if key in ("corrector_steps",):
            changes[key] = int(value)
        elif key == "denoise":
            changes[key] = value.lower() in ("1", "true", "yes")
        else:
            changes[key] = float(value)
    return check_sampler_settings(replace(base, **changes))


def load_split(folder: Path, task: str, count: int) -> list[tuple[str, Path, list[Path]]]:
    """``(name, mixture path, reference paths)`` of the first ``count`` files, sorted by name."""
    mix_dir, ref_dirs = (
        (folder / "mix", [folder / "s1", folder / "s2"])
        if task == "separation"
        else (folder / "noisy", [folder / "clean"])
    )
    for needed in (mix_dir, *ref_dirs):
        if not needed.is_dir():
            sys.exit(f"error: {needed}: no such folder (expected the test split of the recipe)")
    names = sorted(p.name for p in mix_dir.glob("*.wav"))[:count]
    if not names:
        sys.exit(f"error: {mix_dir}: no .wav files")
    return [(name, mix_dir / name, [d / name for d in ref_dirs]) for name in names]


def score(task: str, refs: np.ndarray, est: np.ndarray, mix: np.ndarray, rate: int) -> tuple:
    """(SI-SDRi, PESQ, ESTOI), averaged over the sources matched by PIT (separation) or of the
    speech estimate (enhancement). ``refs`` (K, N), ``est`` (K', N), ``mix`` (N,)."""
    from diffsep import metrics

    if task == "separation":
        perm, _ = metrics.pit_si_sdr(refs, est)
        matched = est[list(perm)]
    else:
        matched = est[:1]
    sisdri = float(np.mean(metrics.si_sdr_improvement(refs, matched, mix)))
    mode = "nb" if rate < 16000 else "wb"
    pesq, estoi = [], []
    for ref, e in zip(refs, matched):
        try:
            pesq.append(metrics.pesq_score(ref, e, rate, mode))
        except metrics.MetricUndefined:
            pass
        try:
            estoi.append(metrics.estoi_score(ref, e, rate))
        except metrics.MetricUndefined:
            pass
    return sisdri, float(np.mean(pesq)) if pesq else float("nan"), (
        float(np.mean(estoi)) if estoi else float("nan"))


def run(args: argparse.Namespace) -> dict:
    import soundfile as sf
    import torch

    from diffsep.api import separate
    from diffsep.loading import load_model
    from diffsep.sampling import network_calls

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.task, args.device)
    items = load_split(Path(args.data), args.task, args.files)
    audio = []
    for name, mix_path, ref_paths in items:
        mix, rate = sf.read(mix_path, dtype="float32")
        refs = np.stack([sf.read(p, dtype="float32")[0] for p in ref_paths])
        audio.append((name, mix, refs, rate))
    rows: list[Row] = []
    for text in args.settings:
        settings = parse_setting(text, model.config.sampler)
        scores, seconds = [], 0.0
        for _, mix, refs, rate in audio:
            started = time.perf_counter()
            est = separate(model, mix, rate, seed=args.seed, precision=args.precision,
                           batch_size=args.batch_size,
                           **{k: v for k, v in asdict(settings).items()
                              if k not in ("method", "t_eps", "segment_seconds")},
                           sampler=settings.method)
            seconds += time.perf_counter() - started
            est = est[None] if est.ndim == 1 else est
            scores.append(score(args.task, refs, est, mix, rate))
        table = np.array(scores)
        rows.append(Row(text, network_calls(settings), seconds,
                        sum(len(m) / r for _, m, _, r in audio),
                        *[float(np.nanmean(table[:, i])) for i in range(3)],
                        [round(float(v), 3) for v in table[:, 0]]))
        print(_line(rows[-1], rows[0]), file=sys.stderr, flush=True)
    return {
        "model": model.source, "task": args.task, "data": str(args.data),
        "files": [name for name, *_ in audio], "threads": args.threads, "seed": args.seed,
        "batch_size": args.batch_size,
        "precision": args.precision, "device": str(model.device),
        "rows": [asdict(row) for row in rows],
    }


def _line(row: Row, ref: Row) -> str:
    return (f"{row.setting:24s} NFE {row.nfe:3d}  {row.seconds:7.1f} s  SI-SDRi {row.si_sdri:6.2f} "
            f"({row.si_sdri - ref.si_sdri:+.2f})  PESQ {row.pesq:.3f} ({row.pesq - ref.pesq:+.3f})"
            f"  ESTOI {row.estoi:.3f} ({row.estoi - ref.estoi:+.3f})")


def markdown(report: dict) -> str:
    """The rows as a Markdown table with differences to the first (reference) row."""
    rows = report["rows"]
    ref = rows[0]
    lines = ["| setting | NFE | s / audio s | SI-SDRi (dB) | Δ | PESQ | Δ | ESTOI | Δ |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| `{r['setting']}` | {r['nfe']} | {r['seconds'] / r['audio_seconds']:.2f} | "
            f"{r['si_sdri']:.2f} | {r['si_sdri'] - ref['si_sdri']:+.2f} | {r['pesq']:.3f} | "
            f"{r['pesq'] - ref['pesq']:+.3f} | {r['estoi']:.3f} | {r['estoi'] - ref['estoi']:+.3f} |"
        )
    return "\n".join(lines)


def plot(reports: list[dict], path: Path) -> None:
    """SI-SDRi and PESQ against NFE and against seconds per audio second, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(reports) * 2, 2, figsize=(10, 4.2 * len(reports) * 2),
                             squeeze=False)
    for r_index, report in enumerate(reports):
        for m_index, (metric, label) in enumerate((("si_sdri", "SI-SDRi (dB)"),
                                                   ("pesq", "PESQ"))):
            row_axes = axes[2 * r_index + m_index]
            for x_key, ax in zip(("nfe", "rtf"), row_axes):
                methods: dict[str, list] = {}
                for row in report["rows"]:
                    x = row["nfe"] if x_key == "nfe" else row["seconds"] / row["audio_seconds"]
                    method, _, *options = row["setting"].split(":")
                    key = " ".join([method, *options])  # one line per method and options
                    methods.setdefault(key, []).append((x, row[metric], row["setting"]))
                for key, points in methods.items():
                    points.sort()
                    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=key)
                    for x, y, text in points:
                        ax.annotate(text, (x, y), fontsize=6, xytext=(3, 3),
                                    textcoords="offset points")
                ax.axhline(report["rows"][0][metric], color="gray", ls="--", lw=0.8)
                ax.set_xscale("log")
                ax.set_xlabel("network calls per window (NFE)" if x_key == "nfe"
                              else "seconds per audio second (1 thread)")
                ax.set_ylabel(label)
                ax.set_title(f"{report['model']} ({report['task']}, {len(report['files'])} files)",
                             fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def merge(reports: list[dict]) -> list[dict]:
    """Reports of the same model, task, files and seed become one (rows of the first first)."""
    merged: dict[tuple, dict] = {}
    for report in reports:
        key = (report["model"], report["task"], tuple(report["files"]), report["seed"])
        if key in merged:
            known = {row["setting"] for row in merged[key]["rows"]}
            merged[key]["rows"] += [row for row in report["rows"] if row["setting"] not in known]
        else:
            merged[key] = {**report, "rows": list(report["rows"])}
    return list(merged.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the bundled one)")
    parser.add_argument("--task", choices=["separation", "enhancement"], default="separation")
    parser.add_argument("--data", help="test split folder (mix/ s1/ s2/ or noisy/ clean/)")
    parser.add_argument("--files", type=int, default=8, help="first N files, sorted by name")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS,
                        help="METHOD:STEPS[:KEY=VALUE...]; the first is the reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4,
                        help="windows per network call (results do not depend on it)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--plot", type=Path, help="PNG of quality against NFE and seconds")
    parser.add_argument("--from-json", type=Path, nargs="+",
                        help="skip the run: tabulate/plot saved reports (runs of the same "
                        "model, files and seed are merged, the first report's reference first)")
    args = parser.parse_args()
    if args.from_json:
        reports = merge([json.loads(p.read_text()) for p in args.from_json])
    else:
        if not args.data:
            parser.error("--data is required (or --from-json)")
        reports = [run(args)]
        if args.out:
            args.out.write_text(json.dumps(reports[0], indent=2))
    for report in reports:
        print(f"\n{report['model']} ({report['task']}), files: {len(report['files'])}, "
              f"threads {report['threads']}, {report['precision']}\n", file=sys.stderr)
        print(markdown(report), file=sys.stderr)
    if args.plot:
        plot(reports, args.plot)
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))


if __name__ == "__main__":
    main()
