"""Audio validation, streaming reads at the model rate (diffsep.audio), resampling
(diffsep.resample) and atomic streaming writes (diffsep.writer)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_writing import AtomicGroup, write_audio

from diffsep.audio import (
    AudioInfo,
    apply_channel_mode,
    check_min_length,
    parse_channel_mode,
    probe_audio,
    read_audio,
    stream_model_audio,
)
from diffsep.errors import AudioError, ConfigError, OutputError
from diffsep.resample import StreamResampler, resample, resampled_length
from diffsep.writer import (
    AtomicAudioWriter,
    choose_subtype,
    commit_all,
    default_subtype,
    format_from_extension,
)

RATES = [8000, 16000, 22050, 44100, 48000]


def _sine(freq: float, rate: int, frames: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(frames) / rate)).astype(np.float32)


def _dominant_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.argmax(spectrum) * rate / signal.size)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


# ------------------------------------------------------------------------- validation -------


def test_probe_audio_describes_a_file(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, np.zeros((1234, 2), np.float32), 22050, subtype="PCM_24")
    info = probe_audio(path)
    assert info == AudioInfo(path, 22050, 2, 1234, "FLAC", "PCM_24")
    assert info.duration == pytest.approx(1234 / 22050)


def test_missing_folder_text_and_empty_inputs_are_rejected_by_name(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: no such file"):
        probe_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="is a folder"):
        probe_audio(tmp_path)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file"):
        read_audio(text)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 8000)
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio file"):
        probe_audio(empty)
    with pytest.raises(AudioError, match=r"empty\.wav"):
        stream_model_audio(empty, 8000)


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, _sine(440, 16000, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:30])  # header fragment only
    with pytest.raises(AudioError, match=r"cut\.flac"):
        read_audio(path)


def _as_unprivileged(check, *args) -> str:
    """Run ``check(*args)`` as the user 'nobody' when we are root (root ignores permissions);
    returns ``'ok'`` or ``'ExceptionName: message'``."""

    def outcome() -> str:
        try:
            check(*args)
        except Exception as err:  # noqa: BLE001 - reported to the parent
            return f"{type(err).__name__}: {err}"
        return "ok"

    if os.geteuid() != 0:
        return outcome()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child() -> None:
        os.setgid(65534)
        os.setuid(65534)
        queue.put(outcome())

    process = context.Process(target=child)
    process.start()
    process.join(30)
    return queue.get(timeout=5)


@pytest.fixture()
def shared_tmp():
    """A temporary folder that an unprivileged user can enter."""
    folder = Path(tempfile.mkdtemp(prefix="diffsep-perm-"))
    folder.chmod(0o755)
    yield folder
    for path in folder.rglob("*"):
        path.chmod(0o700)
    shutil.rmtree(folder)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unreadable_file_is_rejected(shared_tmp):
    path = shared_tmp / "locked.wav"
    sf.write(path, np.zeros(100, np.float32), 8000)
    path.chmod(0)
    result = _as_unprivileged(probe_audio, path)
    assert result.startswith("AudioError") and "locked.wav: cannot read" in result, result


def test_nan_samples_are_reported_with_file_and_time(tmp_path):
    path = tmp_path / "bad.wav"
    signal = _sine(300, 8000, 16000)
    signal[12000] = np.nan
    sf.write(path, signal, 8000, subtype="FLOAT")
    message = r"bad\.wav: contains NaN or Inf samples \(first at 1\.500 s"
    with pytest.raises(AudioError, match=message):
        read_audio(path)
    stream = stream_model_audio(path, 16000, block_frames=4096)
    with pytest.raises(AudioError, match=r"bad\.wav: contains NaN or Inf.*1\.500 s"):
        for _ in stream:
            pass
    signal[12000] = np.inf
    sf.write(path, signal, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        read_audio(path)


def test_check_min_length(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, np.zeros(1000, np.float32), 16000)  # 500 samples at 8 kHz
    info = probe_audio(path)
    with pytest.raises(AudioError, match=r"short\.wav: too short .*500 samples at 8000 Hz.*510"):
        check_min_length(info, 510, 8000)
    check_min_length(info, 510, 16000)  # 1000 samples: fine


# ------------------------------------------------------------------------- whole-file read ---


@pytest.mark.parametrize(
    "subtype,tolerance", [("PCM_16", 1 / 32768), ("PCM_24", 1 / 2**23), ("FLOAT", 0.0)]
)
def test_write_read_round_trip_wav(tmp_path, subtype, tolerance):
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.9, 0.9, size=(2, 3000)).astype(np.float32)
    path = write_audio(tmp_path / "x.wav", audio, 16000, subtype=subtype)
    assert sf.info(path).subtype == subtype
    back, rate = read_audio(path)
    assert rate == 16000 and back.shape == (2, 3000) and back.dtype == np.float32
    assert np.max(np.abs(back - audio)) <= tolerance


def test_round_trip_flac_and_ogg(tmp_path):
    audio = _sine(440, 16000, 16000)[None]
    flac = write_audio(tmp_path / "x.flac", audio, 16000)
    assert sf.info(flac).format == "FLAC"
    back, _ = read_audio(flac)
    assert np.max(np.abs(back - audio)) <= 1 / 32768
    ogg = write_audio(tmp_path / "x.ogg", audio, 16000)
    assert sf.info(ogg).subtype == "VORBIS"
    back, _ = read_audio(ogg)
    assert back.shape == audio.shape
    correlation = np.corrcoef(back[0, 2000:-2000], audio[0, 2000:-2000])[0, 1]
    assert correlation > 0.99


# ------------------------------------------------------------------------- resampling --------


@pytest.mark.parametrize("in_rate", RATES)
@pytest.mark.parametrize("out_rate", [8000, 16000, 44100])
def test_stream_resampling_length_and_frequency(tmp_path, in_rate, out_rate):
    frames = int(in_rate * 0.75) + 13
    path = tmp_path / "tone.wav"
    sf.write(path, _sine(437.0, in_rate, frames), in_rate, subtype="FLOAT")
    stream = stream_model_audio(path, out_rate, block_frames=3001)
    blocks = list(stream)
    out = np.concatenate(blocks, axis=1)
    assert out.shape == (1, resampled_length(frames, in_rate, out_rate))
    assert out.shape[1] == round(frames * out_rate / in_rate) or (
        (frames * out_rate / in_rate) % 1 == 0.5
    )
    assert stream.frames == stream.expected_frames == out.shape[1]
    assert all(block.dtype == np.float32 and block.ndim == 2 for block in blocks)
    expected = _sine(437.0, out_rate, out.shape[1])
    inner = slice(out_rate // 50, -out_rate // 50)  # ignore the filter's edge transients
    assert np.max(np.abs(out[0, inner] - expected[inner])) < 2e-3
    assert abs(_dominant_frequency(out[0], out_rate) - 437.0) < 2.0


def test_stream_resampler_exact_length_for_any_block_sizes():
    rng = np.random.default_rng(3)
    for in_rate, out_rate in [(24000, 22050), (44100, 8000), (8000, 44100), (16000, 16000)]:
        for frames in [1, 2, 511, 24080, 9999]:
            signal = rng.standard_normal((frames, 1)).astype(np.float32)
            resampler = StreamResampler(in_rate, out_rate, 1)
            pieces, position = [], 0
            while position < frames:
                size = int(rng.integers(1, 3000))
                pieces.append(resampler.process(signal[position : position + size]))
                position += size
            pieces.append(resampler.flush())
            assert sum(p.shape[0] for p in pieces) == resampled_length(frames, in_rate, out_rate)


def test_resampled_length_rounds_half_up():
    assert resampled_length(1000, 8000, 44100) == 5513  # 5512.5
    assert resampled_length(12345, 16000, 8000) == 6173  # 6172.5
    assert resampled_length(44101, 44100, 8000) == 8000
    assert resampled_length(777, 16000, 16000) == 777


def test_one_shot_resample_matches_stream(tmp_path):
    audio = np.stack([_sine(300, 22050, 5000), _sine(900, 22050, 5000)])
    out = resample(audio, 22050, 8000)
    assert out.shape == (2, resampled_length(5000, 22050, 8000))
    path = tmp_path / "s.wav"
    sf.write(path, audio.T, 22050, subtype="FLOAT")
    streamed = np.concatenate(list(stream_model_audio(path, 8000, "each", block_frames=777)), 1)
    np.testing.assert_allclose(streamed, out, atol=1e-6)


# ------------------------------------------------------------------------- channels ----------


def test_channel_modes(tmp_path):
    left, right = _sine(200, 8000, 4000), _sine(700, 8000, 4000, 0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")

    def stream(mode):
        return np.concatenate(list(stream_model_audio(path, 8000, mode, block_frames=1000)), 1)

    np.testing.assert_allclose(stream("mix"), ((left + right) / 2)[None], atol=1e-7)
    np.testing.assert_array_equal(stream("first"), left[None])
    np.testing.assert_array_equal(stream(1), right[None])
    np.testing.assert_array_equal(stream("each"), np.stack([left, right]))
    assert stream_model_audio(path, 8000, "each").channels == 2
    assert stream_model_audio(path, 8000, "mix").channels == 1
    with pytest.raises(AudioError, match=r"stereo\.wav: has 2 channel\(s\); channel 2"):
        stream_model_audio(path, 8000, 2)


def test_parse_channel_mode():
    assert parse_channel_mode("MIX") == "mix"
    assert parse_channel_mode("each") == "each"
    assert parse_channel_mode("first") == "first"
    assert parse_channel_mode("1") == 1
    with pytest.raises(ConfigError):
        parse_channel_mode("left")
    with pytest.raises(ConfigError):
        parse_channel_mode("-1")


def test_apply_channel_mode_keeps_mono_untouched():
    frames = np.arange(6, dtype=np.float32).reshape(6, 1)
    assert apply_channel_mode(frames, "mix") is frames


# ------------------------------------------------------------------------- formats -----------


def test_output_formats_and_subtypes():
    assert format_from_extension("out/x.WAV") == ("WAV", "PCM_16")
    assert format_from_extension("flac") == ("FLAC", "PCM_16")
    assert format_from_extension("a.opus") == ("OGG", "OPUS")
    with pytest.raises(ConfigError, match="unsupported output extension"):
        format_from_extension("x.txt")
    assert default_subtype("WAV") == "PCM_16"
    assert default_subtype("OGG") == "VORBIS"
    assert choose_subtype("WAV", "int24") == "PCM_24"
    assert choose_subtype("WAV", "float32") == "FLOAT"
    assert choose_subtype("FLAC", None) == "PCM_16"
    with pytest.raises(ConfigError, match="FLAC"):
        choose_subtype("FLAC", "float32")
    with pytest.raises(ConfigError, match="lossy"):
        choose_subtype("OGG", "int24")
    with pytest.raises(ConfigError):
        choose_subtype("WAV", "int8")


# ------------------------------------------------------------------------- atomic writer -----


def test_writer_streams_and_resamples_to_exact_length(tmp_path):
    input_rate, model_rate, frames = 44100, 8000, 44101
    model_signal = _sine(330.0, model_rate, resampled_length(frames, input_rate, model_rate))
    path = tmp_path / "s1" / "a.wav"
    with AtomicAudioWriter(path, input_rate, 1, source_rate=model_rate, frames=frames,
                           subtype="FLOAT") as writer:
        for start in range(0, model_signal.size, 999):
            writer.write(model_signal[None, start : start + 999])
    back, rate = read_audio(path)
    assert rate == input_rate and back.shape == (1, frames)
    expected = _sine(330.0, input_rate, frames)
    inner = slice(2000, -2000)
    assert np.max(np.abs(back[0, inner] - expected[inner])) < 2e-3
    assert _leftovers(path.parent) == []


def test_writer_accepts_torch_tensors(tmp_path):
    import torch

    block = torch.linspace(-0.5, 0.5, 100).reshape(1, 100)
    path = write_audio(tmp_path / "t.wav", block, 8000, subtype="FLOAT")
    back, _ = read_audio(path)
    np.testing.assert_array_equal(back, block.numpy())


def test_writer_clips_pcm_and_counts_clipped_samples(tmp_path):
    audio = np.array([[0.5, 1.5, -2.0, 0.25, 1.0]], np.float32)
    with AtomicAudioWriter(tmp_path / "c.wav", 8000, 1) as writer:
        writer.write(audio)
    assert writer.clipped_samples == 2
    assert writer.peak == pytest.approx(2.0)
    back, _ = read_audio(tmp_path / "c.wav")
    assert back.max() <= 1.0 and back.min() >= -1.0
    with AtomicAudioWriter(tmp_path / "f.wav", 8000, 1, subtype="FLOAT") as writer:
        writer.write(audio)
    assert writer.clipped_samples == 0
    np.testing.assert_array_equal(read_audio(tmp_path / "f.wav")[0], audio)


def test_writer_pads_to_requested_frames(tmp_path):
    with AtomicAudioWriter(tmp_path / "p.wav", 8000, 2, frames=50, subtype="FLOAT") as writer:
        writer.write(np.ones((2, 30), np.float32))
    back, _ = read_audio(tmp_path / "p.wav")
    assert back.shape == (2, 50)
    assert np.all(back[:, :30] == 1) and np.all(back[:, 30:] == 0)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_keeps_old_output_and_leaves_no_partial(tmp_path, interrupt):
    path = tmp_path / "out.wav"
    old = _sine(100, 8000, 800)
    sf.write(path, old, 8000, subtype="FLOAT")
    before = path.read_bytes()
    with pytest.raises(interrupt):
        with AtomicAudioWriter(path, 8000, 1) as writer:
            writer.write(np.zeros((1, 4000), np.float32))
            assert writer.temp_path.exists() and writer.temp_path.parent == tmp_path
            assert writer.temp_path.name.startswith(".out.partial-")
            raise interrupt()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_unwritable_output_folder_raises_output_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"file\.txt.*cannot create the output folder"):
        AtomicAudioWriter(blocker / "sub" / "a.wav", 8000, 1)
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(OutputError, match=r"dir\.wav: is a folder"):
        AtomicAudioWriter(tmp_path / "dir.wav", 8000, 1)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_read_only_folder_raises_output_error(shared_tmp):
    folder = shared_tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    result = _as_unprivileged(AtomicAudioWriter, folder / "a.wav", 8000, 1)
    assert result.startswith("OutputError"), result
    assert "ro/a.wav: cannot write to the output folder" in result
    assert list(folder.iterdir()) == []


def test_invalid_format_combinations_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="FLAC files cannot use subtype FLOAT"):
        AtomicAudioWriter(tmp_path / "a.flac", 8000, 1, subtype="FLOAT")
    with pytest.raises(ConfigError, match="unsupported output extension"):
        AtomicAudioWriter(tmp_path / "a.xyz", 8000, 1)
    assert _leftovers(tmp_path) == []


@pytest.mark.slow  # starts an interpreter
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_disk_full_becomes_output_error_and_cleans_up(tmp_path):
    """A file-size limit makes writes fail with EFBIG, like a full disk."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys, numpy as np
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        from diffsep.writer import AtomicAudioWriter
        from diffsep.errors import OutputError
        path = Path({str(tmp_path / 'big.wav')!r})
        try:
            with AtomicAudioWriter(path, 8000, 1) as writer:
                for _ in range(40):
                    writer.write(np.zeros((1, 4000), np.float32))
        except OutputError as err:
            print("OUTPUT-ERROR:", err)
        leftovers = [p.name for p in path.parent.iterdir()]
        print("LEFT:", leftovers)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "OUTPUT-ERROR:" in result.stdout
    assert "big.wav: cannot write audio (" in result.stdout
    assert "LEFT: []" in result.stdout


# ------------------------------------------------------------------------- groups ------------


def test_group_commits_all_or_nothing(tmp_path):
    paths = [tmp_path / f"s{k}" / "mix.wav" for k in (1, 2)]
    with pytest.raises(KeyboardInterrupt):
        with AtomicGroup() as group:
            writers = [group.open(p, 8000, 1) for p in paths]
            writers[0].write(np.zeros((1, 100), np.float32))
            raise KeyboardInterrupt
    assert not any(p.exists() for p in paths)
    assert all(_leftovers(p.parent) == [] for p in paths)

    with AtomicGroup() as group:
        writers = [group.open(p, 8000, 1, subtype="FLOAT") for p in paths]
        for k, writer in enumerate(writers):
            writer.write(np.full((1, 100), 0.1 * (k + 1), np.float32))
    assert [w.state for w in writers] == ["committed", "committed"]
    for k, path in enumerate(paths):
        np.testing.assert_allclose(read_audio(path)[0], 0.1 * (k + 1), rtol=1e-6)


def test_commit_all_touches_nothing_if_one_output_fails_to_finish(tmp_path):
    first, second = tmp_path / "s1.wav", tmp_path / "s2.wav"
    sf.write(first, np.full(10, 0.5, np.float32), 8000, subtype="FLOAT")
    old = first.read_bytes()
    good = AtomicAudioWriter(first, 8000, 1)
    good.write(np.zeros((1, 10), np.float32))
    bad = AtomicAudioWriter(second, 8000, 1, frames=10)

    real_close, calls = bad._file.close, []  # type: ignore[union-attr]

    def broken_close() -> None:  # fails once, like a full disk while flushing the header
        if not calls:
            calls.append(1)
            raise OSError(28, "No space left on device")
        real_close()

    bad._file.close = broken_close  # type: ignore[union-attr,method-assign]
    with pytest.raises(OutputError, match=r"s2\.wav: cannot finish writing \(No space left"):
        commit_all([good, bad])
    assert first.read_bytes() == old
    assert not second.exists()
    assert good.state == "aborted"
    assert _leftovers(tmp_path) == []


def test_ctrl_c_during_group_renames_is_delivered_after_all_renames(tmp_path, monkeypatch):
    # Python's own Ctrl-C handler, whatever the test process inherited (a job started in the
    # background by a non-interactive shell starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_during_group_renames(tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_during_group_renames(tmp_path, monkeypatch):
    paths = [tmp_path / f"s{k}.wav" for k in (1, 2, 3)]
    writers = [AtomicAudioWriter(p, 8000, 1) for p in paths]
    for writer in writers:
        writer.write(np.zeros((1, 10), np.float32))
    real_replace, renamed = os.replace, []

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        renamed.append(Path(dst))
        if len(renamed) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the first rename

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        commit_all(writers)
    assert renamed == paths  # the interrupt waited for the whole group
    assert all(p.exists() for p in paths) and _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_writer_refuses_non_finite_estimates(tmp_path):
    path = tmp_path / "n.wav"
    with pytest.raises(OutputError, match=r"n\.wav: the estimate contains NaN or Inf.*0\.250 s"):
        with AtomicAudioWriter(path, 8000, 1) as writer:
            block = np.zeros((1, 4000), np.float32)
            block[0, 2000] = np.nan
            writer.write(block)
    assert not path.exists() and _leftovers(tmp_path) == []


def test_writer_without_context_manager(tmp_path):
    writer = AtomicAudioWriter(tmp_path / "m.flac", 8000, 1)
    writer.write(np.zeros(100, np.float32))
    assert not (tmp_path / "m.flac").exists()
    assert writer.commit() == tmp_path / "m.flac"
    assert probe_audio(tmp_path / "m.flac").frames == 100
    writer2 = AtomicAudioWriter(tmp_path / "n.wav", 8000, 1)
    writer2.abort()
    assert not (tmp_path / "n.wav").exists() and _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        writer2.write(np.zeros(10, np.float32))


# ------------------------------------------------------------------------- whole pipeline ----


def test_streaming_pipeline_round_trip_through_windows(tmp_path):
    """Reader -> windower -> (identity 'separator') -> overlap-add -> group of writers."""
    import torch

    from diffsep.chunking import StreamingOverlapAdd, StreamingWindower

    input_rate, model_rate, frames = 44100, 8000, 3 * 44100 + 17
    left, right = _sine(300, input_rate, frames), _sine(500, input_rate, frames, 0.25)
    source = tmp_path / "in.wav"
    sf.write(source, np.stack([left, right], axis=1), input_rate, subtype="FLOAT")

    info = probe_audio(source)
    stream = stream_model_audio(info, model_rate, "each", block_frames=5000)
    window, hop = 4000, 3000
    windower = StreamingWindower(window, hop)
    olas = [StreamingOverlapAdd(2, window, hop, align=True) for _ in range(stream.channels)]
    out = [tmp_path / "out" / f"s{k}" / "in.wav" for k in (1, 2)]
    with AtomicGroup() as group:
        writers = [group.open(p, info.sample_rate, stream.channels, subtype="FLOAT",
                              source_rate=model_rate, frames=info.frames) for p in out]

        def write(pieces: list[torch.Tensor]) -> None:
            stacked = torch.stack(pieces, dim=1)  # (K, C', n)
            for k, writer in enumerate(writers):
                writer.write(stacked[k])

        def consume(windows) -> None:
            for item in windows:
                for channel, ola in enumerate(olas):
                    mixture = item.data[channel : channel + 1]
                    ola.add(item.start, torch.cat([mixture, -0.5 * mixture]))
                write([ola.pop_ready() for ola in olas])

        for block in stream:
            consume(windower.push(block))
        consume(windower.finish())
        write([ola.finish(windower.total) for ola in olas])
        assert not any(p.exists() for p in out)  # nothing visible before the group commits

    first, rate = read_audio(out[0])
    second, _ = read_audio(out[1])
    assert rate == input_rate and first.shape == (2, frames) and second.shape == (2, frames)
    inner = slice(2000, -2000)
    np.testing.assert_allclose(first[:, inner], np.stack([left, right])[:, inner], atol=2e-3)
    np.testing.assert_allclose(second, -0.5 * first, atol=1e-6)
