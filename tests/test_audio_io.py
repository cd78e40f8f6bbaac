"""Audio loading: every libsndfile format, downmix, resampling, spans and clear errors."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from babelcast.audio.io import (SAMPLE_RATE_HZ, AudioError, decode_audio, load_audio, pcm_to_float, resample,
                                to_model_audio)
from babelcast.audio.raw import RawAudioStream

TONE_HZ = 440.0


def tone(seconds: float, rate_hz: int, channels: int = 1, freq_hz: float = TONE_HZ) -> np.ndarray:
    """A 0.5-amplitude sine, (frames,) or (frames, channels) with the same signal in each channel."""
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    x = (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


def peak_frequency_hz(x: np.ndarray, rate_hz: int) -> float:
    """The strongest frequency of a signal."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate_hz)[np.argmax(spectrum)])


# (file name, soundfile format, subtype, sample rate, channels)
FORMATS = [
    ("stereo_44k.wav", "WAV", "PCM_16", 44100, 2),
    ("mono_16k.wav", "WAV", "FLOAT", 16000, 1),
    ("six_ch_48k.wav", "WAV", "PCM_24", 48000, 6),
    ("stereo_22k.flac", "FLAC", "PCM_16", 22050, 2),
    ("mono_8k.flac", "FLAC", "PCM_16", 8000, 1),
    ("stereo_44k.ogg", "OGG", "VORBIS", 44100, 2),
    ("mono_48k.opus", "OGG", "OPUS", 48000, 1),
    ("stereo_44k.mp3", "MP3", "MPEG_LAYER_III", 44100, 2),
    ("mono_24k.mp3", "MP3", "MPEG_LAYER_III", 24000, 1),
]


@pytest.mark.parametrize("name, fmt, subtype, rate_hz, channels", FORMATS, ids=[f[0] for f in FORMATS])
def test_load_audio_any_format_gives_float32_mono_16k(tmp_path, name, fmt, subtype, rate_hz, channels):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    path = tmp_path / name
    sf.write(path, tone(1.0, rate_hz, channels), rate_hz, format=fmt, subtype=subtype)

    audio = load_audio(path)

    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.flags.c_contiguous
    # Lossy codecs add encoder delay/padding; PCM must be exact.
    tolerance = 0 if fmt in ("WAV", "FLAC") else int(0.1 * SAMPLE_RATE_HZ)
    assert abs(len(audio) - SAMPLE_RATE_HZ) <= tolerance
    assert peak_frequency_hz(audio, SAMPLE_RATE_HZ) == pytest.approx(TONE_HZ, abs=3)
    assert 0.3 < np.abs(audio).max() < 0.7  # downmix of identical channels keeps the level


def test_downmix_is_the_channel_mean(tmp_path):
    left = np.full(1600, 0.5, dtype=np.float32)
    right = np.full(1600, 0.1, dtype=np.float32)
    path = tmp_path / "dc.wav"
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE_HZ, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.3, atol=1e-6)


def test_load_audio_span(tmp_path):
    ramp = np.arange(SAMPLE_RATE_HZ, dtype=np.float32) / SAMPLE_RATE_HZ
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, SAMPLE_RATE_HZ, subtype="FLOAT")
    span = load_audio(path, offset_s=0.25, duration_s=0.5)
    np.testing.assert_array_equal(span, ramp[4000:12000])
    np.testing.assert_array_equal(load_audio(path, offset_s=0.75), ramp[12000:])


def test_offset_past_end_is_an_error(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, tone(0.5, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ)
    with pytest.raises(AudioError, match=r"short\.wav: offset 2 s is past the end"):
        load_audio(path, offset_s=2.0)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(info.value) == f"{path}: file not found"
    assert info.value.source == str(path) and isinstance(info.value, ValueError)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file \(Format not recognised\)"):
        load_audio(path)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE_HZ)
    with pytest.raises(AudioError, match=r"empty\.wav: contains no audio samples"):
        load_audio(path)


def test_decode_audio_matches_load_audio(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, tone(0.5, 22050, channels=2), 22050)
    decoded = decode_audio(path.read_bytes(), name="upload.flac")
    np.testing.assert_array_equal(decoded, load_audio(path))


def test_decode_audio_errors_name_the_upload():
    with pytest.raises(AudioError, match=r"^upload\.bin: no data"):
        decode_audio(b"", name="upload.bin")
    with pytest.raises(AudioError, match=r"^upload\.bin: not a readable audio file"):
        decode_audio(b"\x00\x01garbage" * 50, name="upload.bin")
    with pytest.raises(AudioError, match=r"^<bytes>: "):
        decode_audio(b"garbage" * 50)


def test_pcm_s16le():
    data = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    x = pcm_to_float(data, "pcm_s16le")
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [0.0, 0.5, -1.0, 32767 / 32768])


def test_pcm_f32le():
    samples = np.array([0.25, -0.5, 1.0], dtype="<f4")
    np.testing.assert_array_equal(pcm_to_float(samples.tobytes(), "f32le"), samples)
    assert pcm_to_float(b"", "f32le").shape == (0,)


def test_pcm_misaligned_byte_counts():
    with pytest.raises(AudioError, match="3 bytes is not a whole number of pcm_s16le samples"):
        pcm_to_float(b"\x00\x01\x02", "pcm_s16le")
    with pytest.raises(AudioError, match=r"^ws#1: 6 bytes is not a whole number of f32le samples \(4 bytes each\)"):
        pcm_to_float(b"\x00" * 6, "f32le", name="ws#1")
    with pytest.raises(AudioError, match="unknown PCM encoding 'mulaw'"):
        pcm_to_float(b"\x00\x00", "mulaw")


def test_resample_lengths_and_identity():
    x = tone(1.0, 48000)
    y = resample(x, 48000, SAMPLE_RATE_HZ)
    assert y.dtype == np.float32 and len(y) == SAMPLE_RATE_HZ
    assert peak_frequency_hz(y, SAMPLE_RATE_HZ) == pytest.approx(TONE_HZ, abs=2)
    np.testing.assert_array_equal(resample(x, 48000, 48000), x)
    with pytest.raises(ValueError, match="sample rates must be positive"):
        resample(x, 0, SAMPLE_RATE_HZ)


def test_load_audio_accepts_str_paths(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, tone(0.1, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ)
    assert len(load_audio(str(path))) == len(load_audio(Path(path))) == 1600


# ---- to_model_audio: what a Python user has → what the model eats


def test_arrays_at_any_rate_and_channel_count_become_16k_mono():
    stereo_44k = tone(1.0, 44100, channels=2)
    y = to_model_audio(stereo_44k, sample_rate=44100)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == SAMPLE_RATE_HZ
    assert abs(peak_frequency_hz(y, SAMPLE_RATE_HZ) - TONE_HZ) < 2
    assert np.array_equal(to_model_audio(tone(0.5, SAMPLE_RATE_HZ)), tone(0.5, SAMPLE_RATE_HZ))  # default 16 kHz


def test_integer_pcm_is_scaled_like_soundfile_reads_it(tmp_path):
    path = tmp_path / "pcm16.wav"
    sf.write(path, tone(0.5, 8000), 8000, subtype="PCM_16")
    as_int16, rate_hz = sf.read(path, dtype="int16")
    as_float, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(to_model_audio(as_int16, sample_rate=rate_hz), to_model_audio(as_float, rate_hz),
                               atol=1e-6)
    np.testing.assert_allclose(to_model_audio(path), to_model_audio(as_float, rate_hz), atol=1e-6)  # a path
    assert np.allclose(to_model_audio(np.array([0, 128, 255], np.uint8)), [-1.0, 0.0, 127 / 128])


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    x = tone(0.25, 22050, channels=2)
    np.testing.assert_array_equal(to_model_audio(torch.from_numpy(x), 22050), to_model_audio(x, 22050))


@pytest.mark.parametrize("audio, rate, message", [
    (np.zeros((2, 16000), np.float32), None, r"\[channels, n\], pass audio.T"),
    (np.zeros((2, 3, 4), np.float32), None, r"expected samples \[n\] \(mono\) or \[n, channels\]"),
    (np.array(["a", "b"]), None, "dtype <U1"),
    (np.array([0.0, np.nan], np.float32), None, "NaN"),
    (np.zeros(100, np.float32), 0, "positive whole number of Hz, got 0"),
    (np.zeros(100, np.float32), 44.1, "got 44.1"),
    ("samples/de-DE.wav", 44100, "a file carries its own rate"),
])
def test_wrong_shapes_dtypes_and_rates_are_named(audio, rate, message):
    with pytest.raises(ValueError, match=message):
        to_model_audio(audio, sample_rate=rate)


def test_a_text_file_named_mp3_is_called_what_it_is(tmp_path):
    fake = tmp_path / "song.mp3"
    fake.write_text("hello, not audio\n" * 20)
    with pytest.raises(AudioError, match=r"content is not audio .*\(\.mp3 extension\)") as e:
        load_audio(fake)
    assert "does not exist" not in str(e.value)


def test_pieces_of_a_stream_convert_like_the_whole():
    from babelcast.audio.io import AudioPieces

    x = (tone(1.0, 44100, channels=2) * 32767).astype(np.int16)
    pieces = AudioPieces()
    parts = [pieces.convert(x[i:i + 441 * 7], sample_rate=44100) for i in range(0, len(x), 441 * 7)]
    y = np.concatenate([*parts, pieces.flush()])
    whole = to_model_audio(x, sample_rate=44100)
    assert abs(len(y) - len(whole)) <= 1
    n = min(len(y), len(whole))
    assert np.max(np.abs(y[100:n - 100] - whole[100:n - 100])) < 1e-3  # no trace of the 70 piece boundaries
    with pytest.raises(ValueError, match="changed from 44100 Hz to 48000 Hz"):
        pieces.convert(x[:100], sample_rate=48000)
    same = AudioPieces()
    assert np.array_equal(same.convert(tone(0.1, 16000)), tone(0.1, 16000)) and len(same.flush()) == 0


# ---- raw streams (audio/raw.py: the gRPC service's audio_content) ---------------------------------
def _raw_bytes(x: np.ndarray, rate_hz: int, subtype: str, fmt: str = "RAW") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate_hz, format=fmt, subtype=subtype)
    return buf.getvalue()


def _decode_in_pieces(data: bytes, encoding: str, cuts: list[int], channels: int = 1):
    stream = RawAudioStream(encoding, channels)
    bounds = [0] + cuts + [len(data)]
    x = np.concatenate([stream.decode(data[a:b]) for a, b in zip(bounds, bounds[1:])])
    return x, stream


@pytest.mark.parametrize("encoding, subtype", [("pcm_s16le", "PCM_16"), ("mulaw", "ULAW"), ("alaw", "ALAW")])
def test_a_raw_stream_cut_anywhere_decodes_as_a_whole(encoding, subtype):
    """Pieces cut inside a sample (and a stereo frame) give the samples of the whole, channels averaged."""
    x = tone(0.1, 8000, channels=2) * np.array([1.0, 0.5], np.float32)
    data = _raw_bytes(x, 8000, subtype)
    whole, _ = sf.read(io.BytesIO(data), format="RAW", subtype=subtype, samplerate=8000, channels=2,
                       dtype="float32")
    got, stream = _decode_in_pieces(data, encoding, [1, 3, 4, 101, 102, 555], channels=2)
    np.testing.assert_array_equal(got, whole.mean(axis=1, dtype=np.float32))
    assert stream.leftover_bytes == 0 and stream.header is None


def test_a_wav_header_at_the_start_of_a_raw_stream_is_read_and_dropped():
    """The header (cut into pieces too) sets format, channels and rate; only the samples come out."""
    x = tone(0.05, 22050, channels=2)
    data = _raw_bytes(x, 22050, "PCM_24", fmt="WAV")
    got, stream = _decode_in_pieces(data, "pcm_s16le", [5, 11, 30, 47, 200])
    np.testing.assert_allclose(got, x.mean(axis=1), atol=1e-6)
    assert (stream.header.rate_hz, stream.header.channels, stream.header.sample_bytes) == (22050, 2, 3)
    with pytest.raises(AudioError, match="WAV header"):
        RawAudioStream("pcm_s16le").decode(_raw_bytes(x, 8000, "ULAW", fmt="WAV"))
