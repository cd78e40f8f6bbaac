"""Many live streams in one process, stepped together: schedule → run → update (vLLM-style).

- schedule: streams with a whole chunk of features (or a pending flush) are grouped by latency;
- run: one batched encoder step, prompt and greedy decode per group, on rows gathered from the
  cache pool by slot and scattered back (no Python loop over streams around the model);
- update: tokens go to their sessions; partials, finals (endpoint or flush) and metrics come out.

One copy of the weights serves every latency and language: the latency only picks the chunk
shape, the language only the prompt row of each batch row.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .. import chunking
from ..audio.features import FeatureState
from ..decoding.result import Transcript
from ..decoding.text import TextOptions, to_transcript
from ..model.asr import AsrModel
from ..model.encoder import OPEN_END
from ..model.precision import resolve_precision, runtime_model
from .cache_pool import CachePool
from .endpoint import is_endpoint
from .session import StreamOptions, decode_chunks


class EngineFull(RuntimeError):
    """A new session was refused: the session limit is reached or the engine cannot keep real time."""


@dataclass(frozen=True)
class EngineConfig:
    max_sessions: int = 32
    precision: str = "auto"  # auto (probed once) | fp32 | bf16 (encoder matmuls) | int8 (dynamic int8 linears)
    endpoint_ms: int = 800  # blank run after a sentence end that closes a segment; 0 disables
    max_lag_ms: float = 2000.0  # refuse new sessions while some stream is this far behind
    threads: int | None = None  # torch intra-op threads for the engine (None: torch's default)
    # A stream with several complete chunks waiting (the engine fell behind) runs up to this many in
    # one step: the same tokens (multi-chunk steps keep the chunk grid), one weight read for all.
    max_chunks_per_step: int = 4
    # Hold a ready group up to this long for streams of its latency whose chunk is about to complete
    # (aligns staggered streams into one batch; 0 = step as soon as anything is ready).
    batch_window_ms: float = 0.0


@dataclass(frozen=True)
class Event:
    session_id: str
    kind: str  # "partial" | "final" | "endpoint" | "closed" | "error"
    segment: int
    text: str = ""
    transcript: Transcript | None = None
    time: float = 0.0  # time.monotonic() when emitted
    reason: str = ""  # for finals: "endpoint" (model-detected) or "flush" (finish() was called)


@dataclass
class _Stream:
    """Host-side bookkeeping of one session (its tensors live in the cache pool, row `slot`)."""

    id: str
    slot: int
    right: int
    prompt_id: int | None
    text: TextOptions
    trained: bool
    interim: bool
    window_frames: int
    feat: FeatureState
    mel: Tensor  # [n, F] features not yet stepped (starts with the virtual lead-in frames)
    enc_done: int = 0
    n_samples: int = 0
    mel_end: int | None = None  # total mel frames once a flush was asked for
    closing: bool = False
    segment: int = 0
    ids: list[int] = field(default_factory=list)  # current segment
    frames: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    last_token_frame: int = -1
    last_partial: str = ""
    offset_s: float = 0.0  # stream time at the start of the current utterance
    flush_time: float = 0.0
    ready_since: float | None = None  # when the next chunk's audio was complete (partial latency)
    held: list[Tensor] = field(default_factory=list)  # audio sent during a flush: the next utterance


class Engine:
    """Continuous batching of live sessions over one AsrModel."""

    def __init__(self, model: AsrModel, tokenizer, cfg: EngineConfig = EngineConfig()):
        self.precision = resolve_precision(cfg.precision, model.encoder.device)  # ValueError if unknown
        self.cfg, self.tok = cfg, tokenizer
        self.model = runtime_model(model, self.precision.precision)
        enc = self.model.cfg.encoder
        self.left = enc.left_context_frames
        self.factor = enc.subsampling_factor
        self.frame_ms = self.factor * self.model.cfg.features.frame_ms
        self.device = self.model.encoder.device
        self.pool = CachePool(self.model, cfg.max_sessions, self.left, self.device, self.model.encoder.dtype)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._ids = itertools.count()
        self._positions: dict[int, list[Tensor]] = {}  # per-latency rel-pos projections, made once
        self._thread_state = threading.local()
        self.metrics = EngineMetrics()

    # ---- sessions (any thread) -----------------------------------------------------------
    def open(self, opts: StreamOptions, interim: bool = True, endpoint_ms: int | None = None) -> str:
        """Admit a session (options from Recognizer.stream_options); EngineFull when at the limit
        or behind real time."""
        with self._lock:
            if len(self._streams) >= self.cfg.max_sessions:
                self.metrics.refused += 1
                raise EngineFull(f"server is at its limit of {self.cfg.max_sessions} concurrent sessions")
            if self.lag_ms() > self.cfg.max_lag_ms:
                self.metrics.refused += 1
                raise EngineFull(f"engine is {self.lag_ms():.0f} ms behind real time; try again later")
            if opts.left != self.left:
                raise ValueError(f"left context {opts.left} differs from the engine's {self.left}")
            sid = f"s{next(self._ids)}"
            window = endpoint_ms if endpoint_ms is not None else self.cfg.endpoint_ms
            self._streams[sid] = _Stream(
                id=sid, slot=self.pool.alloc(), right=opts.right, prompt_id=opts.prompt_id, text=opts.text,
                trained=opts.trained,
                interim=interim, window_frames=int(np.ceil(window / self.frame_ms)) if window else 10**9,
                feat=self.model.features.init_state(self.device), mel=self._lead_in())
            self.metrics.opened += 1
            return sid

    def feed(self, sid: str, samples: np.ndarray | Tensor) -> None:
        """Append 16 kHz float samples; their features are computed now, the model runs in step()."""
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1).to(self.device)
        with self._lock:
            s = self._get(sid)
            if s.mel_end is not None:
                s.held.append(x)  # the utterance being flushed is closed; this starts the next one
                return
            self._accept(s, x)
        self._wake.set()

    def _accept(self, s: _Stream, x: Tensor) -> None:
        """Features of new samples into the stream's buffer."""
        mel, s.feat = self.model.features.step(x, s.feat)
        s.mel = torch.cat([s.mel, mel.T])
        s.n_samples += x.numel()
        if s.ready_since is None and s.mel.shape[0] >= chunking.chunk_mel(s.right, self.factor):
            s.ready_since = time.monotonic()

    def finish(self, sid: str, close: bool = False) -> None:
        """End the current utterance: the last chunk is padded and decoded, its final emitted.
        With close=True the session ends after that final; otherwise it takes new audio."""
        with self._lock:
            s = self._get(sid)
            if s.mel_end is None:
                mel, s.feat = self.model.features.step(torch.zeros(0, device=self.device), s.feat, final=True)
                s.mel = torch.cat([s.mel, mel.T])
                s.mel_end = s.feat.n_frames
                s.flush_time = time.monotonic()
            s.closing = s.closing or close
        self._wake.set()

    def abort(self, sid: str) -> None:
        """Drop a session at once (client gone); no final."""
        with self._lock:
            s = self._streams.pop(sid, None)
            if s is not None:
                self.pool.free(s.slot)

    @property
    def n_sessions(self) -> int:
        return len(self._streams)

    def backlog_ms(self, sid: str) -> float:
        """Audio of one session waiting for the model, beyond the chunk being filled."""
        with self._lock:
            s = self._get(sid)
            return max(0, s.mel.shape[0] - chunking.chunk_mel(s.right, self.factor)) * self.model.cfg.features.frame_ms

    def lag_ms(self) -> float:
        """How far the most-behind stream is: buffered features beyond one chunk."""
        with self._lock:
            behind = [s.mel.shape[0] - chunking.chunk_mel(s.right, self.factor) for s in self._streams.values()]
        return max([0.0] + [b * self.model.cfg.features.frame_ms for b in behind])

    # ---- the engine loop -----------------------------------------------------------------
    def step(self) -> list[Event]:
        """One scheduling round: every ready group runs one batched step. Call from one thread."""
        if self.cfg.threads and not getattr(self._thread_state, "threads_set", False):
            torch.set_num_threads(self.cfg.threads)  # intra-op threads of the calling (engine) thread
            self._thread_state.threads_set = True
        groups, finished = self._schedule()
        now = time.monotonic()
        with self._lock:
            events = [e for s in finished for e in self._after_step(s, now)]
        for (right, k), streams in groups.items():
            t0 = time.perf_counter()
            emissions = self._run(right, k, streams)
            self.metrics.record_step(len(streams), time.perf_counter() - t0,
                                     len(streams) * k * (right + 1) * self.frame_ms)
            with self._lock:
                events += self._update(right, k, streams, emissions)
        return events

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until audio or a flush arrives (or the timeout)."""
        self._wake.wait(timeout_s)
        self._wake.clear()

    def _schedule(self) -> tuple[dict[tuple[int, int], list[_Stream]], list[_Stream]]:
        """Ready streams grouped by right context, each group running k chunks per stream (the
        fewest any of its streams has, up to max_chunks_per_step), and flushed streams that owe no
        more frames (their final needs no model run). A group waits up to batch_window_ms for
        streams of its latency whose chunk is about to complete, so that they share the step."""
        by_right: dict[int, list[tuple[_Stream, int]]] = {}
        almost: set[int] = set()
        finished = []
        stages = self.model.cfg.encoder.n_subsampling_stages
        window_mel = int(self.cfg.batch_window_ms / self.model.cfg.features.frame_ms)
        oldest: dict[int, float] = {}
        with self._lock:
            for s in self._streams.values():
                n = chunking.chunk_mel(s.right, self.factor)
                pending = s.mel.shape[0]
                owed = s.mel_end is not None and chunking.final_valid_enc(s.mel_end, s.enc_done, s.right, stages) > 0
                if pending >= n or owed:
                    by_right.setdefault(s.right, []).append((s, -(-pending // n) if owed else pending // n))
                    oldest[s.right] = min(oldest.get(s.right, np.inf), s.ready_since or 0.0)
                elif s.mel_end is not None:
                    finished.append(s)
                elif window_mel and pending >= n - window_mel:
                    almost.add(s.right)
        now = time.monotonic()
        groups = {}
        for right, members in by_right.items():
            if right in almost and now - oldest[right] < self.cfg.batch_window_ms / 1000:
                continue  # a partner's chunk completes within the window: step together
            k = min(self.cfg.max_chunks_per_step, min(c for _, c in members))
            groups[(right, k)] = [m for m, _ in members]
        return groups, finished

    @torch.no_grad()
    def _run(self, right: int, k: int, streams: list[_Stream]) -> list[tuple[list[int], list[int], list[float]]]:
        """Batched encoder step (k chunks per stream) + prompt + greedy decode for one group."""
        n = k * chunking.chunk_mel(right, self.factor)
        with self._lock:
            chunks = torch.stack([_take(s, n) for s in streams])  # [B, n, F]
        slots = torch.tensor([s.slot for s in streams], device=self.device)
        ends = torch.tensor([OPEN_END if s.mel_end is None else s.mel_end for s in streams], device=self.device)
        prompts = None
        if self.model.prompt_kernel is not None:
            prompts = torch.tensor([s.prompt_id for s in streams], device=self.device)
        enc_state, pred_state = self.pool.gather(slots)
        em, enc_state, pred_state = decode_chunks(self.model, chunks, enc_state, pred_state, self.left, right,
                                                  prompts, ends, self._pos(k * (right + 1)))
        self.pool.scatter(slots, enc_state, pred_state)
        return em.to_lists([s.enc_done for s in streams])

    def _pos(self, n_frames: int) -> list[Tensor]:
        """Relative-position projections for a step of n_frames new frames, computed once per shape."""
        if n_frames not in self._positions:
            self._positions[n_frames] = self.model.encoder.positions(self.left + n_frames, self.device)
        return self._positions[n_frames]

    def _update(self, right: int, k: int, streams: list[_Stream], emissions) -> list[Event]:
        now, events = time.monotonic(), []
        for s, (labels, frames, probs) in zip(streams, emissions):
            if s.id not in self._streams:
                continue  # aborted while running
            s.ids += labels
            s.frames += frames
            s.probs += probs
            if labels:
                s.last_token_frame = frames[-1]
            s.enc_done += k * (right + 1)
            if s.ready_since is not None:
                self.metrics.chunk_latency_s.append(now - s.ready_since)
                s.ready_since = now if s.mel.shape[0] >= chunking.chunk_mel(right, self.factor) else None
            events += self._after_step(s, now)
        return events

    def _after_step(self, s: _Stream, now: float) -> list[Event]:
        stages = self.model.cfg.encoder.n_subsampling_stages
        if s.mel_end is not None and chunking.final_valid_enc(s.mel_end, s.enc_done, s.right, stages) == 0:
            events = [self._final(s, now, "flush")]
            self.metrics.record_final(now - s.flush_time)
            if s.closing:
                self._streams.pop(s.id)
                self.pool.free(s.slot)
                return events + [Event(s.id, "closed", s.segment, time=now)]
            self._restart(s)
            return events
        if is_endpoint(self.tok, s.ids, s.last_token_frame, s.enc_done, s.window_frames):
            return [self._final(s, now, "endpoint"), Event(s.id, "endpoint", s.segment - 1, time=now)]
        if s.interim:
            t = self._transcript(s, partial=True)
            if t.text != s.last_partial:
                s.last_partial = t.text
                return [Event(s.id, "partial", s.segment, t.text, t, now)]
        return []

    def _final(self, s: _Stream, now: float, reason: str) -> Event:
        t = self._transcript(s, partial=False)
        event = Event(s.id, "final", s.segment, t.text, t, now, reason)
        s.ids, s.frames, s.probs, s.last_partial = [], [], [], ""
        s.segment += 1
        return event

    def _transcript(self, s: _Stream, partial: bool) -> Transcript:
        ids = s.ids
        if partial:
            ids = ids[: len(ids) - self.tok.pending_tag_prefix(ids)]
        sr = self.model.cfg.features.sample_rate_hz
        opts = dataclasses.replace(s.text, offset_s=s.offset_s)
        return to_transcript(self.tok, ids, s.frames[: len(ids)], s.probs[: len(ids)], opts,
                             latency_ms=int(round((s.right + 1) * self.frame_ms)), mode="streaming",
                             trained_latency=s.trained, duration_s=s.n_samples / sr)

    def _restart(self, s: _Stream) -> None:
        """A new utterance on the same session: fresh caches, features and counters."""
        sr = self.model.cfg.features.sample_rate_hz
        s.offset_s += s.n_samples / sr
        self.pool.reset(torch.tensor([s.slot], device=self.device))
        s.feat, s.mel = self.model.features.init_state(self.device), self._lead_in()
        s.enc_done, s.n_samples, s.mel_end, s.last_token_frame, s.ready_since = 0, 0, None, -1, None
        held, s.held = s.held, []
        for x in held:
            self._accept(s, x)

    def _lead_in(self) -> Tensor:
        return torch.zeros(chunking.lead_in_mel(self.factor), self.model.cfg.encoder.feat_in, device=self.device)

    def _get(self, sid: str) -> _Stream:
        if sid not in self._streams:
            raise KeyError(f"no session {sid!r}")
        return self._streams[sid]


def _take(s: _Stream, n: int) -> Tensor:
    """The next n feature frames of a stream, zero-padded after a flush."""
    chunk, s.mel = s.mel[:n], s.mel[n:]
    if chunk.shape[0] < n:
        chunk = torch.cat([chunk, chunk.new_zeros(n - chunk.shape[0], chunk.shape[1])])
    return chunk


class EngineMetrics:
    """Counters and recent timings for /metrics, the benchmark and admission."""

    def __init__(self, window: int = 512):
        self.opened = self.refused = self.steps = 0
        self.compute_s = self.audio_s = 0.0
        self.batch_sizes: deque[int] = deque(maxlen=window)
        self.step_s: deque[float] = deque(maxlen=window)
        self.final_latency_s: deque[float] = deque(maxlen=window)
        self.chunk_latency_s: deque[float] = deque(maxlen=window)  # chunk audio complete → its tokens

    def record_step(self, batch: int, seconds: float, audio_ms: float) -> None:
        self.steps += 1
        self.compute_s += seconds
        self.audio_s += audio_ms / 1000
        self.batch_sizes.append(batch)
        self.step_s.append(seconds)

    def record_final(self, seconds: float) -> None:
        self.final_latency_s.append(seconds)

    @property
    def real_time_factor(self) -> float:
        """Compute seconds per second of audio decoded (< 1 keeps up)."""
        return self.compute_s / self.audio_s if self.audio_s else 0.0
