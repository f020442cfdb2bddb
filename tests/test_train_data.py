"""Training datasets: layouts, crops, resampling, sums, determinism, SNRs, errors, workers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from torch.utils.data import DataLoader

from diffsep.errors import AudioError, ConfigError
from diffsep.train.data import (
    DynamicMixingDataset,
    MixtureFolderDataset,
    NoisySpeechFolderDataset,
    change_speed,
    collate_padded,
    read_mono,
    read_window,
    share_draw_weights,
)


def write(path: Path, x: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), rate, subtype="FLOAT")


def tone(freq: float, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A sine with a little noise, so that every speaker has its own spectral peak."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))


def peak_frequency(x: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.numpy()))
    return float(np.fft.rfftfreq(x.shape[-1], 1 / rate)[np.argmax(spectrum)])


def make_mixture_folder(root: Path, rate: int = 8000, lengths=(1.0, 2.5, 0.5)) -> None:
    for i, seconds in enumerate(lengths):
        s1 = tone(300 + 50 * i, seconds, rate, seed=i)
        s2 = tone(900 + 50 * i, seconds, rate, seed=10 + i)
        write(root / "s1" / f"utt{i}.wav", s1, rate)
        write(root / "s2" / f"utt{i}.wav", s2, rate)
        write(root / "mix" / f"utt{i}.wav", s1.astype(np.float32) + s2.astype(np.float32), rate)


# --------------------------------------------------------------------------- mixture folders


def test_mixture_folder_full_length_items_sum_to_mixture(tmp_path):
    make_mixture_folder(tmp_path)
    ds = MixtureFolderDataset(tmp_path, num_sources=2, sample_rate=8000)
    assert len(ds) == 3
    assert ds.names == ["utt0.wav", "utt1.wav", "utt2.wav"]
    mix, sources = ds[1]
    assert mix.dtype == torch.float32 and sources.dtype == torch.float32
    assert mix.shape == (1, 20000) and sources.shape == (2, 20000)
    torch.testing.assert_close(sources.sum(0), mix[0], atol=1e-6, rtol=0)
    expected = sf.read(tmp_path / "s2" / "utt1.wav", dtype="float32")[0]
    torch.testing.assert_close(sources[1], torch.from_numpy(expected))


def test_mixture_folder_crops_random_per_epoch_and_centred_for_validation(tmp_path):
    make_mixture_folder(tmp_path)
    train = MixtureFolderDataset(tmp_path, 2, 8000, segment_seconds=0.5, seed=3)
    a_mix, a_src = train[1]
    b_mix, _ = train[1]
    assert a_mix.shape == (1, 4000) and a_src.shape == (2, 4000)
    torch.testing.assert_close(a_mix, b_mix)  # same (seed, epoch, index): same crop
    torch.testing.assert_close(a_src.sum(0), a_mix[0], atol=1e-6, rtol=0)
    train.set_epoch(1)
    assert not torch.equal(train[1][0], a_mix)  # another epoch: another crop
    full = MixtureFolderDataset(tmp_path, 2, 8000)[1][0]
    matches = [k for k in range(20000 - 4000 + 1) if torch.equal(full[:, k : k + 4000], a_mix)]
    assert len(matches) == 1  # the crop is one window of the file
    valid = MixtureFolderDataset(tmp_path, 2, 8000, segment_seconds=0.5, random_crop=False)
    torch.testing.assert_close(valid[1][0], full[:, 8000:12000])  # centred window


def test_mixture_folder_pads_short_files_at_the_end(tmp_path):
    make_mixture_folder(tmp_path)
    ds = MixtureFolderDataset(tmp_path, 2, 8000, segment_seconds=1.0)
    mix, sources = ds[2]  # 0.5 s file
    assert mix.shape == (1, 8000)
    assert torch.count_nonzero(mix[:, 4000:]) == 0
    assert torch.count_nonzero(sources[:, :4000]) > 0


def test_mixture_folder_resamples_to_model_rate(tmp_path):
    make_mixture_folder(tmp_path, rate=16000)
    ds = MixtureFolderDataset(tmp_path, 2, sample_rate=8000)
    mix, sources = ds[0]
    assert mix.shape == (1, 8000)
    s1 = sf.read(tmp_path / "s1" / "utt0.wav", dtype="float64")[0]
    expected = soxr.resample(s1, 16000, 8000, quality="HQ")
    np.testing.assert_allclose(sources[0].numpy(), expected, atol=1e-6)
    torch.testing.assert_close(sources.sum(0), mix[0], atol=1e-5, rtol=0)


def test_mixture_folder_sum_mode_and_custom_folders(tmp_path):
    make_mixture_folder(tmp_path)
    # a mixture file that also holds noise: "sum" rebuilds the clean mixture
    noisy = sf.read(tmp_path / "mix" / "utt0.wav")[0] + 0.1
    for i in range(3):
        x = sf.read(tmp_path / "mix" / f"utt{i}.wav")[0]
        write(tmp_path / "mix_both" / f"utt{i}.wav", x + 0.1, 8000)
    ds = MixtureFolderDataset(tmp_path, 2, 8000, mix_dir="mix_both", mixture="sum")
    mix, sources = ds[0]
    torch.testing.assert_close(sources.sum(0), mix[0])
    assert not np.allclose(mix[0].numpy(), noisy)
    stored = MixtureFolderDataset(tmp_path, 2, 8000, mix_dir="mix_both")[0][0]
    np.testing.assert_allclose(stored[0].numpy(), noisy, atol=1e-6)


def test_mixture_folder_errors_name_the_problem(tmp_path):
    make_mixture_folder(tmp_path)
    with pytest.raises(AudioError, match="s3"):
        MixtureFolderDataset(tmp_path, num_sources=3)
    (tmp_path / "s2" / "utt1.wav").unlink()
    with pytest.raises(AudioError, match=r"s2.*missing.*utt1\.wav"):
        MixtureFolderDataset(tmp_path, 2, 8000)
    write(tmp_path / "s2" / "utt1.wav", tone(500, 1.0, 8000), 8000)  # 1 s instead of 2.5 s
    write(tmp_path / "s1" / "extra.wav", tone(500, 1.0, 8000), 8000)
    with pytest.raises(AudioError, match=r"s1.*not in mix.*extra\.wav"):
        MixtureFolderDataset(tmp_path, 2, 8000)
    (tmp_path / "s1" / "extra.wav").unlink()
    ds = MixtureFolderDataset(tmp_path, 2, 8000)
    with pytest.raises(AudioError, match=r"utt1\.wav.*different lengths"):
        ds[1]
    write(tmp_path / "s2" / "utt0.wav", tone(500, 2.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"utt0\.wav.*different sample rates"):
        ds[0]
    with pytest.raises(AudioError, match="does not exist"):
        MixtureFolderDataset(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    for d in ("mix", "s1", "s2"):
        (empty / d).mkdir(parents=True)
    with pytest.raises(AudioError, match="no audio files"):
        MixtureFolderDataset(empty)
    with pytest.raises(ConfigError):
        MixtureFolderDataset(tmp_path, 2, 8000, segment_seconds=0.0)


def test_unreadable_file_is_an_audio_error(tmp_path):
    make_mixture_folder(tmp_path)
    (tmp_path / "s1" / "utt0.wav").write_bytes(b"not audio at all")
    ds = MixtureFolderDataset(tmp_path, 2, 8000)
    with pytest.raises(AudioError, match=r"utt0\.wav"):
        ds[0]


# --------------------------------------------------------------------------- noisy / clean


def test_noisy_speech_folder_sources_are_clean_then_noise(tmp_path):
    rng = np.random.default_rng(0)
    clean = tone(440, 1.2, 16000)
    noise = 0.05 * rng.standard_normal(len(clean))
    write(tmp_path / "clean" / "p232_001.wav", clean, 16000)
    write(tmp_path / "noisy" / "p232_001.wav", clean + noise, 16000)
    ds = NoisySpeechFolderDataset(tmp_path, sample_rate=16000)
    noisy_t, sources = ds[0]
    assert noisy_t.shape == (1, len(clean)) and sources.shape == (2, len(clean))
    np.testing.assert_allclose(sources[0].numpy(), clean, atol=1e-6)
    np.testing.assert_allclose(sources[1].numpy(), noise, atol=1e-6)
    torch.testing.assert_close(sources.sum(0), noisy_t[0], atol=1e-6, rtol=0)
    cropped = NoisySpeechFolderDataset(tmp_path, 16000, segment_seconds=0.5, random_crop=False)
    mix, src = cropped[0]
    assert mix.shape == (1, 8000)
    torch.testing.assert_close(src.sum(0), mix[0], atol=1e-6, rtol=0)
    (tmp_path / "clean" / "p232_001.wav").rename(tmp_path / "clean" / "p232_002.wav")
    with pytest.raises(AudioError, match="clean"):
        NoisySpeechFolderDataset(tmp_path)


# --------------------------------------------------------------------------- dynamic mixing

SPEAKER_FREQS = {"spk_a": 250.0, "spk_b": 500.0, "spk_c": 1000.0, "spk_d": 1500.0}


def make_speech_folder(root: Path, rate: int = 16000) -> None:
    for k, (name, freq) in enumerate(SPEAKER_FREQS.items()):
        for u, seconds in enumerate((1.5, 0.6)):  # one long, one shorter than the segment
            write(root / name / f"{u:02d}.wav", tone(freq, seconds, rate, seed=10 * k + u), rate)


def make_noise_folder(root: Path, rate: int = 16000) -> None:
    rng = np.random.default_rng(5)
    write(root / "white.wav", 0.1 * rng.standard_normal(int(2.0 * rate)), rate)
    write(root / "sub" / "short.wav", 0.2 * rng.standard_normal(int(0.3 * rate)), rate)


def test_dynamic_separation_items(tmp_path):
    make_speech_folder(tmp_path / "speech")
    ds = DynamicMixingDataset(
        tmp_path / "speech",
        num_sources=2,
        sample_rate=8000,
        segment_seconds=1.0,
        epoch_length=20,
        seed=1,
    )
    assert len(ds) == 20 and ds.speakers == sorted(SPEAKER_FREQS)
    freqs = set(SPEAKER_FREQS.values())
    for i in range(len(ds)):
        mix, sources = ds[i]
        assert mix.shape == (1, 8000) and sources.shape == (2, 8000)
        assert mix.dtype == torch.float32
        torch.testing.assert_close(sources.sum(0), mix[0], atol=1e-6, rtol=0)
        found = [peak_frequency(s, 8000) for s in sources]
        # each source is one speaker, and the two speakers differ
        assert all(min(abs(f - g) for g in freqs) < 5 for f in found)
        assert abs(found[0] - found[1]) > 100
        assert float(mix.abs().max()) <= 0.99 + 1e-6


def test_dynamic_mixing_skips_files_that_vanish_or_break(tmp_path):
    make_speech_folder(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise")
    sep = DynamicMixingDataset(tmp_path / "speech", sample_rate=8000, segment_seconds=0.5,
                               epoch_length=12, seed=3)
    enh = DynamicMixingDataset(tmp_path / "speech", tmp_path / "noise", task="enhancement",
                               sample_rate=8000, segment_seconds=0.5, epoch_length=12, seed=3)
    first = sorted(SPEAKER_FREQS)[0]
    (tmp_path / "speech" / first / "00.wav").unlink()  # removed while the run goes on
    (tmp_path / "noise" / "white.wav").write_text("truncated by a rebuild")
    with pytest.warns(RuntimeWarning, match="skipping this file"):
        sep_items = [sep[i] for i in range(len(sep))] + [enh[i] for i in range(len(enh))]
    for mix, sources in sep_items:
        torch.testing.assert_close(sources.sum(0), mix[0], atol=1e-6, rtol=0)
        assert bool(torch.isfinite(sources).all()) and float(sources.abs().max()) > 0
    assert {p.name for p in sep._unreadable} == {"00.wav"}
    assert {p.name for p in enh._unreadable} >= {"white.wav"}
    # a speaker with no readable file left is a clear error (a restart re-indexes the corpus)
    (tmp_path / "speech" / first / "01.wav").unlink()
    with pytest.raises(AudioError, match=f"{first}: no readable audio left"), \
            pytest.warns(RuntimeWarning, match="01.wav"):
        sep._speech_window(sep.speakers.index(first), np.random.default_rng(0))


def test_dynamic_gains_and_level_follow_their_ranges(tmp_path):
    make_speech_folder(tmp_path / "speech")
    ds = DynamicMixingDataset(
        tmp_path / "speech",
        sample_rate=8000,
        segment_seconds=0.5,
        gain_range=(-2.5, 2.5),
        level_range=(-30.0, -30.0),
        epoch_length=20,
        seed=2,
    )
    ratios = []
    for i in range(len(ds)):
        mix, sources = ds[i]
        p = sources.pow(2).mean(-1)
        ratios.append(10 * torch.log10(p[0] / p[1]).item())
        level = 10 * torch.log10(mix.pow(2).mean()).item()
        assert abs(level + 30.0) < 0.01
    assert max(abs(r) for r in ratios) <= 5.0 + 1e-3
    assert np.std(ratios) > 0.5  # gains are drawn, not fixed


def test_dynamic_items_are_reproducible_and_change_with_epoch(tmp_path):
    make_speech_folder(tmp_path / "speech")
    kwargs = {"sample_rate": 8000, "segment_seconds": 0.5, "epoch_length": 8, "seed": 7}
    a = DynamicMixingDataset(tmp_path / "speech", **kwargs)
    b = DynamicMixingDataset(tmp_path / "speech", **kwargs)
    for i in (5, 0, 3):  # order of access does not matter
        torch.testing.assert_close(a[i], b[i])
    b.set_epoch(1)
    assert any(not torch.equal(a[i][0], b[i][0]) for i in range(8))
    c = DynamicMixingDataset(tmp_path / "speech", **{**kwargs, "seed": 8})
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(8))
    with pytest.raises(IndexError):
        a[8]


def test_dynamic_enhancement_reaches_the_drawn_snr(tmp_path):
    make_speech_folder(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise")
    fixed = DynamicMixingDataset(
        tmp_path / "speech",
        tmp_path / "noise",
        task="enhancement",
        sample_rate=16000,
        segment_seconds=1.0,
        snr_range=(5.0, 5.0),
        epoch_length=10,
        seed=0,
    )
    for i in range(len(fixed)):
        mix, (speech, noise) = fixed[i]
        snr = 10 * torch.log10(speech.pow(2).mean() / noise.pow(2).mean()).item()
        assert abs(snr - 5.0) < 0.01
        torch.testing.assert_close(speech + noise, mix[0], atol=1e-6, rtol=0)
        # speech first: the speaker's tone is the speech source's peak
        assert min(abs(peak_frequency(speech, 16000) - f) for f in SPEAKER_FREQS.values()) < 5
    drawn = DynamicMixingDataset(
        tmp_path / "speech",
        tmp_path / "noise",
        task="enhancement",
        sample_rate=16000,
        segment_seconds=1.0,
        snr_range=(-5.0, 15.0),
        epoch_length=30,
        seed=0,
    )
    snrs = []
    for i in range(len(drawn)):
        _, (speech, noise) = drawn[i]
        snrs.append(10 * torch.log10(speech.pow(2).mean() / noise.pow(2).mean()).item())
        assert torch.count_nonzero(noise) == noise.numel()  # short noise looped, not padded
    assert -5.01 <= min(snrs) and max(snrs) <= 15.01 and max(snrs) - min(snrs) > 5


def test_dynamic_mixing_from_a_manifest_with_splits(tmp_path):
    make_speech_folder(tmp_path / "corpus" / "speech")
    make_noise_folder(tmp_path / "corpus" / "noise")
    rows = []
    for spk in SPEAKER_FREQS:
        split = "train" if spk in ("spk_a", "spk_b", "spk_c") else "test"
        for f in sorted((tmp_path / "corpus" / "speech" / spk).glob("*.wav")):
            rows.append(
                {"path": f"speech/{spk}/{f.name}", "kind": "speech", "split": split, "speaker": spk}
            )
    rows.append({"path": "noise/white.wav", "kind": "noise", "split": "train", "speaker": ""})
    rows.append({"path": "noise/sub/short.wav", "kind": "noise", "split": "test", "speaker": ""})
    manifest = tmp_path / "corpus" / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "kind", "split", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    train = DynamicMixingDataset(
        manifest,
        manifest,
        task="enhancement",
        sample_rate=8000,
        segment_seconds=0.5,
        epoch_length=4,
        split="train",
    )
    assert train.speakers == ["spk_a", "spk_b", "spk_c"]
    assert [p.name for p in train.noises] == ["white.wav"]
    mix, sources = train[0]
    assert mix.shape == (1, 4000) and sources.shape == (2, 4000)
    sep = DynamicMixingDataset(
        manifest,
        sample_rate=8000,
        segment_seconds=0.5,
        split="train",
        num_sources=3,
        epoch_length=2,
    )
    assert sep[1][1].shape == (3, 4000)
    with pytest.raises(AudioError, match="1 speaker"):
        DynamicMixingDataset(manifest, sample_rate=8000, split="test", num_sources=2)


def test_share_draw_weights_give_the_recorded_share() -> None:
    recorded = [True, False, False, True, False]
    weights = share_draw_weights(recorded, 0.8)
    np.testing.assert_allclose(weights, [0.4, 0.2 / 3, 0.2 / 3, 0.4, 0.2 / 3])
    np.testing.assert_allclose(share_draw_weights(recorded, 0.0), [0, 1 / 3, 1 / 3, 0, 1 / 3])
    np.testing.assert_allclose(share_draw_weights(recorded, 1.0), [0.5, 0, 0, 0.5, 0])
    # with only one kind of speaker, the share cannot apply: uniform over what there is
    np.testing.assert_allclose(share_draw_weights([False, False], 0.8), [0.5, 0.5])
    np.testing.assert_allclose(share_draw_weights([True, True, True], 0.2), [1 / 3] * 3)


def write_recorded_manifest(tmp_path: Path, recorded: set[str], column: bool = True) -> Path:
    """A manifest over make_speech_folder's speakers; ``recorded`` says which are recorded."""
    make_speech_folder(tmp_path / "corpus" / "speech")
    fields = ["path", "kind", "split", "speaker"] + (["recorded"] if column else [])
    manifest = tmp_path / "corpus" / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for spk in SPEAKER_FREQS:
            for f in sorted((tmp_path / "corpus" / "speech" / spk).glob("*.wav")):
                row = {"path": f"speech/{spk}/{f.name}", "kind": "speech", "split": "train",
                       "speaker": spk}
                if column:
                    row["recorded"] = "yes" if spk in recorded else "no"
                writer.writerow(row)
    return manifest


def test_recorded_share_draws_the_recorded_speakers_that_often(tmp_path):
    manifest = write_recorded_manifest(tmp_path, {"spk_a", "spk_c"})
    kwargs = {"sample_rate": 8000, "segment_seconds": 0.25, "split": "train", "seed": 4}
    recorded_freqs = (SPEAKER_FREQS["spk_a"], SPEAKER_FREQS["spk_c"])

    def recorded_fraction(ds: DynamicMixingDataset) -> float:
        found = [peak_frequency(s, 8000) for i in range(len(ds)) for s in ds[i][1]]
        return float(np.mean([min(abs(f - g) for g in recorded_freqs) < 5 for f in found]))

    only = DynamicMixingDataset(manifest, recorded_share=1.0, epoch_length=6, **kwargs)
    assert recorded_fraction(only) == 1.0  # both speakers of every mixture are recorded ones
    none = DynamicMixingDataset(manifest, recorded_share=0.0, epoch_length=6, **kwargs)
    assert recorded_fraction(none) == 0.0
    mostly = DynamicMixingDataset(manifest, recorded_share=0.9, epoch_length=60, **kwargs)
    uniform = DynamicMixingDataset(manifest, epoch_length=60, **kwargs)
    assert recorded_fraction(mostly) > 0.65 and 0.3 < recorded_fraction(uniform) < 0.7
    enh_noise = tmp_path / "noise"
    make_noise_folder(enh_noise / "train")
    enh = DynamicMixingDataset(manifest, enh_noise, task="enhancement", recorded_share=1.0,
                               epoch_length=6, **kwargs)
    speech_freqs = [peak_frequency(enh[i][1][0], 8000) for i in range(len(enh))]
    assert all(min(abs(f - g) for g in recorded_freqs) < 5 for f in speech_freqs)


NOISE_FREQS = {"recorded": 1500.0, "synthetic": 3100.0}


def add_noise_rows(manifest: Path, rate: int = 8000) -> None:
    """Two noise tones in ``manifest``'s folder: one marked recorded, one not."""
    t = np.arange(int(1.0 * rate)) / rate
    with manifest.open("a", newline="") as fh:
        writer = csv.writer(fh)
        for name, freq in NOISE_FREQS.items():
            write(manifest.parent / "noise" / f"{name}.wav", 0.1 * np.sin(2 * np.pi * freq * t),
                  rate)
            writer.writerow([f"noise/{name}.wav", "noise", "train", "",
                             "yes" if name == "recorded" else "no"])


def test_noise_recorded_share_draws_the_recorded_noise_that_often(tmp_path):
    manifest = write_recorded_manifest(tmp_path, {"spk_a"})
    add_noise_rows(manifest)
    kwargs = {"task": "enhancement", "sample_rate": 8000, "segment_seconds": 0.25,
              "split": "train", "seed": 3}

    def recorded_fraction(ds: DynamicMixingDataset) -> float:
        found = [peak_frequency(ds[i][1][1], 8000) for i in range(len(ds))]
        assert all(min(abs(f - g) for g in NOISE_FREQS.values()) < 5 for f in found)
        return float(np.mean([abs(f - NOISE_FREQS["recorded"]) < 5 for f in found]))

    only = DynamicMixingDataset(manifest, manifest, noise_recorded_share=1.0, epoch_length=8,
                                **kwargs)
    assert recorded_fraction(only) == 1.0
    none = DynamicMixingDataset(manifest, manifest, noise_recorded_share=0.0, epoch_length=8,
                                **kwargs)
    assert recorded_fraction(none) == 0.0
    mostly = DynamicMixingDataset(manifest, manifest, noise_recorded_share=0.9, epoch_length=60,
                                  **kwargs)
    uniform = DynamicMixingDataset(manifest, manifest, epoch_length=60, **kwargs)
    assert recorded_fraction(mostly) > 0.75 and 0.3 < recorded_fraction(uniform) < 0.7


def test_noise_recorded_share_needs_enhancement_and_a_manifest(tmp_path):
    manifest = write_recorded_manifest(tmp_path, {"spk_a"})
    add_noise_rows(manifest)
    kwargs = {"sample_rate": 8000, "split": "train"}
    with pytest.raises(ConfigError, match="enhancement"):
        DynamicMixingDataset(manifest, noise_recorded_share=0.5, **kwargs)
    with pytest.raises(ConfigError, match=r"noise_recorded_share must be in \[0, 1\]"):
        DynamicMixingDataset(manifest, manifest, task="enhancement", noise_recorded_share=-0.1,
                             **kwargs)
    make_noise_folder(tmp_path / "noise_folder" / "train")
    with pytest.raises(ConfigError, match="noise_recorded_share needs a manifest CSV"):
        DynamicMixingDataset(manifest, tmp_path / "noise_folder", task="enhancement",
                             noise_recorded_share=0.5, **kwargs)


def test_recorded_share_needs_a_manifest_that_says_who_is_recorded(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        make_speech_folder(tmp_path / "speech")
        DynamicMixingDataset(tmp_path / "speech", sample_rate=8000, recorded_share=0.5)
    bare = write_recorded_manifest(tmp_path / "bare", set(), column=False)
    with pytest.raises(ConfigError, match="'recorded' column"):
        DynamicMixingDataset(bare, sample_rate=8000, split="train", recorded_share=0.5)
    one = write_recorded_manifest(tmp_path / "one", {"spk_b"})
    with pytest.raises(AudioError, match="fewer than 2 speakers"):
        DynamicMixingDataset(one, sample_rate=8000, split="train", recorded_share=1.0)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        DynamicMixingDataset(one, sample_rate=8000, split="train", recorded_share=1.5)


def test_dynamic_mixing_reads_split_subfolders(tmp_path):
    make_speech_folder(tmp_path / "speech" / "train")
    ds = DynamicMixingDataset(
        tmp_path / "speech", split="train", sample_rate=8000, segment_seconds=0.25, epoch_length=2
    )
    assert ds.speakers == sorted(SPEAKER_FREQS)
    with pytest.raises(AudioError, match="split folder"):
        DynamicMixingDataset(tmp_path / "speech", split="valid")


def test_dynamic_mixing_configuration_errors(tmp_path):
    make_speech_folder(tmp_path / "speech")
    make_noise_folder(tmp_path / "noise")
    speech, noise = tmp_path / "speech", tmp_path / "noise"
    with pytest.raises(ConfigError, match="noise"):
        DynamicMixingDataset(speech, task="enhancement")
    with pytest.raises(ConfigError, match="enhancement"):
        DynamicMixingDataset(speech, noise, task="separation")
    with pytest.raises(ConfigError, match="2 sources"):
        DynamicMixingDataset(speech, noise, task="enhancement", num_sources=3)
    with pytest.raises(ConfigError, match="task"):
        DynamicMixingDataset(speech, task="dereverberation")
    with pytest.raises(ConfigError, match="snr_range"):
        DynamicMixingDataset(speech, noise, task="enhancement", snr_range=(10, 0))
    with pytest.raises(ConfigError, match="segment_seconds"):
        DynamicMixingDataset(speech, segment_seconds=-1.0)
    with pytest.raises(ConfigError, match="seed"):
        DynamicMixingDataset(speech, seed=-1)
    with pytest.raises(AudioError, match="5 needed"):
        DynamicMixingDataset(speech, num_sources=5)
    with pytest.raises(AudioError, match="does not exist"):
        DynamicMixingDataset(tmp_path / "missing")
    (tmp_path / "empty_noise").mkdir()
    with pytest.raises(AudioError, match="no noise"):
        DynamicMixingDataset(speech, tmp_path / "empty_noise", task="enhancement")


# --------------------------------------------------------------------------- loaders


@pytest.mark.slow  # starts worker processes
def test_change_speed_scales_pitch_and_length_together():
    rate = 8000
    x = tone(400.0, 1.0, rate)
    fast = change_speed(x, 1.25)
    slow = change_speed(x, 0.8)
    assert change_speed(x, 1.0) is x
    assert abs(len(fast) - 6400) <= 1 and abs(len(slow) - 10000) <= 1
    assert peak_frequency(torch.from_numpy(fast), rate) == pytest.approx(500.0, abs=2)
    assert peak_frequency(torch.from_numpy(slow), rate) == pytest.approx(320.0, abs=2)
    with pytest.raises(ConfigError, match="positive"):
        change_speed(x, 0.0)


def test_speed_range_plays_every_voice_at_a_drawn_speed(tmp_path):
    make_speech_folder(tmp_path / "speech")
    kwargs = {"num_sources": 2, "sample_rate": 8000, "segment_seconds": 1.0,
              "epoch_length": 12, "seed": 2}
    fixed = DynamicMixingDataset(tmp_path / "speech", speed_range=(1.25, 1.25), **kwargs)
    plain = DynamicMixingDataset(tmp_path / "speech", **kwargs)
    scaled = {1.25 * f for f in SPEAKER_FREQS.values()}
    for i in range(len(fixed)):
        mix, sources = fixed[i]
        assert sources.shape == (2, 8000)
        torch.testing.assert_close(sources.sum(0), mix[0], atol=1e-6, rtol=0)
        for source in sources:
            assert min(abs(peak_frequency(source, 8000) - f) for f in scaled) < 5
    drawn = DynamicMixingDataset(tmp_path / "speech", speed_range=(0.8, 1.25), **kwargs)
    peaks = [peak_frequency(source, 8000) for i in range(len(drawn)) for source in drawn[i][1]]
    # each peak is some speaker's tone at a speed in the range (the nearest speaker, on a
    # log scale, is the one the ratio refers to)
    ratios = [p / min(SPEAKER_FREQS.values(), key=lambda f, p=p: abs(np.log(p / f)))
              for p in peaks]
    assert all(0.8 - 0.02 < r < 1.25 + 0.02 for r in ratios)
    assert len({round(r, 2) for r in ratios}) > 6  # speeds differ from draw to draw
    torch.testing.assert_close(drawn[3][1], drawn[3][1])  # reproducible
    assert not torch.equal(drawn[3][1], plain[3][1])

    # windows of long files are read factor times as long (plus a margin): they fill the
    # segment to both ends (a window read at its plain length would run short at speeds > 1)
    for name in ("long_a", "long_b"):
        write(tmp_path / "long" / name / "0.wav", tone(300.0, 2.0, 8000), 8000)
    long = DynamicMixingDataset(tmp_path / "long", speed_range=(0.8, 1.25), **kwargs)
    for i in range(len(long)):
        for source in long[i][1].abs():
            body = float(source.max())
            assert float(source[:30].max()) > 0.8 * body
            assert float(source[-30:].max()) > 0.8 * body


def test_slowed_short_files_give_windows_at_random_offsets(tmp_path):
    # ramps of 6480 samples, slowed to 8100: longer than the segment (8000) though shorter
    # than the window read (0.8 x 8000 + margins = 6528), so they are read whole and cropped
    for name in ("ramp_a", "ramp_b"):
        write(tmp_path / name / "0.wav", np.linspace(0.05, 1.0, 6480), 8000)
    ds = DynamicMixingDataset(tmp_path, num_sources=2, sample_rate=8000, segment_seconds=1.0,
                              epoch_length=10, seed=0, speed_range=(0.8, 0.8))
    # a ramp's first-to-last ratio (scale-free) says where the window starts
    ratios = {round(float(s[0] / s[-1]), 4) for i in range(len(ds)) for s in ds[i][1]}
    assert len(ratios) > 5


def test_noise_speed_range_changes_the_noise_only(tmp_path):
    manifest = write_recorded_manifest(tmp_path, {"spk_a"})
    add_noise_rows(manifest)
    kwargs = {"task": "enhancement", "sample_rate": 8000, "segment_seconds": 0.25,
              "split": "train", "seed": 3, "epoch_length": 8}
    ds = DynamicMixingDataset(manifest, manifest, noise_speed_range=(0.9, 0.9), **kwargs)
    speech_freqs = set(SPEAKER_FREQS.values())
    noise_freqs = {0.9 * f for f in NOISE_FREQS.values()}
    for i in range(len(ds)):
        speech, noise = ds[i][1]
        assert min(abs(peak_frequency(speech, 8000) - f) for f in speech_freqs) < 5
        assert min(abs(peak_frequency(noise, 8000) - f) for f in noise_freqs) < 5
    with pytest.raises(ConfigError, match="noise_speed_range applies to enhancement"):
        DynamicMixingDataset(manifest, noise_speed_range=(0.9, 1.1), sample_rate=8000)
    for bad in ((1.1, 0.9), (0.4, 1.0), (1.0, 2.5)):
        with pytest.raises(ConfigError, match="speed_range must be"):
            DynamicMixingDataset(manifest, manifest, speed_range=bad, **kwargs)


def test_dataloader_with_workers_matches_direct_access(tmp_path):
    make_speech_folder(tmp_path / "speech")
    make_mixture_folder(tmp_path / "wsj")
    dynamic = DynamicMixingDataset(
        tmp_path / "speech", sample_rate=8000, segment_seconds=0.25, epoch_length=6, seed=4
    )
    loader = DataLoader(dynamic, batch_size=3, num_workers=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(3, 1, 2000)] * 2
    expected = torch.stack([dynamic[i][0] for i in range(6)])
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), expected)

    folder = MixtureFolderDataset(tmp_path / "wsj", 2, 8000)  # full lengths differ
    mixes, sources, lengths = next(
        iter(DataLoader(folder, batch_size=3, num_workers=2, collate_fn=collate_padded))
    )
    assert mixes.shape == (3, 1, 20000) and sources.shape == (3, 2, 20000)
    assert lengths.tolist() == [8000, 20000, 4000]
    assert torch.count_nonzero(mixes[2, :, 4000:]) == 0
    torch.testing.assert_close(mixes[0, :, :8000], folder[0][0])


@pytest.mark.parametrize("rate", [16000, 44100])
def test_partial_window_read_matches_the_resampled_file(tmp_path, rate):
    path = tmp_path / "long.wav"
    write(path, tone(220, 3.0, rate) + tone(1300, 3.0, rate, seed=1), rate)
    full = read_mono(path, 8000)
    for seed in range(3):
        window = read_window(path, 8000, 4000, np.random.default_rng(seed))
        assert window.shape == (4000,)
        errors = [np.max(np.abs(full[k : k + 4000] - window)) for k in range(len(full) - 4000)]
        assert min(errors) < 1e-5  # the same samples as resampling the whole file
