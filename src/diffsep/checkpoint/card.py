"""Model cards: the README.md (Hugging Face front matter) stored beside a model's weights."""

from __future__ import annotations

from diffsep.config import (
    ModelConfig,
    SamplerConfig,
    model_segment_seconds,
)


def model_card(
    config: ModelConfig,
    *,
    title: str | None = None,
    description: str | None = None,
    source: str | None = None,
) -> str:
    """A Hugging Face model card (README.md with YAML front matter) for a DiffSep model."""
    task_tag = "speech-separation" if config.task == "separation" else "speech-enhancement"
    rate_khz = f"{config.sample_rate / 1000:g} kHz"
    title = title or f"DiffSep {config.task} model ({rate_khz})"
    what = (
        f"separates a single-channel mixture into {config.num_sources} speakers"
        if config.task == "separation"
        else "separates noisy speech into clean speech and noise"
    )
    lines = [
        "---",
        "library_name: diffsep",
        "license: mit",
        "pipeline_tag: audio-to-audio",
        "tags:",
        "  - audio",
        "  - speech",
        f"  - {task_tag}",
        "  - diffusion",
        "  - score-based",
        "---",
        "",
        f"# {title}",
        "",
        description or f"A DiffSep score-based diffusion model that {what}.",
        "",
        "## Settings",
        "",
        f"- task: {config.task}, {config.num_sources} outputs",
        f"- sample rate: {config.sample_rate} Hz",
        (
            f"- SDE: {config.sde.kind} (gamma {config.sde.gamma:g}, "
            f"sigma {config.sde.sigma_min:g}..{config.sde.sigma_max:g})"
        ),
        f"- sampler: {_sampler_line(config.sampler)}",
        f"- window: {model_segment_seconds(config):g} s (the default --segment)",
        f"- network: NCSN++ with nf={config.backbone.nf}, output `{config.parameterisation}`",
        "",
    ]
    if source:
        lines += ["## Provenance", "", source, ""]
    lines += [
        "## Usage",
        "",
        "```sh",
        "pip install diffsep",
        f"diffsep {'separate' if config.task == 'separation' else 'enhance'} --model <this repo> input.wav",
        "```",
        "",
        "## Citation",
        "",
        (
            "R. Scheibler, Y. Ji, S.-W. Chung, J. Byun, S. Choe, M.-S. Choi, "
            '"Diffusion-based generative speech source separation", ICASSP 2023.'
        ),
        "",
    ]
    return "\n".join(lines)


def _sampler_line(sampler: SamplerConfig) -> str:
    """The default sampler in words, with its network calls per window and its settings."""
    from diffsep.sampling import describe_sampler

    line = describe_sampler(sampler)
    if sampler.method == "pc":
        line += f", snr {sampler.snr:g}, {sampler.corrector_steps} corrector step(s)"
    return line + f", t_eps {sampler.t_eps:g}"
