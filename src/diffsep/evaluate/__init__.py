"""Score a folder of estimates against a folder of references. The metrics themselves are in
:mod:`diffsep.metrics`; here: matching (:mod:`.matching`), scoring one file (:mod:`.scoring`),
many files in worker processes (:mod:`.pool`), aggregates and reports (:mod:`.reports`), and
:mod:`.run`, which puts them together for ``diffsep eval``.

Layouts
-------
Reference side (``ref_dir``), detected in this order:

* ``sources``: sub-folders ``s1/`` … ``sK/`` (K ≥ 1, numbered without gaps) holding the same
  file names, and optionally ``mix/`` (the mixtures, used for SI-SDRi), as in wsj0-2mix/LibriMix;
* ``clean``: a ``clean/`` sub-folder (VoiceBank-DEMAND style, K = 1) and optionally ``noisy/``;
* ``flat``: the audio files directly in ``ref_dir`` (K = 1).

``mix_dir`` replaces the mixture folder. Estimate side (``est_dir``): a pattern relative to it,
by default ``s{k}/{name}`` for the ``sources`` layout (what ``diffsep separate`` writes) and
``{name}`` otherwise (what ``diffsep enhance`` writes). Files are matched by name (the file
name without its extension); hidden files are ignored.

Per-file processing (one documented way)
----------------------------------------
* Every file must be mono; all files of one item (references, estimates, mixture) must share
  one sample rate — otherwise AudioError naming both files. Nothing is resampled for SI-SDR/SDR.
* Lengths: every signal of an item is cropped to the shortest one (the end is cut). Items
  whose lengths differed by more than ``LENGTH_TOLERANCE_S`` (0.1 s) are flagged in the notes.
* Separation: the estimate order is chosen per file by PIT on SI-SDR; every metric is then
  computed on the matched pairs and averaged over the K sources (a file's value is NaN if the
  metric is undefined for any of its sources).
* Aggregates are over files: mean, unbiased std and a two-sided 95% Student-t confidence
  interval of the mean; files where a metric is undefined (NaN) are left out of its n.
"""


from diffsep.evaluate.matching import (
    EstimatePattern,
    EvalItem,
    EvalPlan,
    default_pattern,
    detect_reference_layout,
    plan_evaluation,
    short_list,
)
from diffsep.evaluate.pool import default_jobs, evaluate
from diffsep.evaluate.reports import (
    CONFIDENCE_LEVEL,
    Summary,
    check_outputs,
    csv_text,
    length_mismatches,
    plot_distributions,
    report_dict,
    settings_metadata,
    summarize,
    undefined_files,
    write_text,
)
from diffsep.evaluate.run import (
    PreparedEvaluation,
    column_labels,
    prepare_evaluation,
    score_warnings,
)
from diffsep.evaluate.scoring import (
    COLUMN_LABELS,
    EXTRA_HINT,
    HEAVY_METRICS,
    LENGTH_TOLERANCE_S,
    METRIC_COLUMNS,
    METRICS,
    EvalSettings,
    FileScores,
    choose_metrics,
    parse_metric_names,
    probe_sample_rate,
    resolve_pesq_mode,
    score_item,
)

__all__ = [
    "CONFIDENCE_LEVEL", "COLUMN_LABELS", "EXTRA_HINT", "HEAVY_METRICS", "LENGTH_TOLERANCE_S",
    "METRICS", "METRIC_COLUMNS", "EstimatePattern", "EvalItem", "EvalPlan", "EvalSettings",
    "FileScores", "PreparedEvaluation", "Summary", "column_labels", "prepare_evaluation",
    "score_warnings", "check_outputs", "choose_metrics", "csv_text", "default_jobs",
    "default_pattern", "detect_reference_layout", "evaluate", "length_mismatches",
    "parse_metric_names", "plan_evaluation", "plot_distributions", "probe_sample_rate",
    "report_dict", "resolve_pesq_mode", "score_item", "settings_metadata", "short_list",
    "summarize", "undefined_files", "write_text",
]
