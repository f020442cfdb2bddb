"""recipes/score_model.sh: separates the first N test items and scores them with `diffsep eval`."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like, write_wav

pytestmark = pytest.mark.slow  # runs the recipe scripts in subprocesses

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "score_model.sh"


def _split(root: Path, rate: int, count: int) -> Path:
    for folder in ("mix", "s1", "s2"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        s1 = 0.1 * speech_like(0.6, rate, seed=i, f0=110.0)
        s2 = 0.1 * speech_like(0.6, rate, seed=100 + i, f0=230.0)
        sf.write(root / "s1" / f"item{i}.wav", s1, rate)
        sf.write(root / "s2" / f"item{i}.wav", s2, rate)
        sf.write(root / "mix" / f"item{i}.wav", s1 + s2, rate)
    return root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_score_model_scores_the_first_items(tmp_path: Path, small_model_dirs: dict) -> None:
    split = _split(tmp_path / "test", 8000, 3)
    out = tmp_path / "score"
    done = _run("separate", str(small_model_dirs["sep"]), str(split), "2", str(out),
                "--steps", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "est" / "s1").iterdir()) == ["item0.wav", "item1.wav"]
    report = json.loads((out / "report.json").read_text())
    assert len(report["files"]) == 2
    scored = report["files"][0]
    assert np.isfinite(scored["si_sdr"]) and np.isfinite(scored["si_sdri"])
    timing = (out / "timing.txt").read_text()
    assert timing.startswith("files 2  audio 1.2 s") and "RTF" in timing


def test_score_model_rejects_bad_arguments(tmp_path: Path) -> None:
    assert _run("separate").returncode == 2
    done = _run("mangle", "m", str(tmp_path), "1", str(tmp_path / "o"))
    assert done.returncode == 2 and "separate or enhance" in done.stderr
    (tmp_path / "mix").mkdir()
    done = _run("separate", "m", str(tmp_path), "1", str(tmp_path / "o"))
    assert done.returncode == 1 and "no .wav files" in done.stderr


# ---------------------------------------------------------------------------------------------
# recipes/corpus: the corpus builder's parts (no apt, no network, no TTS engines)
# ---------------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))

import io  # noqa: E402
import struct  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
from corpus import build as corpus_build  # noqa: E402
from corpus import noise as corpus_noise  # noqa: E402
from corpus import recorded as corpus_recorded  # noqa: E402
from corpus.errors import CorpusError  # noqa: E402
from corpus.mixtures import make_separation_set  # noqa: E402
from corpus.queen import plan_queen, queen_lines, read_queen_table  # noqa: E402
from corpus.recorded import kde_group  # noqa: E402
from corpus.report import recorded_voice_share  # noqa: E402
from corpus.speech import read_blob  # noqa: E402
from corpus.splits import assign_splits, groups_in_several_splits  # noqa: E402
from corpus.staging import Stage  # noqa: E402


def _mp3(seconds: float, rate: int = 11025, f0: float = 150.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * speech_like(seconds, rate, seed=1, f0=f0), rate, format="MP3")
    return buf.getvalue()


def _dog(talk_key: int) -> bytes:
    """A dialogue file: 20-byte header, then levelMax, uniqueKey, talkKey (int16 BE), padding."""
    return b"AmBk" + bytes(16) + struct.pack(">hhh", 1, talk_key, talk_key) + bytes(26)


def _queen_file(path: Path, files: dict[str, bytes], compression: int = 1) -> Path:
    """A rebuilt Queen data file (QTBL table, then the files' bytes) with `files`."""
    names = sorted(files)
    table_end = 15 + 21 * len(names)
    table, payload, offset = b"", b"", table_end
    for name in names:
        table += name.encode().ljust(12, b"\0") + struct.pack(">BII", 1, offset, len(files[name]))
        payload += files[name]
        offset += len(files[name])
    head = b"QTBL" + b"CEM10\0" + b"\0\0" + bytes([compression]) + struct.pack(">H", len(names))
    path.write_bytes(head + table + payload)
    return path


def test_queen_reader_finds_lines_and_their_speakers(tmp_path: Path) -> None:
    files = {
        "SPARKY3.DOG": _dog(51),
        "FAYE2.DOG": _dog(7),
        "510001P1.SB": _mp3(1.0),  # Sparky (talk key 51, person line)
        "510001J1.SB": _mp3(0.6),  # Joe answering Sparky
        "07000AP2.SB": _mp3(0.8),  # Faye: key 7 written as "07"
        "JOE12345.SB": _mp3(0.7),  # Joe's remark
        "C12A_001.SB": _mp3(0.5),  # cut scene: speaker unknown, left out
        "990001P1.SB": _mp3(0.5),  # no dialogue file with key 99: left out
        "ROOM1.PCX": b"not audio",
    }
    path = _queen_file(tmp_path / "queen.1c", files)
    version, compression, entries = read_queen_table(path)
    assert (version, compression) == ("CEM10", 1)
    assert set(entries) == set(files)
    assert entries["ROOM1.PCX"].size == len(b"not audio")

    lines = queen_lines(path)
    assert {(line.entry.name, line.character) for line in lines} == {
        ("510001P1.SB", "sparky"),
        ("510001J1.SB", "joe"),
        ("07000AP2.SB", "faye"),
        ("JOE12345.SB", "joe"),
    }
    sparky = next(line for line in lines if line.character == "sparky")
    x, rate = read_blob(str(path), sparky.entry.offset, sparky.entry.size)
    assert rate == 11025 and abs(len(x) / rate - 1.0) < 0.1 and np.max(np.abs(x)) > 0.05

    plans = plan_queen(seed=0, max_characters=None, max_utts=None, path=path)
    assert [(spk.id, spk.group, len(utts)) for spk, utts in plans] == [
        ("fotaq_faye", "fotaq-faye", 1),
        ("fotaq_joe", "fotaq-joe", 2),
        ("fotaq_sparky", "fotaq-sparky", 1),
    ]
    assert all(spk.recorded and spk.source == "fotaq" for spk, _ in plans)


def test_queen_reader_rejects_damaged_files_naming_them(tmp_path: Path) -> None:
    bad = tmp_path / "queen.1c"
    bad.write_bytes(b"RIFF" + bytes(40))
    with pytest.raises(CorpusError, match=r"queen\.1c: not a ScummVM rebuilt Queen data file"):
        read_queen_table(bad)
    good = _queen_file(tmp_path / "q.1c", {"JOE1.SB": _mp3(0.5), "JOE2.SB": _mp3(0.5)})
    cut = tmp_path / "cut.1c"
    cut.write_bytes(good.read_bytes()[:30])  # table cut short
    with pytest.raises(CorpusError, match=r"cut\.1c: resource table truncated"):
        read_queen_table(cut)
    cut.write_bytes(good.read_bytes()[:-100])  # last file cut short
    with pytest.raises(CorpusError, match=r"cut\.1c: entry JOE2\.SB points past the end"):
        read_queen_table(cut)
    pcm = _queen_file(tmp_path / "pcm.1c", {"JOE1.SB": b"\0" * 100}, compression=0)
    with pytest.raises(CorpusError, match="not MP3"):
        queen_lines(pcm)
    assert queen_lines(tmp_path / "absent.1c") == []


def test_assign_splits_keeps_groups_disjoint_and_heavy_groups_in_train() -> None:
    groups = {f"espeak-v{i}": ("espeak", 1.0) for i in range(40)}
    groups |= {f"fotaq-c{i}": ("fotaq", float(20 + 7 * i)) for i in range(20)}
    groups["fotaq-joe"] = ("fotaq", 1900.0)
    groups |= {"asterisk-a": ("asterisk", 300.0), "asterisk-b": ("asterisk", 100.0)}
    split_of = assign_splits(groups, seed=3, valid_frac=0.1, test_frac=0.1)
    assert split_of == assign_splits(groups, seed=3, valid_frac=0.1, test_frac=0.1)
    assert set(split_of) == set(groups)
    for family in ("espeak", "fotaq"):
        members = [g for g in groups if groups[g][0] == family]
        total = sum(groups[g][1] for g in members)
        for split in ("valid", "test"):
            share = sum(groups[g][1] for g in members if split_of[g] == split) / total
            assert 0.05 <= share <= 0.2, (family, split, share)
    assert split_of["fotaq-joe"] == "train"  # a third of the lines: never held out
    assert split_of["asterisk-a"] == split_of["asterisk-b"] == "train"  # two groups: no split
    assert assign_splits(groups, seed=4, valid_frac=0.1, test_frac=0.1) != split_of

    rows = [
        {"kind": "speech", "group": g, "split": split_of[g], "speaker": f"{g}_{k}"}
        for g in groups
        for k in range(2)
    ]
    assert groups_in_several_splits(rows) == {}
    rows.append({"kind": "speech", "group": "fotaq-joe", "split": "test", "speaker": "x"})
    rows.append({"kind": "noise", "group": "babble", "split": "test", "speaker": ""})
    assert groups_in_several_splits(rows) == {"fotaq-joe": ["test", "train"]}


def test_kde_recordings_of_one_language_share_a_group() -> None:
    assert kde_group("en") == kde_group("en_GB") == kde_group("en@shaw") == "kde-en"
    assert kde_group("pt_BR") == "kde-pt" != kde_group("de")


def _corpus_rows(root: Path) -> list[dict]:
    """A small test split: 2 TTS and 2 recorded speakers (2 utterances each), 2 noise files
    (synthetic and recorded), written as 16 kHz files under root."""
    rows = []
    for k, (speaker, recorded) in enumerate(
        [("espeak_a", "no"), ("festival_b", "no"), ("fotaq_c", "yes"), ("asterisk_d", "yes")]
    ):
        for i in range(2):
            path = f"speech/test/{speaker}/{i:04d}.wav"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, 0.1 * speech_like(2.0, 16000, seed=10 * k + i), 16000)
            rows.append({"path": path, "kind": "speech", "split": "test", "speaker": speaker,
                         "group": speaker.replace("_", "-"), "source": speaker.split("_")[0],
                         "duration": 2.0, "recorded": recorded})
    for name, recorded in (("synth-hum_0000", "no"), ("megaglest_rain", "yes")):
        path = f"noise/test/{name}.wav"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / path, 0.05 * np.random.default_rng(1).standard_normal(48000), 16000)
        rows.append({"path": path, "kind": "noise", "split": "test", "speaker": "",
                     "group": name, "source": "x", "duration": 3.0, "recorded": recorded})
    return rows


def test_real_voice_eval_sets_use_only_recorded_voices_and_noise(tmp_path: Path) -> None:
    rows = _corpus_rows(tmp_path)
    args = SimpleNamespace(eval_valid=0, eval_test=12, seed=5)
    counts = corpus_build.build_eval_sets(tmp_path, rows, args)
    assert counts["sep-8k/test-real"] == counts["enh-16k/test-real"] == 12
    recorded = {r["path"] for r in rows if r["recorded"] == "yes"}
    sep_real = list(csv.DictReader((tmp_path / "sep-8k/test-real/metadata.csv").open()))
    assert len(sep_real) == 12
    assert all(m["s1"] in recorded and m["s2"] in recorded for m in sep_real)
    assert all(m["s1"].split("/")[2] != m["s2"].split("/")[2] for m in sep_real)
    enh_real = list(csv.DictReader((tmp_path / "enh-16k/test-real/metadata.csv").open()))
    assert {m["noise"] for m in enh_real} == {"noise/test/megaglest_rain.wav"}
    assert all(m["clean"] in recorded for m in enh_real)
    # the all-sources set draws from TTS voices too
    sep_all = list(csv.DictReader((tmp_path / "sep-8k/test/metadata.csv").open()))
    assert any(m["s1"] not in recorded or m["s2"] not in recorded for m in sep_all)
    mix, rate = sf.read(tmp_path / "sep-8k/test-real/mix/test-real_0000.wav", dtype="int16")
    s1, _ = sf.read(tmp_path / "sep-8k/test-real/s1/test-real_0000.wav", dtype="int16")
    s2, _ = sf.read(tmp_path / "sep-8k/test-real/s2/test-real_0000.wav", dtype="int16")
    assert rate == 8000 and np.array_equal(mix.astype(int), s1.astype(int) + s2.astype(int))
    assert not list(tmp_path.rglob("*.partial"))


def test_recorded_voice_share_counts_hours_and_speakers() -> None:
    rows = [
        {"speaker": "a", "duration": 3600.0, "recorded": "yes"},
        {"speaker": "a", "duration": 1800.0, "recorded": "yes"},
        {"speaker": "b", "duration": 5400.0, "recorded": "no"},
        {"speaker": "c", "duration": 1800.0, "recorded": "no"},
    ]
    share = recorded_voice_share(rows)
    assert share == {"speakers": 1, "utterances": 2, "hours": 1.5, "percent_of_hours": 42.9,
                     "percent_of_speakers": 33.3}


def test_an_interrupted_eval_set_leaves_no_folder_and_resumes(tmp_path: Path) -> None:
    rows = [r for r in _corpus_rows(tmp_path) if r["kind"] == "speech"]
    missing = dict(rows[-1], path="speech/test/asterisk_d/0009.wav")  # file not there
    with pytest.raises(sf.LibsndfileError):
        make_separation_set(tmp_path, "test", [*rows, missing], 40, seed=5)
    final = tmp_path / "sep-8k" / "test"
    assert not final.exists()
    partial = tmp_path / "sep-8k" / ".test.partial"
    assert list((partial / "mix").iterdir())  # the items made so far wait for the next run

    assert make_separation_set(tmp_path, "test", rows, 40, seed=5) == 40
    assert final.is_dir() and not partial.exists()
    assert len(list((final / "mix").iterdir())) == 40


def test_stage_reopens_a_finished_folder_and_refuses_two_copies(tmp_path: Path) -> None:
    stage = Stage(tmp_path / "noise" / "train")
    folder = stage.open()
    (folder / "a.wav").write_bytes(b"x")
    assert not stage.final.exists()
    stage.commit()
    assert (stage.final / "a.wav").exists() and not stage.partial.exists()
    assert stage.open() == stage.partial and (stage.partial / "a.wav").exists()
    stage.final.mkdir()
    with pytest.raises(CorpusError, match=r"train: both it and \.train\.partial exist"):
        stage.open()


def test_apt_failure_names_the_packages_not_installed(monkeypatch) -> None:
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        if "install" in command:
            raise subprocess.CalledProcessError(100, command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(corpus_build.subprocess, "run", fake_run)
    monkeypatch.setattr(corpus_build, "_installed", lambda p: p != "klettres-data")
    with pytest.raises(CorpusError) as err:
        corpus_build.apt_install(["ffmpeg", "klettres-data"])
    assert str(err.value) == "apt-get install failed (exit 100); not installed: klettres-data"
    assert any("update" in c for c in calls)


def _held_out_packages() -> tuple[str, ...]:
    """The reserved test packages as recipes/README.md names them (prefixes; `name*` globs)."""
    readme = (Path(__file__).resolve().parents[1] / "recipes" / "README.md").read_text()
    sentence = next(line for line in readme.split("\n\n") if "held-out test material" in line)
    return tuple(name.rstrip("*") for name in re.findall(r"`([a-z0-9.*-]+)`", sentence))


def test_apt_package_list_never_holds_the_held_out_packages() -> None:
    held_out = _held_out_packages()
    assert len(held_out) == 3
    assert not [p for p in corpus_build.APT_PACKAGES if p.startswith(held_out)]
    assert "flight-of-the-amazon-queen" in corpus_build.APT_PACKAGES


def test_train_only_noise_goes_to_train_and_leaves_valid_and_test_as_they_were(
        tmp_path: Path, monkeypatch) -> None:
    for _, package, *_ in corpus_noise.TRAIN_ONLY_NOISE:  # the real ones: recorded, installed
        assert package in corpus_noise.RECORDED_NOISE_SOURCES
        assert package in corpus_build.APT_PACKAGES
    rate = 16000
    megaglest = tmp_path / "megaglest"
    for i in range(6):  # enough files for every split
        write_wav(megaglest / "tilesets" / f"t{i}" / "sounds" / "wind.wav",
                  0.1 * np.sin(np.arange(rate) * (0.01 + 0.01 * i)), rate)
    game = tmp_path / "game"
    for name in ("explosion", "rain", "hell_growl", "countdown1"):
        write_wav(game / "Sounds" / f"{name}.wav",
                  0.1 * np.random.default_rng(len(name)).standard_normal(rate), rate)
    monkeypatch.setattr(corpus_noise, "MEGAGLEST_ROOT", megaglest)
    for attr in ("MOH_ROOT", "BUCKLESPRING_ROOT", "GCOMPRIS_RCC"):
        monkeypatch.setattr(corpus_noise, attr, tmp_path / "absent")
    dirs = {split: tmp_path / "out" / split for split in ("train", "valid", "test")}

    def plan(train_only) -> list:
        monkeypatch.setattr(corpus_noise, "TRAIN_ONLY_NOISE", train_only)
        return corpus_noise.plan_noise(dirs, [], tmp_path, 0, True, 0.1, 0.1)

    before = plan(())
    after = plan((("game", "game-data", game, ("Sounds/*",),
                   re.compile(r"^(hell_|countdown)")),))
    assert [j for j in after if j.split != "train"] == [j for j in before if j.split != "train"]
    added = [j for j in after if j not in before]
    assert sorted(j.name for j in added) == ["game_Sounds-explosion.wav", "game_Sounds-rain.wav"]
    assert all(j.split == "train" and j.source == "game-data" for j in added)
    assert {j.split for j in before if j.source == "megaglest-data"} == {"train", "valid", "test"}


def test_tuxpaint_voices_one_per_language_without_held_out_languages(
        tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    for language in ("fr", "ca", "lt"):
        count = 8 if language == "lt" else 21  # lt: too few descriptions
        suffix = "" if language == "fr" else f"_{language}"
        for i in range(count):
            folder = tmp_path / ("animals" if i % 2 else "food")
            folder.mkdir(exist_ok=True)
            sf.write(folder / f"stamp{i}_desc{suffix}.ogg", 0.1 * rng.standard_normal(800), 8000)
    # a copy under another stamp's name, and a file that is not a description
    (tmp_path / "food" / "copy_desc.ogg").write_bytes((tmp_path / "food" / "stamp0_desc.ogg")
                                                       .read_bytes())
    (tmp_path / "food" / "stamp0.ogg").write_bytes(b"")
    folders = dict(corpus_recorded.tuxpaint_folders(tmp_path))
    assert sorted(folders) == ["ca", "en"] and len(folders["en"]) == len(folders["ca"]) == 21
    monkeypatch.setattr(corpus_recorded, "TUXPAINT_ROOT", tmp_path)
    plans = corpus_recorded.plan_tuxpaint(0, None, None, held_out_languages={"ca"})
    assert [spk.id for spk, _ in plans] == ["tuxpaint_en"]
    speaker, utterances = plans[0]
    assert speaker.recorded and speaker.group == "tuxpaint-en"
    assert all(2 <= len(u) <= 3 for u in utterances[:-1])
    assert sorted(p for u in utterances for p in u) == folders["en"]


def test_make_corpus_stops_with_one_line_naming_a_damaged_archive(tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    import make_corpus
    from corpus.text import TextBank

    bad = tmp_path / "queen.1c"
    bad.write_bytes(b"QTBL" + b"CEM10\0" + bytes(3) + struct.pack(">H", 500) + bytes(100))
    monkeypatch.setattr(corpus_build, "QUEEN_FILE", bad)
    monkeypatch.setattr(corpus_build, "build_text_bank", lambda language: TextBank())
    monkeypatch.setattr(make_corpus.os, "nice", lambda increment: 0)  # keep pytest's priority
    out = tmp_path / "corpus"
    assert make_corpus.main(["--out", str(out), "--small", "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert err == f"make_corpus: error: {bad}: resource table truncated (500 entries announced)\n"
    assert not (out / "speech").exists() and not (out / "manifest.csv").exists()


def test_estimate_by_time_prints_one_line_per_time(tmp_path: Path, small_model_dirs: dict,
                                                   capsys) -> None:
    from conftest import load_script

    module = load_script(SCRIPT.parent / "estimate_by_time.py")
    split = _split(tmp_path / "valid", 8000, 2)
    assert module.main([str(small_model_dirs["sep"]), str(split), "--seconds", "0.5",
                        "--times", "1.0,0.3,0.03"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["t"] for row in rows] == [1.0, 0.3, 0.03]
    # x_t closes in on the true sources as t falls; every estimate is scored and scaled
    assert rows[0]["x_t_si_sdr"] < rows[1]["x_t_si_sdr"] < rows[2]["x_t_si_sdr"]
    assert all(np.isfinite(row["estimate_si_sdr"]) and np.isfinite(row["gain"]) for row in rows)
