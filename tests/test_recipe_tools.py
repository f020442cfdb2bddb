"""recipes/plot_curves.py, promote_model.py, pack_corpus.py and compare_setups.sh (validate_run.py: in
test_train.py, which has a training run to validate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_MODEL_TOML, load_script

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))

import pack_corpus  # noqa: E402
import plot_curves  # noqa: E402
import promote_model  # noqa: E402


def _run_with_metrics(folder: Path, points: list[tuple[float, int, float]]) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"kind": "train", "step": 1, "loss": 1.0, "train_cpu_s": 1.0})]
    lines += [json.dumps({"kind": "valid", "step": step, "train_cpu_s": cpu_s,
                          "si_sdri_T": value}) for cpu_s, step, value in points]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_curves_table_reads_the_last_value_within_each_budget(tmp_path: Path) -> None:
    a = _run_with_metrics(tmp_path / "a", [(60, 10, -3.0), (180, 30, -1.0), (600, 90, 2.0)])
    b = _run_with_metrics(tmp_path / "b", [(120, 40, 0.5)])
    table = tmp_path / "curves.md"
    plot_curves.main([str(a), f"short={b}", "--budgets", "1,2,4,5,16,18", "--table", str(table)])
    rows = table.read_text().splitlines()
    assert rows[0] == ("| run | 1 CPU-min | 2 CPU-min | 4 CPU-min | 5 CPU-min | 16 CPU-min "
                       "| 18 CPU-min | best | steps |")
    assert rows[2] == "| a | -3.00 | -3.00 | -1.00 | -1.00 | +2.00 | – | +2.00 | 90 |"
    # b stopped after 2 CPU-minutes: later budgets are not its value
    assert rows[3] == "| short | – | +0.50 | +0.50 | – | – | – | +0.50 | 40 |"
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        plot_curves.read_curve(tmp_path / "missing", "si_sdri_T")


def test_promotion_needs_a_better_score_and_swaps_the_folder_whole(tmp_path: Path) -> None:
    assert promote_model.better("separate", {"si_sdri": 1.0}, {"si_sdri": 0.5})
    assert not promote_model.better("separate", {"si_sdri": 0.5}, {"si_sdri": 0.5})
    # enhancement: SI-SDRi up is not enough when PESQ drops
    assert not promote_model.better(
        "enhance", {"si_sdri": 3.0, "pesq_wb": 1.2}, {"si_sdri": 1.0, "pesq_wb": 1.3}
    )
    assert promote_model.better(
        "enhance", {"si_sdri": 3.0, "pesq_wb": 1.3}, {"si_sdri": 1.0, "pesq_wb": 1.3}
    )
    new, bundled = tmp_path / "new", tmp_path / "models" / "sep"
    for folder, text in ((new, "new"), (bundled, "old")):
        folder.mkdir(parents=True)
        for name in promote_model.FILES:
            (folder / name).write_text(f"{text} {name}")
    (bundled / "stray.txt").write_text("left from before")
    promote_model.install(new, bundled)
    assert sorted(p.name for p in bundled.iterdir()) == sorted(promote_model.FILES)
    assert (bundled / "config.json").read_text() == "new config.json"
    assert sorted(p.name for p in bundled.parent.iterdir()) == ["sep"]  # nothing left behind


def test_promotion_refuses_a_folder_without_model_files(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = promote_model.main(["separate", str(tmp_path / "empty"), str(tmp_path / "empty"),
                               str(tmp_path)])
    assert code == 2 and "missing config.json" in capsys.readouterr().err


def test_promotion_passes_the_options_after_the_double_dash(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    folders = []
    for name in ("cand", "bundled"):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        for file in promote_model.FILES:
            (folders[-1] / file).write_text(file)
    calls = []

    def fake_score(command, model, split, count, out, extra):
        calls.append((model.name, count, extra))
        return {"si_sdri": 1.0 if model.name == "cand" else 0.5}

    monkeypatch.setattr(promote_model, "score", fake_score)
    code = promote_model.main(["separate", *map(str, folders), str(tmp_path), "--count", "3",
                               "--work", str(tmp_path / "w"), "--", "--threads", "1"])
    assert code == 0 and "candidate is better" in capsys.readouterr().out
    assert calls == [("cand", 3, ["--threads", "1"]), ("bundled", 3, ["--threads", "1"])]
    assert (folders[1] / "config.json").read_text() == "config.json"  # no --apply: unchanged


def test_compare_setups_names_the_set_ups() -> None:
    result = subprocess.run(["bash", str(RECIPES / "compare_setups.sh"), "/c", "/r", "Z"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown set-up 'Z'" in result.stderr
    usage = subprocess.run(["bash", str(RECIPES / "compare_setups.sh")],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "CPU_MINUTES" in usage.stderr
    assert "set -e" not in usage.stderr
    env = {k: v for k, v in os.environ.items() if k != "G_INIT"}
    g = subprocess.run(["bash", str(RECIPES / "compare_setups.sh"), "/c", "/r", "G"],
                       capture_output=True, text=True, env=env)
    assert g.returncode == 2 and "needs G_INIT" in g.stderr


def _tiny_corpus(root: Path) -> None:
    """Three speakers (two recorded, one TTS) of 1 s utterances at 16 kHz, and a valid set."""
    import csv

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    rows = []
    for speaker, recorded, count in (("rec_a", "yes", 6), ("rec_b", "yes", 2), ("tts_c", "no", 5)):
        (root / "speech" / speaker).mkdir(parents=True)
        for i in range(count):
            path = f"speech/{speaker}/{i:02d}.wav"
            sf.write(root / path, 0.1 * rng.standard_normal(16000), 16000, subtype="PCM_16")
            rows.append({"path": path, "kind": "speech", "split": "train", "speaker": speaker,
                         "duration": "1.0", "recorded": recorded})
    rows.append({"path": "speech/rec_a/00.wav", "kind": "speech", "split": "valid",
                 "speaker": "rec_v", "duration": "1.0", "recorded": "yes"})
    (root / "noise").mkdir()
    for i, recorded in enumerate(("yes", "no")):
        sf.write(root / f"noise/{i}.wav", 0.1 * rng.standard_normal(48000), 16000)
        rows.append({"path": f"noise/{i}.wav", "kind": "noise", "split": "train", "speaker": "",
                     "duration": "3.0", "recorded": recorded})
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for sub in ("mix", "s1", "s2"):
        (root / "valid" / sub).mkdir(parents=True)
        for i in range(3):
            sf.write(root / "valid" / sub / f"v{i}.wav", 0.1 * rng.standard_normal(8000), 8000)


def test_pack_corpus_caps_each_voice_and_the_pack_trains(tmp_path: Path) -> None:
    import csv

    import soundfile as sf

    from diffsep.train.data import DynamicMixingDataset

    corpus, out = tmp_path / "corpus", tmp_path / "pack"
    _tiny_corpus(corpus)
    assert pack_corpus.main([str(corpus), str(out), "--cap-recorded", "2.5", "--cap-tts", "1",
                             "--valid", str(corpus / "valid"), "--valid-count", "2",
                             "--jobs", "1"]) == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    per_speaker = {s: sum(r["speaker"] == s for r in rows) for s in ("rec_a", "rec_b", "tts_c")}
    # 2.5 s cap: a 1 s voice is cut after its third utterance; rec_b has only two; TTS: one
    assert per_speaker == {"rec_a": 3, "rec_b": 2, "tts_c": 1}
    assert all(r["split"] == "train" and r["kind"] == "speech" for r in rows)  # no valid, noise
    info = sf.info(out / rows[0]["path"])
    assert (info.samplerate, info.format, info.subtype) == (8000, "OGG", "VORBIS")
    assert sorted(p.name for p in (out / "valid" / "mix").iterdir()) == ["v0.flac", "v1.flac"]
    # the same seed packs the same utterances
    again = tmp_path / "again"
    pack_corpus.main([str(corpus), str(again), "--cap-recorded", "2.5", "--cap-tts", "1",
                      "--jobs", "1"])
    assert list(csv.DictReader((again / "manifest.csv").open())) == rows
    dataset = DynamicMixingDataset(out / "manifest.csv", sample_rate=8000, segment_seconds=0.5,
                                   split="train", recorded_share=0.8)
    mix, sources = dataset[0]
    assert mix.shape == (1, 4000) and sources.shape == (2, 4000)
    assert pack_corpus.main([str(corpus), str(out)]) == 2  # an existing pack is never touched


def test_pack_corpus_packs_cut_noise_for_enhancement(tmp_path: Path) -> None:
    import csv

    import soundfile as sf

    from diffsep.train.data import DynamicMixingDataset

    corpus, out = tmp_path / "corpus", tmp_path / "pack"
    _tiny_corpus(corpus)
    assert pack_corpus.main([str(corpus), str(out), "--rate", "16000", "--noise-cap", "1.5",
                             "--jobs", "1"]) == 0
    noise = [r for r in csv.DictReader((out / "manifest.csv").open()) if r["kind"] == "noise"]
    assert [r["recorded"] for r in noise] == ["yes", "no"]
    for row in noise:  # 3 s files cut to their first 1.5 s
        info = sf.info(out / row["path"])
        assert (info.samplerate, info.frames) == (16000, 24000)
    dataset = DynamicMixingDataset(out / "manifest.csv", out / "manifest.csv", task="enhancement",
                                   sample_rate=16000, segment_seconds=0.5, split="train",
                                   noise_recorded_share=0.8)
    noisy, sources = dataset[0]
    assert noisy.shape == (1, 8000) and sources.shape == (2, 8000)


def test_pack_corpus_writes_speech_as_opus_and_noise_as_vorbis(tmp_path: Path, capsys) -> None:
    import csv

    import soundfile as sf

    from diffsep.train.data import DynamicMixingDataset

    corpus, out = tmp_path / "corpus", tmp_path / "pack"
    _tiny_corpus(corpus)
    assert pack_corpus.main([str(corpus), str(out), "--rate", "16000", "--noise-cap", "1.5",
                             "--recorded-noise-cap", "2.5", "--speech-codec", "opus",
                             "--speech-quality", "0.9", "--jobs", "1"]) == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    subtypes = {(r["kind"], sf.info(out / r["path"]).subtype) for r in rows}
    assert subtypes == {("speech", "OPUS"), ("noise", "VORBIS")}
    # 3 s noise files: the recorded one cut at 2.5 s, the other at 1.5 s
    assert sorted((r["recorded"], sf.info(out / r["path"]).frames) for r in rows
                  if r["kind"] == "noise") == [("no", 24000), ("yes", 40000)]
    speech = next(r for r in rows if r["kind"] == "speech")
    assert sf.info(out / speech["path"]).frames == round(float(speech["duration"]) * 16000)
    dataset = DynamicMixingDataset(out / "manifest.csv", out / "manifest.csv", task="enhancement",
                                   sample_rate=16000, segment_seconds=0.5, split="train")
    noisy, sources = dataset[0]
    assert noisy.shape == (1, 8000) and bool(sources.abs().sum() > 0)
    # Opus has no 22.05 kHz: refused before anything is written
    assert pack_corpus.main([str(corpus), str(tmp_path / "odd"), "--rate", "22050",
                             "--speech-codec", "opus"]) == 2
    assert "Opus encodes only at" in capsys.readouterr().err
    assert not (tmp_path / "odd").exists() and not (tmp_path / "odd.partial").exists()


def test_noise_gap_scores_four_cells(tmp_path: Path, small_model_dirs, capsys) -> None:
    import shutil

    noise_gap = load_script(RECIPES / "noise_gap.py")
    corpus = tmp_path / "corpus"
    _tiny_corpus(corpus)
    assert noise_gap.main([str(small_model_dirs["enh"]), str(corpus), "--count", "2"]) == 2
    assert "no recorded valid noise" in capsys.readouterr().err  # the tiny corpus has none
    shutil.copy(corpus / "noise/0.wav", corpus / "noise/v.wav")
    with (corpus / "manifest.csv").open("a") as fh:
        fh.write("noise/v.wav,noise,valid,,3.0,yes\n")
    assert noise_gap.main([str(small_model_dirs["enh"]), str(corpus), "--count", "2",
                           "--seconds", "0.5", "--steps", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("speech")]
    assert [line.split(":")[0].split() for line in lines] == [
        ["speech", "train", "x", "noise", "train"], ["speech", "train", "x", "noise", "valid"],
        ["speech", "valid", "x", "noise", "train"], ["speech", "valid", "x", "noise", "valid"]]
    assert all("n 2)" in line and "nan" not in line for line in lines)
    assert noise_gap.mean_and_error([1.0, 3.0]) == (2.0, 1.0)


def test_pack_corpus_names_a_damaged_file_and_leaves_no_pack(tmp_path: Path, capsys) -> None:
    corpus, out = tmp_path / "corpus", tmp_path / "pack"
    _tiny_corpus(corpus)
    (corpus / "speech/rec_b/01.wav").write_bytes(b"RIFF not audio")
    assert pack_corpus.main([str(corpus), str(out), "--jobs", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("pack_corpus: ") and "rec_b/01.wav: cannot read audio" in error
    assert "\n" not in error
    assert not out.exists() and not (tmp_path / "pack.partial").exists()


TINY_RECIPE = TINY_MODEL_TOML + """
[data]
epoch_length = 4
[optim]
segment_seconds = 0.1
steps = 3
lr_drops = [[1, 1e-9]]
[valid]
every = 0
[output]
dir = "run"
"""


@pytest.mark.slow  # two short trainings in subprocesses
def test_device_train_runs_two_timed_stretches_and_brings_back_both_exports(
        tmp_path: Path) -> None:
    import tarfile

    corpus, pack, out, run = (tmp_path / name for name in ("corpus", "pack", "out", "run"))
    _tiny_corpus(corpus)
    assert pack_corpus.main([str(corpus), str(pack), "--valid", str(corpus / "valid"),
                             "--jobs", "1"]) == 0
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    env = {**os.environ, "OUT": str(out), "RUN": str(run), "DEVICE": "cpu", "BATCH": "2",
           "WORKERS": "0", "SECONDS_A": "12", "SECONDS_B": "10", "LR_A": "1e-3", "LR_B": "1e-4"}
    done = subprocess.run(["bash", str(RECIPES / "device_train.sh"), str(recipe), "-", str(pack),
                           "--set", "optim.threads=1"], env=env, capture_output=True, text=True,
                          cwd=RECIPES.parent, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # time, not the recipe's 3 steps or its lr drop, stopped both stretches, each at its lr
    log = (run / "run" / "train.log").read_text()
    assert log.count("interrupted at step") == 2
    assert "lr 1.00e-03" in log and "lr 1.00e-04" in log and "lr 1.00e-09" not in log
    # benchmarks/bench_train.py --from-log still reads the log the training loop writes
    done = subprocess.run([sys.executable, str(RECIPES.parent / "benchmarks" / "bench_train.py"),
                           "--from-log", str(run / "run" / "train.log"), "--crop-seconds", "0.1",
                           "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["device"], row["batch_size"]) == ("cpu", 2) and row["s_per_step"] > 0
    parts = sorted(out.glob("exports.tar.*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    whole = tmp_path / "exports.tar"
    whole.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(whole) as tar:
        names = set(tar.getnames())
    assert {"export-a/model.safetensors", "export-b/model.safetensors"} <= names
    with tarfile.open(out / "logs.tgz") as tar:
        assert {"run/train.log", "a.out", "b.out"} <= set(tar.getnames())
    # a missing argument prints the usage and changes nothing
    done = subprocess.run(["bash", str(RECIPES / "device_train.sh"), str(recipe)], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "device_train.sh" in done.stderr
