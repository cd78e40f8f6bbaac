"""Raw audio bytes of one stream → float32 mono samples at the stream's rate.

A stream arrives as pieces cut anywhere (a gRPC client sends whatever its reader gave it, a WAV file's
header included): a sample split between two pieces is completed by the next one, interleaved channels
are averaged, and a WAV header at the very start is read (it then says the format, channels and rate)
and dropped. libsndfile decodes the samples (16-bit PCM, G.711 µ-law and A-law; other PCM widths in a
WAV header). Resampling to 16 kHz is the caller's (server/live.py keeps one resampler per session).
"""
from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from .io import AudioError

# encoding -> (libsndfile RAW subtype, bytes per sample)
RAW_ENCODINGS = {"pcm_s16le": ("PCM_16", 2), "mulaw": ("ULAW", 1), "alaw": ("ALAW", 1)}
_WAV_WIDTHS = {1: "PCM_U8", 2: "PCM_16", 3: "PCM_24", 4: "PCM_32"}  # WAV PCM sample width -> subtype
MAX_HEADER_BYTES = 1 << 16  # a WAV header longer than this (before its data chunk) is refused


@dataclass(frozen=True)
class WavHeader:
    """What a WAV header at the start of a stream says about the samples after it."""

    rate_hz: int
    channels: int
    sample_bytes: int


class RawAudioStream:
    """Decode consecutive pieces of one raw stream; AudioError names a bad header or a bad piece."""

    def __init__(self, encoding: str, channels: int = 1, name: str = "audio stream"):
        if encoding not in RAW_ENCODINGS:
            raise AudioError(name, f"unknown raw encoding {encoding!r}; expected one of {', '.join(RAW_ENCODINGS)}")
        self.subtype, self.sample_bytes = RAW_ENCODINGS[encoding]
        self.channels, self.name = channels, name
        self.header: WavHeader | None = None
        self._head = b""  # the start of the stream while it may still be a WAV header
        self._started = False  # past the point where a header could begin
        self._carry = b""  # bytes of an incomplete sample frame, completed by the next piece

    def decode(self, data: bytes) -> np.ndarray:
        """The samples (mono float32) that these bytes complete; empty while a header is still arriving."""
        if not self._started:
            data = self._skip_header(self._head + data)
            if not self._started:
                return np.zeros(0, np.float32)
        data = self._carry + data
        frame_bytes = self.sample_bytes * self.channels
        whole = len(data) - len(data) % frame_bytes
        self._carry = data[whole:]
        if not whole:
            return np.zeros(0, np.float32)
        x, _ = sf.read(io.BytesIO(data[:whole]), format="RAW", subtype=self.subtype, endian="LITTLE",
                       samplerate=8000, channels=self.channels, dtype="float32", always_2d=True)
        return x[:, 0] if self.channels == 1 else x.mean(axis=1, dtype=np.float32)

    @property
    def leftover_bytes(self) -> int:
        """Bytes of an unfinished sample frame (a stream should end on a whole frame)."""
        return len(self._carry) + (0 if self._started else len(self._head))

    def _skip_header(self, data: bytes) -> bytes:
        """The bytes after a leading WAV header (all of them when there is none); keeps a header that has
        not fully arrived in `_head` and returns nothing until it has."""
        if not b"RIFF".startswith(data[:4]) or (len(data) >= 12 and data[8:12] != b"WAVE"):
            self._started = True  # headerless raw audio
            return data
        if len(data) < 12:
            self._head = data
            return b""
        buffer = io.BytesIO(data)
        try:
            with wave.open(buffer) as w:
                header = WavHeader(w.getframerate(), w.getnchannels(), w.getsampwidth())
        except EOFError:  # the data chunk's header has not arrived yet
            if len(data) > MAX_HEADER_BYTES:
                raise AudioError(self.name, f"a WAV header longer than {MAX_HEADER_BYTES} bytes") from None
            self._head = data
            return b""
        except wave.Error as e:
            raise AudioError(self.name, f"WAV header: {e}; send 16-bit PCM (or raw samples without a header)") \
                from None
        if header.sample_bytes not in _WAV_WIDTHS or not header.channels:
            raise AudioError(self.name, f"WAV header: unsupported {8 * header.sample_bytes}-bit samples")
        self.header, self._started, self._head = header, True, b""
        self.subtype, self.sample_bytes, self.channels = (_WAV_WIDTHS[header.sample_bytes], header.sample_bytes,
                                                          header.channels)
        return data[buffer.tell():]
