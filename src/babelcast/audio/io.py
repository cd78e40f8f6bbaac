"""Read audio into what the model eats: float32 mono at 16 kHz.

Files and in-memory files go through libsndfile (wav, flac, ogg/vorbis/opus,
mp3, ...), are downmixed by averaging channels and resampled with soxr.
Raw PCM chunks (the server's WebSocket) are converted by `pcm_to_float`; whatever a Python user has
(a path, a numpy or torch array of any dtype and channel count, at any rate) by `to_model_audio`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE_HZ = 16000
PCM_ENCODINGS = ("pcm_s16le", "f32le")
_READABLE_HINT = "libsndfile reads wav, flac, ogg/vorbis/opus and mp3; convert other formats first (e.g. with ffmpeg)"


class AudioError(ValueError):
    """An audio input that cannot be used, naming the file (or stream) and the problem."""

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


MAX_CHANNELS = 32  # a second axis longer than this is taken for time: [channels, n] instead of [n, channels]
_INT_SCALES = {"int8": 2.0**7, "int16": 2.0**15, "int32": 2.0**31, "int64": 2.0**63}


def to_model_audio(audio, sample_rate: int | None = None) -> np.ndarray:
    """A path, or samples mono [n] / multi-channel [n, channels] (numpy or torch, int or float, as
    soundfile gives them) at `sample_rate` (default 16000) → float32 mono at 16 kHz; ValueError naming the problem."""
    if isinstance(audio, (str, Path)):
        if sample_rate is not None:
            raise ValueError(f"sample_rate={sample_rate} was given with a file ({audio}): a file carries its own "
                             "rate; pass sample_rate only with arrays")
        return load_audio(audio)
    x = _as_float_samples(audio)
    rate_hz = SAMPLE_RATE_HZ if sample_rate is None else _checked_rate_hz(sample_rate)
    mono = x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(resample(mono, rate_hz, SAMPLE_RATE_HZ))


class AudioPieces:
    """`to_model_audio` for consecutive pieces of one stream (a microphone): the resampler keeps its state
    across pieces, so piece boundaries leave no trace; one rate per stream."""

    def __init__(self):
        self.rate_hz: int | None = None
        self._resampler: soxr.ResampleStream | None = None

    def convert(self, piece, sample_rate: int | None = None) -> np.ndarray:
        """One piece (an array as to_model_audio takes) → float32 mono 16 kHz samples ready so far."""
        rate_hz = SAMPLE_RATE_HZ if sample_rate is None else _checked_rate_hz(sample_rate)
        if self.rate_hz is None:
            self.rate_hz = rate_hz
            if rate_hz != SAMPLE_RATE_HZ:
                self._resampler = soxr.ResampleStream(rate_hz, SAMPLE_RATE_HZ, 1, dtype="float32", quality="HQ")
        elif rate_hz != self.rate_hz:
            raise ValueError(f"sample_rate changed from {self.rate_hz} Hz to {rate_hz} Hz within one stream; "
                             "open a new stream for the new rate")
        x = _as_float_samples(piece)
        mono = x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)
        return mono if self._resampler is None else self._resampler.resample_chunk(mono)

    def flush(self) -> np.ndarray:
        """The resampler's last samples, at the end of an utterance (empty at 16 kHz); it then starts afresh."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        self._resampler.clear()
        return tail


def _as_float_samples(audio) -> np.ndarray:
    """numpy/torch samples [n] or [n, channels] → float32 in [-1, 1] (integers scaled by their full range)."""
    if hasattr(audio, "detach"):  # a torch tensor, without importing torch
        audio = audio.detach().cpu().numpy()
    x = np.asarray(audio)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio of shape {x.shape}: expected samples [n] (mono) or [n, channels]")
    if x.ndim == 2 and x.shape[1] > MAX_CHANNELS:
        raise ValueError(f"audio of shape {x.shape}: {x.shape[1]} channels? expected [n, channels]; "
                         f"if it is [channels, n], pass audio.T")
    if x.dtype.name in _INT_SCALES:
        return x.astype(np.float32) / np.float32(_INT_SCALES[x.dtype.name])
    if x.dtype == np.uint8:  # 8-bit PCM is unsigned, centered on 128
        return (x.astype(np.float32) - 128.0) / 128.0
    if x.dtype.kind != "f":
        raise ValueError(f"audio of dtype {x.dtype}: expected float samples in [-1, 1] or integer PCM")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite samples")
    return x


def _checked_rate_hz(sample_rate) -> int:
    """A sample rate in Hz as a positive integer, or ValueError saying what was passed."""
    if isinstance(sample_rate, bool) or not float(sample_rate).is_integer() or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def load_audio(path: str | Path, offset_s: float = 0.0, duration_s: float | None = None) -> np.ndarray:
    """Read an audio file (or the span [offset_s, offset_s + duration_s)) as float32 mono 16 kHz."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    return _read_soundfile(path, str(path), offset_s, duration_s)


def decode_audio(
    data: bytes, name: str = "<bytes>", offset_s: float = 0.0, duration_s: float | None = None
) -> np.ndarray:
    """Decode an in-memory audio file (e.g. an HTTP upload) as float32 mono 16 kHz."""
    if len(data) == 0:
        raise AudioError(name, "no data (0 bytes)")
    return _read_soundfile(io.BytesIO(data), name, offset_s, duration_s)


def pcm_to_float(data: bytes, encoding: str, name: str = "<pcm>") -> np.ndarray:
    """Convert headerless little-endian PCM bytes to float32 samples in [-1, 1]."""
    if encoding == "pcm_s16le":
        _check_aligned(data, 2, encoding, name)
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "f32le":
        _check_aligned(data, 4, encoding, name)
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    raise AudioError(name, f"unknown PCM encoding {encoding!r}; expected one of {', '.join(PCM_ENCODINGS)}")


def resample(x: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample samples (frames first, channels optional) with soxr's high-quality filter."""
    if from_hz <= 0 or to_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {from_hz} Hz -> {to_hz} Hz")
    x = np.asarray(x, dtype=np.float32)
    if from_hz == to_hz or x.shape[0] == 0:
        return x
    return np.asarray(soxr.resample(x, from_hz, to_hz, quality="HQ"), dtype=np.float32)


def _check_aligned(data: bytes, sample_bytes: int, encoding: str, name: str) -> None:
    """Reject a byte count that is not a whole number of samples (a truncated or misframed chunk)."""
    if len(data) % sample_bytes:
        raise AudioError(
            name, f"{len(data)} bytes is not a whole number of {encoding} samples ({sample_bytes} bytes each)"
        )


def _read_soundfile(
    source: Path | io.BytesIO, name: str, offset_s: float, duration_s: float | None
) -> np.ndarray:
    """Open with libsndfile, read the requested span, downmix and resample to 16 kHz."""
    if offset_s < 0:
        raise AudioError(name, f"offset must be >= 0 s, got {offset_s} s")
    if duration_s is not None and duration_s <= 0:
        raise AudioError(name, f"duration must be > 0 s, got {duration_s} s")
    try:
        with sf.SoundFile(source) as f:
            frames = _read_span(f, name, offset_s, duration_s)
            sample_rate_hz = f.samplerate
    except sf.LibsndfileError as e:
        raise AudioError(name, f"not a readable audio file ({_libsndfile_problem(e, source)}); {_READABLE_HINT}") from e
    except OSError as e:
        raise AudioError(name, f"cannot read file ({e.strerror or e})") from e
    if frames.shape[0] == 0:
        raise AudioError(name, "contains no audio samples (zero-length audio)")
    mono = frames.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(resample(mono, sample_rate_hz, SAMPLE_RATE_HZ))


def _libsndfile_problem(e: sf.LibsndfileError, source: Path | io.BytesIO) -> str:
    """libsndfile's reason, except its misleading "File does not exist" for a file that exists but is not audio."""
    if isinstance(source, Path) and source.is_file() and "does not exist" in e.error_string:
        return f"its content is not audio in a format libsndfile knows, whatever its name ({source.suffix or 'no'} " \
               "extension) says"
    return e.error_string.rstrip(".")


def _read_span(f: sf.SoundFile, name: str, offset_s: float, duration_s: float | None) -> np.ndarray:
    """Read (frames, channels) float32 from offset_s for duration_s (to the end when None)."""
    start_frame = round(offset_s * f.samplerate)
    if start_frame > 0 and f.frames > 0 and start_frame >= f.frames:
        raise AudioError(name, f"offset {offset_s:g} s is past the end of the audio ({f.frames / f.samplerate:g} s)")
    if start_frame > 0:
        if f.seekable():
            f.seek(start_frame)
        else:
            f.read(start_frame, dtype="float32", always_2d=True)
    num_frames = -1 if duration_s is None else max(1, round(duration_s * f.samplerate))
    return f.read(num_frames, dtype="float32", always_2d=True)
