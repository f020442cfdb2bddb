"""Input discovery and output naming (diffsep.inputs)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf

from diffsep.errors import AudioError, ConfigError
from diffsep.inputs import (
    ENHANCEMENT_TEMPLATE,
    SEPARATION_TEMPLATE,
    InputFile,
    check_template,
    default_template,
    discover_inputs,
    plan_outputs,
    render_output_name,
    stem_names,
)


def _touch_audio(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(16, np.float32), 8000)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "noisy"
    for name in ["b.wav", "a.flac", "sub/c.wav", "sub/deeper/d.WAV", "other/c.wav"]:
        _touch_audio(root / name)
    (root / "notes.txt").write_text("not audio")
    _touch_audio(root / ".hidden.wav")
    _touch_audio(root / ".cache" / "e.wav")
    _touch_audio(root / ".x.partial-1234.wav")
    return root


def _names(items: list[InputFile], root: Path) -> list[tuple[str, str]]:
    return [(item.path.relative_to(root).as_posix(), item.parent) for item in items]


# ------------------------------------------------------------------------- discovery ---------


def test_folder_is_searched_recursively_and_sorted(tree):
    found = discover_inputs([str(tree)])
    assert _names(found, tree) == [
        ("a.flac", ""),
        ("b.wav", ""),
        ("other/c.wav", "other"),
        ("sub/c.wav", "sub"),
        ("sub/deeper/d.WAV", "sub/deeper"),
    ]
    assert found[0].track == "a" and found[0].trackext == "flac"


def test_glob_patterns_including_recursive(tree):
    top = discover_inputs([str(tree / "*.wav")])
    assert _names(top, tree) == [("b.wav", "")]
    deep = discover_inputs([str(tree / "**" / "c.wav")])
    assert _names(deep, tree) == [("other/c.wav", "other"), ("sub/c.wav", "sub")]
    everything = discover_inputs([str(tree / "**" / "*")])
    assert len(everything) == 5  # audio only, hidden skipped


def test_explicit_files_keep_order_and_duplicates_are_dropped(tree):
    found = discover_inputs(
        [str(tree / "b.wav"), str(tree / "a.flac"), str(tree), str(tree / "sub" / ".." / "b.wav")]
    )
    assert _names(found, tree) == [
        ("b.wav", ""),
        ("a.flac", ""),
        ("other/c.wav", "other"),
        ("sub/c.wav", "sub"),
        ("sub/deeper/d.WAV", "sub/deeper"),
    ]


def test_explicit_file_with_any_extension_is_accepted(tree):
    found = discover_inputs([str(tree / "notes.txt")])
    assert [item.path for item in found] == [tree / "notes.txt"]  # probing rejects it later


def test_discovery_errors_name_the_spec(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: no such file or folder"):
        discover_inputs([str(tmp_path / "missing.wav")])
    with pytest.raises(AudioError, match=r"\*\.mp3: pattern matches no audio files"):
        discover_inputs([str(tmp_path / "*.mp3")])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(AudioError, match=r"empty: folder contains no audio files"):
        discover_inputs([str(empty)])
    with pytest.raises(AudioError, match="no input files"):
        discover_inputs([])


def test_literal_path_with_wildcard_characters(tmp_path):
    odd = _touch_audio(tmp_path / "take[1].wav")
    assert [item.path for item in discover_inputs([str(odd)])] == [odd]


# ------------------------------------------------------------------------- templates ---------


def test_render_default_templates():
    assert render_output_name(SEPARATION_TEMPLATE, track="mix", stem="s2", ext="wav", k=2) == (
        PurePosixPath("s2/mix.wav")
    )
    assert render_output_name(
        SEPARATION_TEMPLATE, track="mix", stem="s1", ext="flac", parent="a/b"
    ) == PurePosixPath("s1/a/b/mix.flac")
    assert render_output_name(ENHANCEMENT_TEMPLATE, track="x", stem="enhanced", ext="wav") == (
        PurePosixPath("x.wav")
    )
    assert default_template("separation") == SEPARATION_TEMPLATE
    assert default_template("enhancement") == ENHANCEMENT_TEMPLATE


def test_render_all_variables_and_format_specs():
    name = render_output_name(
        "{parent}/{track}_{trackext}_{stem}_{k:02d}.{ext}",
        track="t", trackext="mp3", stem="s3", ext="flac", k=3, parent="p",
    )
    assert name == PurePosixPath("p/t_mp3_s3_03.flac")


@pytest.mark.parametrize(
    "template,message",
    [
        ("{name}.{ext}", r"unknown variable \{name\}"),
        ("{}.{ext}", "unknown variable"),
        ("{track.upper}.{ext}", "unknown variable"),
        ("{track", "invalid --filename template"),
        ("/abs/{track}.{ext}", "must be relative"),
        ("../{track}.{ext}", "leaves the output folder"),
        ("{stem}/../../{track}.{ext}", "leaves the output folder"),
        ("{stem}/", "no file name"),
        ("{k:q}.{ext}", "invalid --filename template"),
    ],
)
def test_bad_templates_raise_config_error(template, message):
    with pytest.raises(ConfigError, match=message):
        render_output_name(template, track="t", stem="s1", ext="wav")


def test_check_template_requires_distinct_files_per_source():
    check_template("{stem}/{track}.{ext}", ["s1", "s2"])
    check_template("{track}_{k}.{ext}", ["s1", "s2"])
    check_template("{track}.{ext}", ["enhanced"])
    with pytest.raises(ConfigError, match=r"same file; include \{stem\} or \{k\}"):
        check_template("{track}.{ext}", ["s1", "s2"])


def test_stem_names():
    assert stem_names("separation", 3) == ["s1", "s2", "s3"]
    assert stem_names("enhancement", 2) == ["enhanced"]
    with pytest.raises(ConfigError):
        stem_names("dereverb", 2)


# ------------------------------------------------------------------------- output plans ------


def test_plan_outputs_mirrors_subfolders(tree, tmp_path):
    inputs = discover_inputs([str(tree)])
    out = tmp_path / "separated"
    plan = plan_outputs(inputs, out, SEPARATION_TEMPLATE, ["s1", "s2"], "wav")
    assert len(plan) == len(inputs)
    assert plan[0] == (out / "s1" / "a.wav", out / "s2" / "a.wav")
    assert plan[2] == (out / "s1" / "other" / "c.wav", out / "s2" / "other" / "c.wav")
    assert plan[3] == (out / "s1" / "sub" / "c.wav", out / "s2" / "sub" / "c.wav")


def test_plan_outputs_detects_clashes(tree, tmp_path):
    inputs = discover_inputs([str(tree)])
    with pytest.raises(ConfigError, match=r"outputs clash: .*other/c\.wav.*sub/c\.wav.*\{parent\}"):
        plan_outputs(inputs, tmp_path / "out", "{stem}/{track}.{ext}", ["s1", "s2"], "wav")
    same_name = [InputFile(tree / "b.wav"), InputFile(tree / "sub" / "c.wav"),
                 InputFile(tmp_path / "b.flac")]
    with pytest.raises(ConfigError, match="outputs clash"):
        plan_outputs(same_name, tmp_path / "out", ENHANCEMENT_TEMPLATE, ["enhanced"], "wav")


def test_plan_outputs_refuses_to_overwrite_inputs(tree):
    inputs = discover_inputs([str(tree)])
    with pytest.raises(ConfigError, match=r"would overwrite the input .*b\.wav"):
        plan_outputs(inputs, tree, ENHANCEMENT_TEMPLATE, ["enhanced"], "wav")
    plan = plan_outputs(inputs, tree, "{parent}/{track}_enhanced.{ext}", ["enhanced"], "wav")
    assert plan[1] == (tree / "b_enhanced.wav",)


def test_plan_outputs_rejects_unwritable_extension(tree, tmp_path):
    inputs = discover_inputs([str(tree / "b.wav")])
    with pytest.raises(ConfigError, match="unsupported output extension"):
        plan_outputs(inputs, tmp_path, "{track}.{ext}", ["enhanced"], "txt")
