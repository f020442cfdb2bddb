"""The ``diffsep`` command line: Typer commands only; the work lives in the library modules.

Errors a user can cause are :class:`~diffsep.errors.DiffsepError`; they become one line on
stderr and a non-zero exit status. Data (``--json``) goes to stdout, everything else to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from diffsep import __version__
from diffsep.config import DEFAULT_OVERLAP, Task
from diffsep.errors import DiffsepError

if TYPE_CHECKING:
    from rich.table import Table
    from typing_extensions import Self

    from diffsep.evaluate import EvalPlan, EvalSettings, Summary
    from diffsep.model import DiffSepModel
    from diffsep.separator import FileJob, FileResult
    from diffsep.settings import RunSettings


app = typer.Typer(
    name="diffsep",
    help="Speech separation and enhancement with score-based diffusion (DiffSep).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

stderr = Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr; return the Exit to raise."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"diffsep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Print the version and exit."),
    ] = None,
) -> None:
    """Speech separation and enhancement with score-based diffusion (DiffSep)."""


# --------------------------------------------------------------------------------------------
# separate / enhance
# --------------------------------------------------------------------------------------------


class OutputFormat(str, Enum):
    wav = "wav"
    flac = "flac"


_SAMPLER_HELP = "Sampler"
_WINDOW_HELP = "Long files"
_OUTPUT_HELP = "Output"

Inputs = Annotated[
    list[str],
    typer.Argument(
        help="Audio files, folders (searched recursively) or glob patterns such as "
        "'noisy/**/*.flac'. Any format libsndfile reads, at any sample rate.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m",
                 help="Bundled model name (see `diffsep models`), Hugging Face repo id "
                 "(e.g. fakufaku/diffsep; downloaded once, then cached), local model folder "
                 "or checkpoint file. \\[default: the bundled model for the task]",
                 show_default=False),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.",
                                      rich_help_panel=_OUTPUT_HELP)]
SamplerOpt = Annotated[
    Optional[str],
    typer.Option("--sampler",
                 help="Sampler: pc (the reference predictor-corrector, steps x (1 + "
                 "corrector-steps) network calls), or a probability-flow ODE solver: euler "
                 "(steps calls), heun (2 x steps - 1), ddim (steps). \\[default: the model's, pc]",
                 show_default=False, rich_help_panel=_SAMPLER_HELP),
]
StepsOpt = Annotated[
    Optional[int],
    typer.Option("--steps", "-N", min=1,
                 help="Points of the sampler's time grid; the network calls they cost depend on "
                 "--sampler (reported in the header and in --json). \\[default: the model's, 30]",
                 show_default=False, rich_help_panel=_SAMPLER_HELP),
]
TauOpt = Annotated[
    Optional[float],
    typer.Option("--tau",
                 help="Start the sampler at this time in (t_eps, 1) from the network's own "
                 "estimate at t = 1 (one more network call) instead of from pure noise at t = 1. "
                 "\\[default: the model's, off]", show_default=False, rich_help_panel=_SAMPLER_HELP),
]
GridRhoOpt = Annotated[
    Optional[float],
    typer.Option("--grid-rho",
                 help="Spacing of the time grid: 1 is uniform, larger values take shorter steps "
                 "near the end. \\[default: the model's, 1]", show_default=False,
                 rich_help_panel=_SAMPLER_HELP),
]
TEpsOpt = Annotated[
    Optional[float],
    typer.Option("--t-eps",
                 help="Time in (0, 1) at which the sampler stops and takes the network's final "
                 "estimate. \\[default: the model's, 0.03]", show_default=False,
                 rich_help_panel=_SAMPLER_HELP),
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision",
                 help="Precision of the network's backbone: fp32, bf16 (CPUs with AVX-512 BF16 "
                 "or AMX, recent GPUs) or fp16 (CUDA only). The STFT and the sampler stay fp32.",
                 rich_help_panel=_SAMPLER_HELP),
]
CompileOpt = Annotated[
    bool,
    typer.Option("--compile", help="Compile the network with torch.compile (needs a C++ "
                 "compiler on the CPU, Triton on CUDA); pays off on long runs.",
                 rich_help_panel=_SAMPLER_HELP),
]
SnrOpt = Annotated[
    Optional[float],
    typer.Option("--snr", min=0.0, help="Step size of the annealed Langevin corrector. "
                 "\\[default: the model's, 0.5]", show_default=False,
                 rich_help_panel=_SAMPLER_HELP),
]
CorrectorOpt = Annotated[
    Optional[int],
    typer.Option("--corrector-steps", min=0, help="Corrector steps per diffusion step. "
                 "\\[default: the model's, 1]", show_default=False,
                 rich_help_panel=_SAMPLER_HELP),
]
DenoiseOpt = Annotated[
    Optional[bool],
    typer.Option("--denoise/--no-denoise",
                 help="Return the noise-free mean of the last step. \\[default: the model's, on]",
                 show_default=False, rich_help_panel=_SAMPLER_HELP),
]
SeedOpt = Annotated[
    Optional[int],
    typer.Option("--seed", min=0, max=2**31 - 1,
                 help="Random seed: the same seed and settings give the same output, whatever "
                 "the batch size. \\[default: random, reported in --json]", show_default=False,
                 rich_help_panel=_SAMPLER_HELP),
]
SegmentOpt = Annotated[
    Optional[float],
    typer.Option("--segment", min=0.1,
                 help="Window length in seconds; rounded to the nearest length the network "
                 "processes without padding (~1 s steps at 8 kHz). \\[default: the model's "
                 "window (its training crop), 4 s for models that do not set one]",
                 show_default=False, rich_help_panel=_WINDOW_HELP),
]
OverlapOpt = Annotated[
    float,
    typer.Option("--overlap", min=0.0, max=0.9,
                 help="Overlap between windows, as a fraction of the window.",
                 rich_help_panel=_WINDOW_HELP),
]
BatchOpt = Annotated[
    Optional[int],
    typer.Option("--batch-size", "-b", min=1,
                 help="Windows (from one or many files) per network call. "
                 "\\[default: 1 on CPU, 8 on CUDA]", show_default=False,
                 rich_help_panel=_WINDOW_HELP),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", "-d", help="auto, cpu, cuda or cuda:N (auto: CUDA if available)."),
]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option("--threads", "-j", min=1,
                 help="CPU threads for the network. On a busy machine fewer threads than cores "
                 "is much faster. \\[default: PyTorch's, the number of cores]",
                 show_default=False),
]
ChannelsOpt = Annotated[
    str,
    typer.Option("--channels",
                 help="Multi-channel input: 'mix' downmixes to mono, 'first' or a 0-based "
                 "index takes one channel, 'each' processes every channel separately and "
                 "writes multi-channel outputs."),
]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="Output file format.", rich_help_panel=_OUTPUT_HELP),
]
FlacOpt = Annotated[bool, typer.Option("--flac", help="Same as --format flac.",
                                       rich_help_panel=_OUTPUT_HELP)]
Int24Opt = Annotated[bool, typer.Option("--int24", help="Write 24-bit integer samples "
                                        "\\[default: 16-bit].", rich_help_panel=_OUTPUT_HELP)]
Float32Opt = Annotated[bool, typer.Option("--float32", help="Write 32-bit float samples "
                                          "(never clipped).", rich_help_panel=_OUTPUT_HELP)]
ModelRateOpt = Annotated[
    bool,
    typer.Option("--model-rate", help="Write outputs at the model's sample rate instead of "
                 "the input's.", rich_help_panel=_OUTPUT_HELP),
]
FilenameOpt = Annotated[
    Optional[str],
    typer.Option("--filename",
                 help="Output name template inside the output folder. Variables: {track} "
                 "(input name without extension), {trackext}, {stem} (s1, s2, ... or "
                 "'enhanced'), {k} (1-based source index), {ext}, {parent} (input sub-folder "
                 "below a folder given as input). \\[default: '{stem}/{parent}/{track}.{ext}' "
                 "for separate, '{parent}/{track}.{ext}' for enhance]",
                 show_default=False, rich_help_panel=_OUTPUT_HELP),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs "
                                            "(otherwise inputs whose outputs exist are skipped).",
                                            rich_help_panel=_OUTPUT_HELP)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no notices; "
                                        "errors are still printed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary (settings and one "
                                       "entry per file) on stdout.")]


def _file_command(task: Task, default_out: str) -> Callable[..., None]:
    """The ``separate`` / ``enhance`` command: the same options, a different default folder."""

    def command(
        inputs: Inputs,
        out: OutOpt = Path(default_out),
        model: ModelOpt = None,
        sampler: SamplerOpt = None,
        steps: StepsOpt = None,
        snr: SnrOpt = None,
        corrector_steps: CorrectorOpt = None,
        denoise: DenoiseOpt = None,
        tau: TauOpt = None,
        grid_rho: GridRhoOpt = None,
        t_eps: TEpsOpt = None,
        precision: PrecisionOpt = "fp32",
        compile: CompileOpt = False,
        seed: SeedOpt = None,
        segment: SegmentOpt = None,
        overlap: OverlapOpt = DEFAULT_OVERLAP,
        batch_size: BatchOpt = None,
        device: DeviceOpt = "auto",
        threads: ThreadsOpt = None,
        channels: ChannelsOpt = "mix",
        format: FormatOpt = OutputFormat.wav,
        flac: FlacOpt = False,
        int24: Int24Opt = False,
        float32: Float32Opt = False,
        model_rate: ModelRateOpt = False,
        filename: FilenameOpt = None,
        overwrite: OverwriteOpt = False,
        quiet: QuietOpt = False,
        json_out: JsonOpt = False,
    ) -> None:
        from diffsep import distributed
        from diffsep.audio import parse_channel_mode
        from diffsep.files import separate_files
        from diffsep.inputs import discover_inputs
        from diffsep.loading import load_model
        from diffsep.settings import output_settings, run_settings

        try:
            if int24 and float32:
                raise DiffsepError("--int24 and --float32 exclude each other")
            channel_mode = parse_channel_mode(channels)
            output = output_settings(
                ext="flac" if flac else format.value,
                sample_format="int24" if int24 else "float32" if float32 else None,
                template=filename, model_rate=model_rate, overwrite=overwrite,
            )
            if threads:
                import torch

                torch.set_num_threads(threads)
            found = discover_inputs(inputs)
            ranks = distributed.join(device)  # torchrun: one process per GPU / CPU share
            loaded = load_model(model, task, str(ranks.device))
            _check_task(loaded, task)
            settings = run_settings(
                loaded, sampler=sampler, steps=steps, snr=snr, corrector_steps=corrector_steps,
                denoise=denoise, tau=tau, grid_rho=grid_rho, t_eps=t_eps,
                seed=distributed.shared_seed(ranks, seed), segment=segment, overlap=overlap,
                batch_size=batch_size, channels=channel_mode, precision=precision,
                compile=compile,
            )
            with _ProgressReporter(stderr, quiet or not ranks.is_main, loaded,
                                   settings) as reporter:
                mine = separate_files(loaded, found, out, settings, output, reporter,
                                      owns=ranks.owns if ranks.world > 1 else None)
            summary = distributed.gather_summary(ranks, mine)
            distributed.leave(ranks)
        except DiffsepError as err:
            raise _fail(str(err))
        if summary is None:  # a rank other than 0: its files are written, rank 0 reports
            raise typer.Exit(1 if mine.count("failed") else 0)
        if json_out:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
        if summary.count("failed"):
            raise typer.Exit(1)

    return command


app.command(
    "separate",
    help="Separate speech mixtures into sources: writes OUT/s1/NAME.wav ... OUT/sK/NAME.wav.",
)(_file_command("separation", "separated"))
app.command(
    "enhance", help="Remove noise from speech recordings: writes OUT/NAME.wav for each input."
)(_file_command("enhancement", "enhanced"))


def _check_task(model: DiffSepModel, task: Task) -> None:
    if model.config.task != task:
        command = "separate" if model.config.task == "separation" else "enhance"
        raise DiffsepError(
            f"model {model.source} is a {model.config.task} model; use `diffsep {command}`"
        )


class _ProgressReporter:
    """Messages and Rich progress on stderr: one bar over windows, one over the current batch's
    network calls."""

    def __init__(self, console: Console, quiet: bool, model: DiffSepModel,
                 settings: RunSettings) -> None:
        self.console = console
        self.quiet = quiet
        self.model = model
        self.settings = settings
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet or not console.is_terminal,  # no bars (or blank lines) in logs
            transient=True,
        )
        self.windows_task = self.progress.add_task("windows", total=None)
        from diffsep.sampling import network_calls

        self.steps_task = self.progress.add_task("network calls",
                                                 total=network_calls(settings.sampler))
        self.expected_windows = 0

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def run_started(self, files: int) -> None:
        if not self.quiet:
            from diffsep.sampling import describe_sampler

            model, settings = self.model, self.settings
            self.console.print(
                f"{model.config.task} of {files} file(s) with {model.source} "
                f"({model.sample_rate} Hz, sampler {describe_sampler(settings.sampler)}, "
                f"{settings.precision}"
                f"{' compiled' if settings.compile else ''}, device {model.device}, "
                f"seed {settings.seed})", soft_wrap=True, markup=False,
            )
            from diffsep.sampling import one_call_caution

            caution = one_call_caution(model.config, settings.sampler)
            if caution:
                self.console.print(f"warning: {caution}", soft_wrap=True, markup=False)

    def file_skipped(self, result: FileResult) -> None:
        if not self.quiet:
            self.console.print(f"skipping {result.input}: {result.warnings[0]} (use --overwrite)",
                               markup=False)

    def file_started(self, job: FileJob) -> None:
        from diffsep.chunking import plan_windows

        plan = self.settings.plan
        total = round(job.result.audio_seconds * self.model.sample_rate)
        self.expected_windows += len(plan_windows(total, plan.window, plan.hop)) * job.channels
        self.progress.update(self.windows_task, total=self.expected_windows,
                             description=f"{Path(job.name).name}")

    def file_finished(self, result: FileResult) -> None:
        if result.status == "failed":
            self.console.print(f"[bold red]error:[/] {escape(str(result.error))}", soft_wrap=True)
        elif not self.quiet:
            for warning in result.warnings:
                self.console.print(f"[yellow]warning:[/] {escape(result.input)}: {escape(warning)}",
                                   soft_wrap=True)
            outputs = ", ".join(result.outputs)
            self.console.print(f"{result.input} -> {outputs}", soft_wrap=True, markup=False)

    def batch_started(self, windows: int, calls: int) -> None:
        self.progress.reset(self.steps_task, total=calls)

    def sampler_step(self, call: int, calls: int) -> None:
        self.progress.update(self.steps_task, completed=call + 1)

    def batch_finished(self, windows: int) -> None:
        self.progress.advance(self.windows_task, windows)


# --------------------------------------------------------------------------------------------
# models / convert
# --------------------------------------------------------------------------------------------


@app.command("models")
def models_(
    json_out: JsonOpt = False,
) -> None:
    """List the bundled models and known Hub models, and whether each is available offline."""
    import dataclasses

    from diffsep.hub import list_models

    infos = list_models()
    rows = [dataclasses.asdict(info) for info in infos]
    for row in rows:
        row["location"] = str(row["location"]) if row["location"] else None
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "task", "rate (Hz)", "source", "default", "available"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(row["name"], row["task"], str(row["sample_rate"]), row["source"],
                      "yes" if row["default"] else "", "yes" if row["location"] else "no")
    console = Console()
    console.print(table)
    console.print()
    for info in infos:
        card = info.location / "README.md" if info.location else None
        where = f"; card: {card}" if card and card.is_file() else ""
        console.print(f"{info.name}: {info.description}{where}", highlight=False, soft_wrap=True)


@app.command()
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="The authors' Lightning checkpoint "
                                               "(checkpoint.pt), or a folder/file of ours.",
                                               show_default=False)],
    out: Annotated[Path, typer.Argument(help="New model folder (config.json, "
                                        "model.safetensors, README.md).", show_default=False)],
    fp16: Annotated[bool, typer.Option("--fp16", help="Store the weights as float16 (half "
                                       "the size; upcast to float32 when loaded).")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert a checkpoint (e.g. the authors' fakufaku/diffsep checkpoint.pt) to our format."""
    import torch

    from diffsep.checkpoint import convert_authors_checkpoint

    try:
        folder = convert_authors_checkpoint(
            checkpoint, out, dtype=torch.float16 if fp16 else torch.float32, overwrite=overwrite
        )
    except DiffsepError as err:
        raise _fail(str(err))
    stderr.print(f"wrote {folder}")


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


class PesqMode(str, Enum):
    auto = "auto"
    nb = "nb"
    wb = "wb"


_EVAL_OUTPUT_HELP = "Reports"


@app.command("eval")
def eval_(
    ref: Annotated[Path, typer.Option(
        "--ref", "-r", show_default=False,
        help="Reference folder: s1/ ... sK/ (+ mix/), clean/ (+ noisy/), or the reference files "
        "themselves (one source).")],
    est: Annotated[Path, typer.Option(
        "--est", "-e", show_default=False,
        help="Estimates: OUT/s1/NAME.wav ... (what `diffsep separate` writes) or OUT/NAME.wav "
        "(what `diffsep enhance` writes); see --pattern for other naming.")],
    mix: Annotated[Optional[Path], typer.Option(
        "--mix", show_default=False,
        help="Folder of mixtures (NAME.wav) for SI-SDRi. \\[default: REF/mix or REF/noisy]")] = None,
    pattern: Annotated[Optional[str], typer.Option(
        "--pattern", show_default=False,
        help="Where estimate k of reference NAME is, relative to --est: {name} (or {track}), "
        "{k} (1-based), {k0} (0-based), {stem} (s1, s2, ... or 'enhanced'), {ext}; e.g. "
        "'{name}_s{k}.wav' or '{name}/{k0}.flac'. Without an extension any audio format "
        "matches. \\[default: 's{k}/{name}' for s1/ ... sK/ references, '{name}' otherwise]")] = None,
    metric_names: Annotated[Optional[str], typer.Option(
        "--metrics", "-m", show_default=False,
        help="Comma-separated: si_sdr, si_sdri, sdr, pesq, estoi, dnsmos (SIG/BAK/OVRL) or all. "
        "\\[default: every metric that can run]")] = None,
    pesq_mode: Annotated[PesqMode, typer.Option(
        "--pesq-mode",
        help="PESQ narrow-band (8 kHz) or wide-band (16 kHz); auto: nb for files below 16 kHz, "
        "else wb. Files are resampled to the PESQ rate with soxr.")] = PesqMode.auto,
    zero_mean: Annotated[bool, typer.Option(
        "--zero-mean", help="Remove each signal's mean before SI-SDR (off, like the DiffSep "
        "paper's evaluation).")] = False,
    intersection: Annotated[bool, typer.Option(
        "--intersection", help="Score only the files present on both sides instead of "
        "failing; the report says how many were left out.")] = False,
    jobs: Annotated[Optional[int], typer.Option(
        "--jobs", "-j", min=1, show_default=False,
        help="Worker processes for PESQ, ESTOI and DNSMOS (1: no pool). \\[default: CPU cores]")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the report as JSON on stdout (settings, aggregate, one entry per "
        "file); the table then goes to stderr.", rich_help_panel=_EVAL_OUTPUT_HELP)] = False,
    csv_path: Annotated[Optional[Path], typer.Option(
        "--csv", show_default=False, help="Write per-file rows and the aggregate (mean, ci95, "
        "std, n rows) as CSV.", rich_help_panel=_EVAL_OUTPUT_HELP)] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", show_default=False, help="Draw per-file distributions (one histogram per "
        "metric) to a .png/.pdf/.svg file (needs matplotlib).",
        rich_help_panel=_EVAL_OUTPUT_HELP)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Score estimates against references: SI-SDR(i), SDR, PESQ, ESTOI, DNSMOS; mean ± 95% CI.

    Files are matched by name; separated sources are matched to references by PIT on SI-SDR.
    SDR is 10·log10(|s|²/|s-ŝ|²) (no BSS-eval filter). Signals of one file are cropped to the
    shortest. PESQ, ESTOI and DNSMOS need `pip install "diffsep\\[eval]"`.
    """
    try:
        _run_eval(ref=ref, est=est, mix=mix, pattern=pattern, metric_names=metric_names,
                  pesq_mode=pesq_mode.value, zero_mean=zero_mean, intersection=intersection,
                  jobs=jobs, json_out=json_out, csv_path=csv_path, plot=plot, quiet=quiet)
    except DiffsepError as err:
        raise _fail(str(err))


def _run_eval(*, ref: Path, est: Path, mix: Optional[Path], pattern: Optional[str],
              metric_names: Optional[str], pesq_mode: str, zero_mean: bool, intersection: bool,
              jobs: Optional[int], json_out: bool, csv_path: Optional[Path], plot: Optional[Path],
              quiet: bool) -> None:
    from diffsep import evaluate as ev

    def note(message: str) -> None:
        if not quiet:
            stderr.print(f"note: {message}", soft_wrap=True, markup=False)

    def warn(message: str) -> None:
        stderr.print(f"warning: {message}", soft_wrap=True, markup=False)

    prepared = ev.prepare_evaluation(
        ref, est, mix=mix, pattern=pattern, metric_names=metric_names, pesq_mode=pesq_mode,
        zero_mean=zero_mean, intersection=intersection, csv_path=csv_path, plot_path=plot,
    )
    plan, settings = prepared.plan, prepared.settings
    for message in prepared.notes:
        note(message)
    for message in prepared.warnings:
        warn(message)

    progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=stderr,
                        disable=quiet or not stderr.is_terminal, transient=True)
    with progress:
        task = progress.add_task("scoring", total=len(plan.items))
        scores = ev.evaluate(plan, settings, jobs=jobs or ev.default_jobs(),
                             on_progress=lambda done, total: progress.update(task, completed=done))
    summary = ev.summarize(scores, settings.columns())
    for message in ev.score_warnings(scores, settings):
        warn(message)

    table = _eval_table(plan, settings, summary, len(scores))
    (stderr if json_out else Console(highlight=False)).print(table)
    if json_out:
        typer.echo(json.dumps(ev.report_dict(plan, settings, scores, summary), indent=2))
    if csv_path is not None:
        ev.write_text(csv_path, ev.csv_text(plan, settings, scores, summary))
        note(f"wrote {csv_path}")
    if plot is not None:
        ev.plot_distributions(plot, scores, summary, ev.column_labels(settings),
                              title=f"{plan.est_dir} vs {plan.ref_dir} ({len(scores)} files)")
        note(f"wrote {plot}")


def _eval_table(plan: EvalPlan, settings: EvalSettings, summary: dict[str, Summary],
                num_files: int) -> Table:
    import math

    from rich.table import Table
    from rich.text import Text

    from diffsep.evaluate import column_labels

    labels = column_labels(settings)
    sources = f", {plan.num_sources} sources (PIT)" if plan.num_sources > 1 else ""
    table = Table(title=Text(f"{num_files} files{sources}"),
                  caption=Text(f"est {plan.est_dir}\nref {plan.ref_dir}"),
                  title_justify="left", caption_justify="left")
    table.add_column("metric")
    table.add_column("mean ± 95% CI", justify="right")
    table.add_column("std", justify="right")
    table.add_column("n", justify="right")
    for column, stats in summary.items():
        digits = 3 if column == "estoi" else 2
        mean = f"{stats.mean:.{digits}f}" if math.isfinite(stats.mean) else "—"
        ci = f" ± {stats.ci95:.{digits}f}" if math.isfinite(stats.ci95) else ""
        std = f"{stats.std:.{digits}f}" if math.isfinite(stats.std) else "—"
        table.add_row(Text(labels[column]), mean + ci, std, str(stats.n))
    return table


# --------------------------------------------------------------------------------------------
# train / export
# --------------------------------------------------------------------------------------------


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(
        help="Training config, TOML, YAML (.yaml/.yml) or a run's saved train_config.json; "
        "see recipes/train-*.toml. "
        "Relative paths in it resolve against its folder. Without one, the defaults and "
        "--set values make the config.", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Option(
        "--set", "-s", show_default=False,
        help="Override a config value, e.g. --set optim.lr=1e-4 --set output.dir=runs/x "
        "(repeatable; values are TOML literals or bare strings).")] = None,
    device: DeviceOpt = "auto",
    init_from: Annotated[Optional[str], typer.Option(
        "--init-from", metavar="MODEL", show_default=False,
        help="Start a fresh run from these weights (fine-tuning): a bundled model, a model "
        "folder or file, a Hub repo id, or a training run or checkpoint folder (its EMA). "
        "Same as --set optim.init_from=MODEL; ignored when the run resumes.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume",
        help="Continue from the newest checkpoint in output.dir (--no-resume: refuse to "
        "start if one exists).")] = True,
    quiet: QuietOpt = False,
) -> None:
    """Train a DiffSep model; checkpoints, log and EMA export go to the config's output.dir.

    Multi-GPU / multi-node: `torchrun --nproc_per_node N -m diffsep train CONFIG`. Ctrl-C (or
    SIGTERM) writes a checkpoint and stops; the same command resumes.
    """
    import os

    from diffsep.train.config import load_train_config
    from diffsep.train.loop import StepInfo, TrainHooks
    from diffsep.train.loop import train as run_training

    main_rank = os.environ.get("RANK", "0") == "0"
    show = main_rank and not quiet
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=stderr,
                        disable=not show or not stderr.is_terminal)
    task_id = progress.add_task("training", total=None, info="")

    def on_start(step: int, total: int) -> None:
        progress.update(task_id, completed=step, total=total)

    def on_step(info: StepInfo) -> None:
        progress.update(task_id, completed=info.step,
                        info=f"loss {info.loss:.4f}  {info.seconds:.2f} s/step")

    def on_message(line: str) -> None:
        if show:
            progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        extra = [f"optim.init_from={json.dumps(init_from)}"] if init_from else []
        settings = load_train_config(config, [*(overrides or []), *extra])
        with progress:
            result = run_training(settings, device=device, resume=resume,
                                  hooks=TrainHooks(on_message, on_step, on_start))
    except DiffsepError as err:
        raise _fail(str(err))
    if show and result.export is not None:
        stderr.print(f"model: {result.export}", markup=False)
    if result.status == "interrupted":
        raise typer.Exit(130)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(
        help="A run folder (its newest checkpoint) or one checkpoint folder "
        "(RUN/checkpoints/step-XXXXXXXX).", show_default=False)],
    out: Annotated[Path, typer.Argument(
        help="New model folder (config.json, model.safetensors, README.md), usable with "
        "--model.", show_default=False)],
    fp16: Annotated[Optional[bool], typer.Option(
        "--fp16/--fp32", show_default=False,
        help="Store float16 (half the size) or float32 weights. \\[default: the run's "
        "output.export_dtype]")] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Export the raw weights instead of their moving average (EMA).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Export a training checkpoint's EMA weights as a model folder for separate/enhance."""
    from diffsep.train.loop import export_model

    dtype = None if fp16 is None else ("float16" if fp16 else "float32")
    try:
        folder = export_model(run, out, dtype=dtype, overwrite=overwrite, use_ema=not raw)
    except DiffsepError as err:
        raise _fail(str(err))
    stderr.print(f"wrote {folder}", markup=False)


def main() -> None:
    """Console-script entry point."""
    app()
