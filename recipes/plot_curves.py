#!/usr/bin/env python3
"""Learning curves of training runs: validation SI-SDRi against training CPU-minutes.

    python recipes/plot_curves.py runs/cmp-A runs/cmp-B --out curves.png --table curves.md

Reads each run's ``metrics.jsonl`` (written by ``diffsep train``): ``kind == "valid"`` records
carry ``train_cpu_s`` (CPU seconds this process spent in training steps, validation excluded)
and the validation scores (``si_sdri_T``: the network's one-call estimate at t = T;
``si_sdri``: the sampler's, when it ran). Writes a PNG (needs matplotlib) and a Markdown table
of the curves at fixed CPU budgets (the last validation at or before each budget; "–"
before the first one and where the run stopped short of the budget).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_curve(run: Path, metric: str) -> list[tuple[float, int, float]]:
    """``[(cpu_minutes, step, value)]`` of the valid records of ``run`` that have ``metric``."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no metrics.jsonl (not a diffsep training run?)")
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("kind") == "valid" and metric in record and "train_cpu_s" in record:
            points.append((record["train_cpu_s"] / 60.0, int(record["step"]), record[metric]))
    return points


def value_at(points: list[tuple[float, int, float]], minutes: float) -> float | None:
    """The last value measured at or before ``minutes`` of training CPU time; None before the
    first validation, and past the run's end (more than its longest gap between validations
    after the last one: the run never trained that long)."""
    before = [value for cpu, _, value in points if cpu <= minutes + 1e-9]
    times = [0.0] + [cpu for cpu, _, _ in points]
    longest_gap = max(b - a for a, b in zip(times, times[1:])) if points else 0.0
    if not before or minutes > times[-1] + longest_gap + 1e-9:
        return None
    return before[-1]


def markdown_table(curves: dict[str, list[tuple[float, int, float]]], budgets: list[float],
                   metric: str) -> str:
    header = "| run | " + " | ".join(f"{b:g} CPU-min" for b in budgets) + " | best | steps |"
    rows = [header, "|" + " --- |" * (len(budgets) + 3)]
    for name, points in curves.items():
        cells = [value_at(points, b) for b in budgets]
        shown = ["–" if c is None else f"{c:+.2f}" for c in cells]
        best = max((v for _, _, v in points), default=None)
        steps = points[-1][1] if points else 0
        best_text = "–" if best is None else f"{best:+.2f}"
        rows.append(f"| {name} | " + " | ".join(shown) + f" | {best_text} | {steps} |")
    return "\n".join(rows) + f"\n\n({metric} in dB)\n"


def plot(curves: dict[str, list[tuple[float, int, float]]], metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in curves.items():
        ax.plot([p[0] for p in points], [p[2] for p in points], marker=".", label=name)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("training CPU-minutes")
    ax.set_ylabel(f"validation {metric} (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (name=FOLDER to label)")
    parser.add_argument("--metric", default="si_sdri_T")
    parser.add_argument("--out", type=Path, help="PNG to write")
    parser.add_argument("--table", type=Path, help="Markdown table to write (else stdout)")
    parser.add_argument("--budgets", default="2,5,10,15", help="CPU-minutes for the table")
    args = parser.parse_args(argv)
    curves = {}
    for spec in args.runs:
        name, _, folder = str(spec).rpartition("=")
        curves[name or Path(folder).name] = read_curve(Path(folder), args.metric)
    budgets = [float(b) for b in args.budgets.split(",")]
    table = markdown_table(curves, budgets, args.metric)
    if args.table:
        args.table.write_text(table, encoding="utf-8")
    else:
        sys.stdout.write(table)
    if args.out:
        plot(curves, args.metric, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
