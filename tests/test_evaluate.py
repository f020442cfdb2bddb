"""`diffsep eval` and diffsep.evaluate on small folders built in tmp_path (8 kHz, ~1 s files)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from diffsep import evaluate as ev
from diffsep import metrics as M
from diffsep.cli import app
from diffsep.errors import AudioError

SR = 8000
NAMES = ("a", "b", "c", "d")
SWAPPED = ("b", "d")  # files whose estimates are written in the other order
RATIOS_DB = (10.0, 15.0)  # SI-SDR of estimate k against source k, by construction

runner = CliRunner()


def speechlike(num_samples: int, f0: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(num_samples) / SR
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6.3))) ** 2
    harmonics = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6.3)) / h for h in range(1, 10))
    return 0.1 * envelope * harmonics


def plus_orthogonal_noise(
    signal: np.ndarray, ratio_db: float, rng: np.random.Generator
) -> np.ndarray:
    noise = rng.standard_normal(signal.shape)
    noise -= (noise @ signal) / (signal @ signal) * signal
    noise *= math.sqrt((signal @ signal) / (noise @ noise) / 10 ** (ratio_db / 10))
    return signal + noise


def write(path: Path, audio: np.ndarray, sample_rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(audio, dtype=np.float32)
    subtype = "PCM_24" if path.suffix == ".flac" else "FLOAT"
    sf.write(path, data.T if data.ndim == 2 else data, sample_rate, subtype=subtype)
    return path


def read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def make_separation(root: Path, seconds: float = 1.0) -> tuple[Path, Path]:
    """ref/{s1,s2,mix}/NAME.wav and out/{s1,s2}/NAME.wav with estimate k = source k + noise at
    RATIOS_DB[k], written swapped (out/s1 holds source 2's estimate) for SWAPPED."""
    rng = np.random.default_rng(0)
    ref, out = root / "ref", root / "out"
    n = int(seconds * SR)
    for name in NAMES:
        sources = [
            speechlike(n, rng.uniform(100, 140), rng),
            speechlike(n, rng.uniform(180, 250), rng),
        ]
        estimates = [plus_orthogonal_noise(s, r, rng) for s, r in zip(sources, RATIOS_DB)]
        if name in SWAPPED:
            estimates = estimates[::-1]
        for k in range(2):
            write(ref / f"s{k + 1}" / f"{name}.wav", sources[k])
            write(out / f"s{k + 1}" / f"{name}.wav", estimates[k])
        write(ref / "mix" / f"{name}.wav", sources[0] + sources[1])
    return ref, out


def make_enhancement(
    root: Path, seconds: float = 1.0, names: tuple[str, ...] = NAMES
) -> tuple[Path, Path]:
    """ref/{clean,noisy}/NAME.wav and out/NAME.wav (clean + noise at 12 dB)."""
    rng = np.random.default_rng(1)
    ref, out = root / "ref", root / "out"
    n = int(seconds * SR)
    for name in names:
        clean = speechlike(n, rng.uniform(100, 200), rng)
        write(ref / "clean" / f"{name}.wav", clean)
        write(ref / "noisy" / f"{name}.wav", plus_orthogonal_noise(clean, 0.0, rng))
        write(out / f"{name}.wav", plus_orthogonal_noise(clean, 12.0, rng))
    return ref, out


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["eval", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> dict:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def direct_si_sdr_separation(ref: Path, out: Path, name: str, swapped: bool) -> list[float]:
    refs = np.stack([read(ref / f"s{k}" / f"{name}.wav") for k in (1, 2)])
    ests = np.stack([read(out / f"s{k}" / f"{name}.wav") for k in (1, 2)])
    if swapped:
        ests = ests[::-1]
    return [float(v) for v in M.si_sdr(refs, ests)]


# --------------------------------------------------------------------------- layouts


def test_separation_layout_pit_recovers_swapped_sources(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    report = run_json("--ref", ref, "--est", out, "--metrics", "si_sdr,si_sdri,sdr")
    assert report["num_sources"] == 2 and report["num_files"] == len(NAMES)
    assert report["reference_layout"] == "sources" and report["estimate_pattern"] == "s{k}/{name}"
    assert report["metrics"] == ["si_sdr", "si_sdri", "sdr"]
    assert report["left_out"]["references_without_estimates"] == 0
    rows = {row["name"]: row for row in report["files"]}
    for name in NAMES:
        row = rows[name]
        assert row["permutation"] == ([2, 1] if name in SWAPPED else [1, 2])
        per_source = [row["sources"]["s1"]["si_sdr"], row["sources"]["s2"]["si_sdr"]]
        # by construction (float32 files): 10 and 15 dB; exactly our metric on the files
        np.testing.assert_allclose(per_source, RATIOS_DB, atol=1e-3)
        np.testing.assert_allclose(
            per_source, direct_si_sdr_separation(ref, out, name, name in SWAPPED), atol=1e-9
        )
        assert row["si_sdr"] == pytest.approx(np.mean(per_source), abs=1e-12)
        mix = read(ref / "mix" / f"{name}.wav")
        refs = np.stack([read(ref / f"s{k}" / f"{name}.wav") for k in (1, 2)])
        baseline = M.si_sdr(refs, mix[None, :])
        assert row["si_sdri"] == pytest.approx(np.mean(np.array(per_source) - baseline), abs=1e-9)
    aggregate = report["aggregate"]["si_sdr"]
    values = [rows[name]["si_sdr"] for name in NAMES]
    assert aggregate["n"] == 4
    assert aggregate["mean"] == pytest.approx(np.mean(values), abs=1e-12)
    assert aggregate["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert aggregate["ci95"] == pytest.approx(3.1824463 * np.std(values, ddof=1) / 2, abs=1e-6)
    assert report["settings"]["si_sdr"]["zero_mean"] is False


def test_table_goes_to_stdout_and_csv_agrees_with_json(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    csv_path = tmp_path / "scores.csv"
    code, stdout, stderr = run("--ref", ref, "--est", out, "-m", "si_sdr,sdr", "--csv", csv_path)
    assert code == 0, stderr
    assert "SI-SDR [dB]" in stdout and "SDR [dB]" in stdout and "4 files, 2 sources" in stdout
    assert "12.50 ±" in stdout  # mean of 10 and 15 dB
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    files = [r for r in rows if r["kind"] == "file"]
    assert [r["name"] for r in files] == list(NAMES)
    assert [r["kind"] for r in rows[len(NAMES) :]] == ["mean", "ci95", "std", "n"]
    report = run_json("--ref", ref, "--est", out, "-m", "si_sdr,sdr")
    for row, entry in zip(files, report["files"]):
        assert float(row["si_sdr"]) == pytest.approx(entry["si_sdr"], abs=1e-12)
        assert float(row["sdr"]) == pytest.approx(entry["sdr"], abs=1e-12)
        assert row["permutation"] == " ".join(map(str, entry["permutation"]))
    mean_row = rows[len(NAMES)]
    assert float(mean_row["si_sdr"]) == pytest.approx(
        report["aggregate"]["si_sdr"]["mean"], abs=1e-12
    )
    assert rows[-1]["si_sdr"] == "4"


def test_enhancement_layout_clean_noisy(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    report = run_json("--ref", ref, "--est", out, "-m", "si_sdr,si_sdri")
    assert report["reference_layout"] == "clean" and report["num_sources"] == 1
    assert report["mixtures"] == str(ref / "noisy")
    for row in report["files"]:
        assert "permutation" not in row and "sources" not in row
        assert row["si_sdr"] == pytest.approx(12.0, abs=1e-3)
        assert row["si_sdri"] == pytest.approx(12.0, abs=1e-3)  # noisy is at 0 dB


@pytest.mark.slow  # a full model run or a large network: over a second
def test_flat_references_with_mix_option(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "speechmos", None)  # keep the default run fast: no DNSMOS
    ref, out = make_enhancement(tmp_path)
    flat = ref / "clean"
    report = run_json("--ref", flat, "--est", out, "-j", "1")
    assert report["reference_layout"] == "flat"
    assert "si_sdri" not in report["metrics"]  # no mixtures known
    code, _, err = run("--ref", flat, "--est", out, "-m", "si_sdri")
    assert_one_line_error(code, err, "si_sdri needs the mixtures", "--mix")
    report = run_json("--ref", flat, "--est", out, "--mix", ref / "noisy", "-m", "si_sdri")
    assert [row["si_sdri"] for row in report["files"]] == pytest.approx([12.0] * 4, abs=1e-3)
    # an explicit --mix must cover every file; an incomplete REF/noisy only drops SI-SDRi
    (ref / "noisy" / "c.wav").unlink()
    code, _, err = run("--ref", flat, "--est", out, "--mix", ref / "noisy", "-m", "si_sdr")
    assert_one_line_error(code, err, str(ref / "noisy"), "no mixture for 1 file(s) (c)")
    code, stdout, stderr = run("--ref", ref, "--est", out, "-m", "si_sdr,sdr")
    assert code == 0 and "SI-SDR" in stdout
    code, stdout, stderr = run("--ref", ref, "--est", out, "-j", "1", "--json")
    assert code == 0 and "si_sdri" not in json.loads(stdout)["metrics"]
    assert "SI-SDRi not computed: 1 file(s) have no mixture in" in stderr


def test_librimix_references_name_their_mixture_folders(tmp_path: Path) -> None:
    # LibriMix writes mix_clean/ and mix_both/ beside s1/ s2/, never mix/
    ref, out = make_separation(tmp_path)
    (ref / "mix").rename(ref / "mix_clean")
    (ref / "mix_both").mkdir()
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdri")
    assert_one_line_error(code, err, "pass --mix FOLDER (found REF/mix_both, REF/mix_clean)")
    report = run_json("--ref", ref, "--est", out, "-j", "1", "-m", "si_sdri",
                      "--mix", ref / "mix_clean")
    assert len(report["files"]) == len(NAMES)
    assert all(math.isfinite(row["si_sdri"]) for row in report["files"])


@pytest.mark.parametrize(
    "pattern, relative",
    [
        ("{name}_s{k}.wav", "{name}_s{k}.wav"),
        ("{name}/{k0}", "{name}/{k0}.flac"),  # no extension: any audio format
        ("{stem}/{parent}/{track}.{ext}", "s{k}/{name}.wav"),  # a `separate --filename` template
    ],
)
def test_pattern_layouts(tmp_path: Path, pattern: str, relative: str) -> None:
    ref, out = make_separation(tmp_path)
    other = tmp_path / "other"
    for name in NAMES:
        for k in (1, 2):
            target = other / relative.format(name=name, k=k, k0=k - 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            subtype = "PCM_24" if target.suffix == ".flac" else "FLOAT"
            sf.write(target, read(out / f"s{k}" / f"{name}.wav"), SR, subtype=subtype)
    expected = run_json("--ref", ref, "--est", out, "-m", "si_sdr")
    report = run_json("--ref", ref, "--est", other, "--pattern", pattern, "-m", "si_sdr")
    assert [r["si_sdr"] for r in report["files"]] == pytest.approx(
        [r["si_sdr"] for r in expected["files"]], abs=1e-3
    )
    assert [r["permutation"] for r in report["files"]] == [
        r["permutation"] for r in expected["files"]
    ]


def test_pattern_errors(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    code, _, err = run("--ref", ref, "--est", out, "--pattern", "{name}.wav")
    assert_one_line_error(code, err, "no {k}", "2 sources")
    code, _, err = run("--ref", ref, "--est", out, "--pattern", "{nome}_{k}.wav")
    assert_one_line_error(code, err, "unknown placeholder {nome}")
    code, _, err = run("--ref", ref, "--est", out, "--pattern", "{name}_s{k}.wav")
    assert_one_line_error(code, err, "no estimate files match")


# --------------------------------------------------------------------------- matching errors


def test_missing_and_extra_estimates_are_listed(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    (out / "s2" / "c.wav").unlink()
    write(out / "s1" / "zzz.wav", np.ones(SR))
    write(out / "s3" / "a.wav", np.ones(SR))
    (out / "notes.txt").write_text("not audio, ignored")
    code, _, err = run("--ref", ref, "--est", out)
    assert_one_line_error(
        code,
        err,
        "1 estimate(s) missing (s2/c)",
        "2 estimate(s) without a reference",
        "s1/zzz.wav",
        "s3/a.wav",
        "--intersection",
        "3 file(s)",
    )


def test_intersection_scores_the_common_files_and_says_so(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    (out / "s2" / "c.wav").unlink()
    write(out / "s1" / "zzz.wav", np.ones(SR))
    code, stdout, stderr = run(
        "--ref", ref, "--est", out, "--intersection", "-m", "si_sdr", "--json"
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert [row["name"] for row in report["files"]] == ["a", "b", "d"]
    assert report["left_out"] == {
        "references_without_estimates": 1,
        "missing_estimates": ["s2/c"],
        "estimates_without_reference": ["s1/zzz.wav"],
    }
    assert "scoring 3 file(s)" in stderr and "left out 1 reference" in stderr


def test_many_missing_files_are_summarised_on_one_line(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path, seconds=0.2, names=tuple(f"f{i:02d}" for i in range(12)))
    for i in range(1, 10):
        (out / f"f{i:02d}.wav").unlink()
    code, _, err = run("--ref", ref, "--est", out)
    assert_one_line_error(code, err, "9 estimate(s) missing (f01, f02, f03, f04, f05, … (+4 more))")


def test_reference_folders_must_agree(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    (ref / "s2" / "b.wav").unlink()
    code, _, err = run("--ref", ref, "--est", out)
    assert_one_line_error(code, err, str(ref / "s2"), "lacks 1 file(s) present in s1/ (b)")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    write(ref / "clean" / "a.flac", np.ones(SR))
    code, _, err = run("--ref", ref, "--est", out)
    assert_one_line_error(code, err, "two files are named 'a'")


def test_missing_folders(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    code, _, err = run("--ref", tmp_path / "nope", "--est", out)
    assert_one_line_error(code, err, "nope: no such folder")
    code, _, err = run("--ref", ref, "--est", tmp_path / "nada")
    assert_one_line_error(code, err, "nada: no such folder (--est)")


# --------------------------------------------------------------------------- bad audio


def test_nan_estimate_is_named(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    bad = read(out / "s1" / "b.wav")
    bad[100] = np.nan
    write(out / "s1" / "b.wav", bad)
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr")
    assert_one_line_error(code, err, str(out / "s1" / "b.wav"), "NaN")


def test_mismatched_sample_rates_name_both_files(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    write(out / "b.wav", np.resize(read(out / "b.wav"), 2 * SR), sample_rate=16000)
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr")
    assert_one_line_error(
        code, err, str(out / "b.wav"), "16000 Hz", str(ref / "clean" / "b.wav"), "8000 Hz"
    )


def test_multichannel_files_are_refused(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    mono = read(out / "c.wav")
    write(out / "c.wav", np.stack([mono, mono]))
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr")
    assert_one_line_error(code, err, str(out / "c.wav"), "2 channels", "mono")


def test_not_audio_and_empty_files_are_named(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    (out / "a.wav").write_bytes(b"this is not a wav file at all" * 10)
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr")
    assert_one_line_error(code, err, str(out / "a.wav"), "not a readable audio file")
    write(out / "a.wav", np.zeros(0))
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr")
    assert_one_line_error(code, err, str(out / "a.wav"), "empty")


def test_silent_reference_is_refused(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    write(ref / "clean" / "d.wav", np.zeros(SR))
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr")
    assert_one_line_error(code, err, str(ref / "clean" / "d.wav"), "silent")


def test_length_mismatch_is_cropped_and_reported(tmp_path: Path) -> None:
    ref, out = make_enhancement(tmp_path)
    est_a = read(out / "a.wav")
    write(out / "a.wav", np.concatenate([est_a, 0.1 * np.ones(SR // 2)]))  # 0.5 s longer
    est_b = read(out / "b.wav")
    write(out / "b.wav", est_b[:-40])  # 5 ms shorter: within tolerance
    code, stdout, stderr = run("--ref", ref, "--est", out, "-m", "si_sdr", "--json")
    assert code == 0, stderr
    assert "1 file(s) differ in length by more than 0.1 s" in stderr and "a (0.50 s)" in stderr
    rows = {row["name"]: row for row in json.loads(stdout)["files"]}
    assert rows["a"]["length_mismatch_s"] == pytest.approx(0.5)
    assert rows["a"]["notes"] and not rows["b"]["notes"]
    clean_b = read(ref / "clean" / "b.wav")
    assert rows["b"]["num_samples"] == SR - 40
    assert rows["b"]["si_sdr"] == pytest.approx(
        float(M.si_sdr(clean_b[:-40], est_b[:-40])), abs=1e-9
    )
    assert rows["a"]["si_sdr"] == pytest.approx(
        float(M.si_sdr(read(ref / "clean" / "a.wav"), est_a)), abs=1e-9
    )


# --------------------------------------------------------------------------- options and extras


def test_without_the_eval_extra_si_sdr_still_works(tmp_path: Path, monkeypatch) -> None:
    for module in ("pesq", "pystoi", "speechmos", "onnxruntime", "matplotlib"):
        monkeypatch.setitem(sys.modules, module, None)  # find_spec -> None, import -> ImportError
    ref, out = make_separation(tmp_path)
    code, stdout, stderr = run("--ref", ref, "--est", out, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["metrics"] == ["si_sdr", "si_sdri", "sdr"]
    notes = [line for line in stderr.splitlines() if "diffsep[eval]" in line]
    assert len(notes) == 1 and "PESQ, ESTOI, DNSMOS" in notes[0]
    code, _, err = run("--ref", ref, "--est", out, "--metrics", "pesq")
    assert_one_line_error(
        code, err, "pesq needs the package(s) pesq", 'pip install "diffsep[eval]"'
    )
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr", "--plot", tmp_path / "p.png")
    assert_one_line_error(code, err, "--plot needs matplotlib", "diffsep[eval]")


def test_option_errors(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    code, _, err = run("--ref", ref, "--est", out, "--metrics", "si_sdr,bleu")
    assert_one_line_error(code, err, "unknown metric 'bleu'")
    code, _, err = run(
        "--ref", ref, "--est", out, "-m", "si_sdr", "--csv", tmp_path / "no" / "x.csv"
    )
    assert_one_line_error(code, err, "does not exist")
    if M.is_available("pesq"):
        code, _, err = run("--ref", ref, "--est", out, "-m", "pesq", "--pesq-mode", "wb")
        assert_one_line_error(code, err, "wb PESQ needs audio at 16000 Hz", "8000 Hz")


def test_undefined_metric_values_are_left_out_and_reported(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("pesq")
    ref, out = make_separation(tmp_path)
    real = M.pesq_score

    def flaky(ref_audio, est_audio, rate, mode):
        if abs(float(ref_audio[50]) - float(read(tmp_path / "ref" / "s2" / "c.wav")[50])) < 1e-9:
            raise M.MetricUndefined("PESQ found no utterance in the reference")
        return real(ref_audio, est_audio, rate, mode)

    monkeypatch.setattr(M, "pesq_score", flaky)
    code, stdout, stderr = run("--ref", ref, "--est", out, "-m", "si_sdr,pesq", "-j", "1", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    rows = {row["name"]: row for row in report["files"]}
    assert rows["c"]["pesq"] is None and rows["c"]["sources"]["s2"]["pesq"] is None
    assert rows["c"]["sources"]["s1"]["pesq"] is not None
    assert any("PESQ undefined for s2" in note for note in rows["c"]["notes"])
    assert report["aggregate"]["pesq"]["n"] == 3 and report["aggregate"]["si_sdr"]["n"] == 4
    assert "PESQ (nb) undefined for 1 file(s), left out of its mean: c" in stderr


@pytest.mark.slow  # starts worker processes
def test_pesq_and_estoi_in_parallel_match_inline_and_direct(tmp_path: Path) -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    ref, out = make_separation(tmp_path)
    inline = run_json("--ref", ref, "--est", out, "-m", "pesq,estoi", "-j", "1")
    parallel = run_json("--ref", ref, "--est", out, "-m", "pesq,estoi", "-j", "2")
    for a, b in zip(inline["files"], parallel["files"]):
        assert (a["name"], a["permutation"]) == (b["name"], b["permutation"])
        for k in ("s1", "s2"):
            assert a["sources"][k] == pytest.approx(b["sources"][k], abs=1e-9)
    assert inline["settings"]["pesq"]["mode"] == "nb"
    row = inline["files"][1]  # b: swapped
    refs = [read(ref / f"s{k}" / "b.wav") for k in (1, 2)]
    ests = [read(out / f"s{k}" / "b.wav") for k in (2, 1)]
    assert row["sources"]["s1"]["pesq"] == pytest.approx(
        M.pesq_score(refs[0], ests[0], SR, "nb"), abs=1e-6
    )
    assert row["sources"]["s2"]["estoi"] == pytest.approx(
        M.estoi_score(refs[1], ests[1], SR), abs=1e-9
    )
    for entry in inline["files"]:
        assert 1.0 <= entry["pesq"] <= 4.65 and 0.0 < entry["estoi"] <= 1.0
    # an error inside a worker process stops the run with the same one-line message
    bad = read(out / "s2" / "c.wav")
    bad[10] = np.inf
    write(out / "s2" / "c.wav", bad)
    code, _, err = run("--ref", ref, "--est", out, "-m", "pesq", "-j", "2")
    assert_one_line_error(code, err, str(out / "s2" / "c.wav"), "NaN or Inf")


@pytest.mark.slow  # runs the DNSMOS networks
def test_dnsmos_via_the_command(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("speechmos")
    ref, out = make_enhancement(tmp_path, seconds=9.5, names=("long",))
    report = run_json("--ref", ref, "--est", out, "-m", "dnsmos", "-j", "1")
    assert report["metrics"] == ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"]
    expected = M.DnsmosP835()(read(out / "long.wav"), SR)
    row = report["files"][0]
    for part in ("sig", "bak", "ovrl"):
        assert row[f"dnsmos_{part}"] == pytest.approx(expected[part], abs=1e-6)
    assert report["settings"]["dnsmos"]["personalized"] is False


@pytest.mark.slow  # a full model run or a large network: over a second
def test_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    ref, out = make_separation(tmp_path)
    plot = tmp_path / "dist.png"
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr,sdr", "--plot", plot)
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run("--ref", ref, "--est", out, "-m", "si_sdr", "--plot", tmp_path / "dist.bmp")
    assert_one_line_error(code, err, ".png, .pdf or .svg")


# --------------------------------------------------------------------------- library level


def test_plan_and_score_item_library_api(tmp_path: Path) -> None:
    ref, out = make_separation(tmp_path)
    plan = ev.plan_evaluation(ref, out)
    assert plan.ref_layout == "sources" and plan.has_mixture and len(plan.items) == 4
    item = plan.items[1]
    assert item.name == "b" and item.mix == ref / "mix" / "b.wav"
    scores = ev.score_item(item, ev.EvalSettings(metrics=("si_sdr",)))
    assert scores.permutation == (1, 0)
    assert list(scores.per_source["si_sdr"]) == pytest.approx(list(RATIOS_DB), abs=1e-3)
    with pytest.raises(AudioError):
        ev.plan_evaluation(ref, tmp_path / "missing")
