"""One live stream's lifecycle: the one piece of code that owns a stream (the engine and `Session` use it).

- intake (any thread, under the engine's lock): samples and flushes queue in order; audio sent while a
  flush is in progress is held and becomes the next utterance; only sample counts are updated, so the
  engine knows when each chunk's audio is complete (its deadline) without computing anything; a live
  utterance's first audio may be preceded by leading silence that puts its chunk ends on the engine's
  step clock for its latency (`align`; timestamps are moved back by as much);
- features (engine thread): when chunks are taken, just enough queued samples become mel frames in a
  preallocated buffer that starts with the virtual lead-in frames (a whole file may be queued: memory
  stays bounded by the step); a flush fixes the utterance's length and adds the right padding;
- chunks (engine thread): `take` copies k chunks, zero-padded after a flush;
- tokens and events: partials (a possible language tag held back), finals at a model-detected endpoint
  or when a flush is done, then a restart for the next utterance with the held audio; in auto mode a
  `language` event before a final whose detected language differs from the stream's last one (with
  `lock_language`, the first one fixes the prompt to it).

Its model state (encoder caches, what greedy decoding carries) is a row `slot` of the engine's CachePool.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .. import chunking
from ..audio.features import LogMel
from ..decoding.beam import BeamHistory, RowTrace
from ..decoding.boost import BoostTrie
from ..decoding.result import Transcript
from ..decoding.text import TextOptions
from ..model.asr import AsrModel
from ..model.encoder import OPEN_END
from .endpoint import is_endpoint
from .segment import SegmentTokens


@dataclass(frozen=True)
class StreamOptions:
    left: int
    right: int
    prompt_id: int | None  # None for a model without a prompt
    text: TextOptions
    trained: bool = True
    lock_language: bool = False  # auto mode: the first detected language becomes the prompt
    decoder: str = "rnnt"  # "ctc": the CTC head of a hybrid checkpoint, in the same batches as RNNT rows
    boost: BoostTrie | None = None  # the stream's boosted phrases (None: no boosting)
    beam: bool = False  # RNNT beam search (the engine's beam width) instead of greedy

    @property
    def latency_ms(self) -> int:
        return chunking.latency_ms(self.right, 1, self.text.frame_s * 1000)  # factor 1: frame_s is an encoder frame


@dataclass(frozen=True)
class Event:
    session_id: str
    kind: str  # "partial" | "final" | "endpoint" | "closed" | "error" | "language"
    segment: int
    text: str = ""
    transcript: Transcript | None = None
    time: float = 0.0  # time.monotonic() when emitted
    reason: str = ""  # finals: "endpoint" (model-detected), "flush" (finish() was called), "length" (max segment)
    language: str | None = None  # language events: the locale the segment's final detected
    locked: bool = False  # language events: the stream's prompt is now fixed to it (lock_language)


@dataclass(frozen=True)
class Grid:
    """What a stream needs to know of the model's features and subsampling."""

    factor: int
    stages: int
    mel_ms: float
    hop_samples: int
    n_fft: int
    sample_rate_hz: int
    feat_in: int

    @classmethod
    def of(cls, model: AsrModel) -> "Grid":
        enc, feat = model.cfg.encoder, model.cfg.features
        return cls(enc.subsampling_factor, enc.n_subsampling_stages, feat.frame_ms, feat.hop_samples, feat.n_fft,
                   feat.sample_rate_hz, enc.feat_in)


class MelBuffer:
    """Mel frames not yet stepped [n, F] in a preallocated tensor (grows only for a bigger backlog)."""

    def __init__(self, n_feat: int, device: torch.device, capacity_frames: int = 256):
        self._buf = torch.zeros(capacity_frames, n_feat, device=device)  # [capacity, F]
        self._start = self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def reset(self, n_zero_frames: int) -> None:
        """Empty, then n_zero_frames virtual frames (the lead-in)."""
        self._start, self._end = 0, n_zero_frames
        self._buf[:n_zero_frames].zero_()

    def append(self, frames: Tensor) -> None:
        """frames [n, F] after the buffered ones."""
        n = frames.shape[0]
        if self._end + n > self._buf.shape[0]:
            self._compact(n)
        self._buf[self._end:self._end + n] = frames
        self._end += n

    def take_into(self, out: Tensor) -> None:
        """Move the first out.shape[0] frames into out [n, F], zeros where there are fewer."""
        m = min(out.shape[0], len(self))
        out[:m] = self._buf[self._start:self._start + m]
        out[m:] = 0
        self._start += m

    def _compact(self, n_more: int) -> None:
        """Buffered frames to the front; a bigger tensor if n_more still do not fit."""
        n = len(self)
        if n + n_more > self._buf.shape[0]:
            bigger = self._buf.new_zeros(2 * (n + n_more), self._buf.shape[1])
            bigger[:n] = self._buf[self._start:self._end]
            self._buf = bigger
        else:
            self._buf[:n] = self._buf[self._start:self._end].clone()
        self._start, self._end = 0, n


@dataclass
class _Flush:
    close: bool
    time: float


class Stream:
    """The lifecycle of one session's stream (host side)."""

    def __init__(self, sid: str, slot: int, opts: StreamOptions, grid: Grid, features: LogMel, tok,
                 interim: bool, window_frames: int, reset_state: Callable[[], None],
                 prompt_of: Callable[[str], int | None], max_segment_frames: int = 0,
                 align: Callable[[float], int] | None = None, beam_width: int = 0):
        self.id, self.slot, self.opts, self.grid = sid, slot, opts, grid
        self.right = opts.right
        self.chunk_mel = chunking.chunk_mel(opts.right, grid.factor)
        self.interim, self.window_frames = interim, window_frames
        self.max_segment_frames = max_segment_frames  # 0: a segment ends only at an endpoint or a flush
        self._features, self._reset_state = features, reset_state
        self._align = align  # first sample's arrival time -> leading silence (samples) onto the step clock
        self._prompt_of = prompt_of  # a detected locale -> its prompt id (None: none to lock to)
        self._detected: str | None = None  # the last language a final detected (auto mode)
        device = features.window.device
        self._mel = MelBuffer(grid.feat_in, device)
        self.tokens = SegmentTokens(tok, opts.text)
        self.beam = BeamHistory(beam_width) if opts.beam else None  # the hypotheses of a beam-search stream
        self.collapse_to: int | None = None  # after a beam stream's final: the hypothesis that goes on
        self.segment = 0
        self.offset_s = 0.0  # stream time at the start of the current utterance
        self.closing = False
        self._held: deque[tuple[np.ndarray | _Flush, float]] = deque()  # after a flush: the next utterance
        self.held_samples = 0
        self._last_partial = ""
        self.piece_samples = 0  # size of the last piece fed (clients send pieces at a steady pace)
        self._device = device
        self._start_utterance()

    # ---- intake (any thread, under the engine's lock) -----------------------------------------
    def feed(self, x: np.ndarray, now: float) -> bool:
        """Queue samples; True when they complete a chunk."""
        if not len(x):
            return False  # keeps the pace estimate (piece size) of the stream
        if self._flush is not None:
            self._held.append((x, now))
            self.held_samples += len(x)
            return False
        before = self._whole_chunks()
        if self.n_samples == 0 and self._align is not None:
            self._pad_start(self._align(now - len(x) / self.grid.sample_rate_hz))
        self._pending.append(x)
        self.n_samples += len(x)
        self.piece_samples, self.last_feed = len(x), now
        new = self._whole_chunks() - before
        self.chunk_times.extend([now] * new)
        return new > 0

    def finish(self, close: bool, now: float) -> None:
        """End the current utterance (or queue the end of the held one)."""
        if self._flush is not None:
            self._held.append((_Flush(close, now), now))
            return
        self._flush = _Flush(close, now)
        total = chunking.utterance_chunks(self._total_mel(), self.right, self.grid.factor, self.grid.stages)
        self.chunk_times.extend([now] * (total - self.chunks_done - len(self.chunk_times)))

    def _pad_start(self, pad_samples: int) -> None:
        """Leading silence before the utterance's first sample (its timestamps move back by as much)."""
        if pad_samples > 0:
            self._pending.append(np.zeros(pad_samples, dtype=np.float32))
            self.n_samples = self.pad_samples = pad_samples
            self.tokens.clear(dataclasses.replace(self.opts.text, offset_s=self.offset_s - self._pad_s))

    @property
    def prompt_id(self) -> int | None:
        return self.opts.prompt_id

    @property
    def _pad_s(self) -> float:
        return self.pad_samples / self.grid.sample_rate_hz

    def set_language(self, prompt_id: int | None, text: TextOptions, lock_language: bool) -> None:
        """A language switch from the next chunk on; detection starts over (in auto mode the next detected
        language is announced, and locked with lock_language)."""
        self._detected = None
        self._set_prompt(prompt_id, text, lock_language)

    def _set_prompt(self, prompt_id: int | None, text: TextOptions, lock_language: bool) -> None:
        """A new language prompt from the next chunk on (it acts after the encoder: no cache to reset);
        the current segment's transcript reports the new language."""
        self.opts = dataclasses.replace(self.opts, prompt_id=prompt_id, text=text, lock_language=lock_language)
        self.tokens.opts = dataclasses.replace(self.tokens.opts, language=text.language)

    def drop_held(self) -> bool:
        """Drop the audio held after the last flush asked for; False when no flush is in progress."""
        while self._held and not isinstance(self._held[-1][0], _Flush):
            self.held_samples -= len(self._held.pop()[0])
        return self._flush is not None

    @property
    def flushing(self) -> bool:
        return self._flush is not None

    def backlog_mel(self) -> int:
        """Mel frames (real and lead-in) that arrived and are not stepped."""
        arrived = chunking.lead_in_mel(self.grid.factor) + chunking.streamed_mel(
            self.n_samples, self.grid.hop_samples, self.grid.n_fft)
        return arrived - self.chunks_done * self.chunk_mel

    def next_chunk_eta(self) -> float:
        """When the next chunk's audio should be complete, for a client sending pieces in real time
        (inf when flushing: no more audio is expected for this utterance)."""
        if self._flush is not None or not self.piece_samples:
            return float("inf")
        need_mel = chunking.mel_for_chunks(self.chunks_done + len(self.chunk_times) + 1, self.right, self.grid.factor)
        missing = chunking.samples_for_mel(need_mel, self.grid.hop_samples, self.grid.n_fft) - self.n_samples
        pieces = -(-missing // self.piece_samples)
        return self.last_feed + pieces * self.piece_samples / self.grid.sample_rate_hz

    # ---- the engine thread -------------------------------------------------------------------
    def take_into(self, out: Tensor, k: int) -> float:
        """Copy the next k chunks into out [k*chunk_mel, F]; the time the first one's audio was complete."""
        self._compute_features(out.shape[0])
        self._mel.take_into(out)
        first = self.chunk_times[0]
        for _ in range(k):
            self.chunk_times.popleft()
        return first

    def mel_end(self) -> int:
        """Total mel frames of the utterance once it is flushed, else OPEN_END."""
        return self._total_mel() if self._flush is not None else OPEN_END

    def add_tokens(self, labels: list[int], frames: list[int], probs: list[float], k: int,
                   trace: RowTrace | None = None) -> None:
        """What a step of k chunks emitted (a beam stream: its trace, whose shared labels are committed)."""
        if trace is not None:
            (labels, frames, probs), tentative = self.beam.update(trace)
            self.tokens.set_tentative(*tentative)
        self.tokens.add(labels, frames, probs)
        self.chunks_done += k

    def events(self, now: float) -> list[Event]:
        """After a step (or when a flush needs no step): final + restart, endpoint, or partial (a final that
        detects a new language comes after a language event)."""
        if self._flush is not None and not self.chunk_times:
            flush, events = self._flush, self._final(now, "flush")
            if flush.close:
                self.closing = True
                return events + [Event(self.id, "closed", self.segment, time=now)]
            self._restart()
            return events
        if is_endpoint(self.tokens.tok, self.tokens.tail(), self.tokens.last_token_frame, self.enc_done,
                       self.window_frames):
            return self._final(now, "endpoint") + [Event(self.id, "endpoint", self.segment - 1, time=now)]
        if self._too_long():
            t = self.tokens.cut_final(**self._meta())
            if t is not None:
                return self._finalized(t, now, "length")
        if self.interim:
            t = self.partial()
            if t.text != self._last_partial:
                self._last_partial = t.text
                return [Event(self.id, "partial", self.segment, t.text, t, now)]
        return []

    def _too_long(self) -> bool:
        """The segment has run max_segment_frames without an endpoint (a talker who never pauses)."""
        frames = self.tokens.frames
        return bool(self.max_segment_frames and frames and self.enc_done - frames[0] > self.max_segment_frames)

    def partial(self) -> Transcript:
        """The segment's text so far (a possibly unfinished language tag held back)."""
        return self.tokens.partial(**self._meta())

    @property
    def enc_done(self) -> int:
        return chunking.enc_frames(self.chunks_done, self.right)

    @property
    def flush_time(self) -> float | None:
        return None if self._flush is None else self._flush.time

    # ---- internals ----------------------------------------------------------------------------
    def _start_utterance(self) -> None:
        """Fresh features, counters and buffers (the caller resets the model state)."""
        self.feat = self._features.init_state(self._device)
        self._mel.reset(chunking.lead_in_mel(self.grid.factor))
        self._pending: deque[np.ndarray] = deque()  # samples queued for features
        self._flush: _Flush | None = None
        self._padded = False  # the right padding of a flushed utterance is in the buffer
        self.n_samples = 0  # samples of this utterance queued (its leading silence, pad_samples, included)
        self.pad_samples = 0
        self.chunks_done = 0
        self.chunk_times: deque[float] = deque()  # when each complete, unstepped chunk's audio was complete
        self.last_feed = 0.0
        self.tokens.clear(dataclasses.replace(self.opts.text, offset_s=self.offset_s))
        self.tokens.last_token_frame = -1
        self.collapse_to = None  # the state was reset
        if self.beam is not None:
            self.beam.reset()

    def _restart(self) -> None:
        """The next utterance on the same session: fresh state, then the held audio and flushes."""
        self.offset_s += self.n_samples / self.grid.sample_rate_hz - self._pad_s
        self._reset_state()
        self._start_utterance()
        held, self._held, self.held_samples = self._held, deque(), 0
        for item, t in held:
            if isinstance(item, _Flush):
                self.finish(item.close, t)
            else:
                self.feed(item, t)

    def _compute_features(self, n_mel: int) -> None:
        """Features of queued samples until the buffer holds n_mel frames (memory bounded by the step,
        not by what was queued: a whole file may be); after a flush, its right padding at the end."""
        missing = n_mel - len(self._mel)
        if missing > 0 and self._pending:
            need = chunking.samples_for_mel(self.feat.n_frames + missing, self.grid.hop_samples, self.grid.n_fft)
            x = self._pop_pending(need - self.feat.n_samples)
            mel, self.feat = self._features.step(torch.from_numpy(x).to(self._device), self.feat)
            self._mel.append(mel.T)
        if self._flush is not None and not self._pending and not self._padded:
            mel, self.feat = self._features.step(torch.zeros(0, device=self._device), self.feat, final=True)
            self._mel.append(mel.T)
            self._padded = True

    def _pop_pending(self, n_samples: int) -> np.ndarray:
        """The first n_samples queued samples (fewer if fewer are queued)."""
        parts, n = [], 0
        while self._pending and n < n_samples:
            x = self._pending.popleft()
            if n + len(x) > n_samples:
                x, rest = x[: n_samples - n], x[n_samples - n:]
                self._pending.appendleft(rest)
            parts.append(x)
            n += len(x)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _whole_chunks(self) -> int:
        return chunking.whole_chunks(chunking.streamed_mel(self.n_samples, self.grid.hop_samples, self.grid.n_fft),
                                     self.right, self.grid.factor)

    def _total_mel(self) -> int:
        return chunking.feature_frames(self.n_samples, self.grid.hop_samples)

    def _final(self, now: float, reason: str) -> list[Event]:
        """The segment's final (after a language event if it brings one); the next segment starts empty
        (a beam stream's best hypothesis is committed, and only it goes on)."""
        if self.beam is not None:
            self.tokens.add(*self.beam.take_best())
            self.collapse_to = self.beam.best
            self.beam.reset()
        t = self.tokens.final(**self._meta())
        self.tokens.clear()
        self._last_partial = ""
        return self._finalized(t, now, reason)

    def _finalized(self, t: Transcript, now: float, reason: str) -> list[Event]:
        """The events of a final: a language event first when it detected a change, then the final."""
        events = self._language_change(t, now) + [Event(self.id, "final", self.segment, t.text, t, now, reason)]
        self.segment += 1
        return events

    def _language_change(self, t: Transcript, now: float) -> list[Event]:
        """The one place that decides "the language changed": a final in auto mode detected a language
        other than the stream's last (the first detection too); with lock_language the prompt becomes
        that language's from the next chunk (as a mid-stream switch) and the event says it is locked."""
        detected = None if self.opts.text.language else t.language
        if detected is None or detected == self._detected:
            return []
        self._detected = detected
        prompt_id = self._prompt_of(detected) if self.opts.lock_language else None
        if prompt_id is not None:
            self._set_prompt(prompt_id, dataclasses.replace(self.opts.text, language=detected), True)
        return [Event(self.id, "language", self.segment, time=now, language=detected, locked=prompt_id is not None)]

    def _meta(self) -> dict:
        return dict(latency_ms=self.opts.latency_ms, mode="streaming", trained_latency=self.opts.trained,
                    duration_s=self.n_samples / self.grid.sample_rate_hz - self._pad_s)
