"""Many live streams in one process, stepped together: plan → run → update (continuous batching).

- plan: streams are grouped by latency, and each live utterance starts on one of its group's step
  clocks (up to a chunk of leading silence), so the members' chunks complete together; one clock while
  the group's step is short, evenly spaced sub-clocks when a flush would otherwise wait too long for a
  step (p95 time-to-final); every whole chunk has a deadline (when its audio was complete + the
  latency budget). At a tick the group waits for members whose chunk completes before its step would
  end and steps them together; streams ready between ticks (behind, or a flush's last chunks) run in
  time that keeps the group's next step within its deadline, or ride along with it. Groups that are
  due run earliest deadline first;
- run: one batched encoder step of k chunks per row, prompt and greedy decode, on rows gathered from the
  cache pool by slot and scattered back (no Python loop over streams around the model). Batches are
  not split by decoder: RNNT and CTC rows of a hybrid share the encoder step (the cost), then each head
  decodes its own rows, so the plan and its step clocks stay per latency;
- update: tokens go to their streams (`Stream` owns a stream's lifecycle); partials, finals (endpoint or
  flush) and metrics come out.

`feed`/`finish` only queue samples under the lock: features are computed on the engine thread when a
chunk is taken, so client threads do no torch work beside the step. One copy of the weights serves every
latency, language and decoder: the latency only picks the chunk shape, the language only the prompt row,
the decoder only the head.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .. import chunking
from ..config import DEFAULT_BEAM
from ..decoding.beam import row_traces
from ..decoding.boost import BoostTrie
from ..decoding.greedy import Emissions
from ..decoding.heads import DecodeState, decode_rows
from ..decoding.result import Transcript
from ..model.asr import AsrModel
from ..model.encoder import EncoderState
from ..model.precision import resolve_precision, runtime_model
from .cache_pool import CachePool
from .stream import Event, Grid, Stream, StreamOptions

__all__ = ["Engine", "EngineConfig", "EngineFull", "EngineMetrics", "Event", "decode_chunks"]


class EngineFull(RuntimeError):
    """A new session was refused; `reason` is "full" (session limit) or "behind" (not keeping real time)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EngineConfig:
    max_sessions: int = 32
    precision: str = "auto"  # auto (probed once) | fp32 | bf16 (encoder matmuls) | int8 (dynamic int8 linears)
    endpoint_ms: int = 800  # blank run after a sentence end that closes a segment; 0 disables
    max_lag_ms: float = 2000.0  # refuse new sessions while some stream is this far behind
    threads: int | None = None  # torch intra-op threads for the engine (None: torch's default)
    # A stream with several whole chunks waiting (it fell behind, or a file) runs up to this many in one
    # step: the same tokens (multi-chunk steps keep the chunk grid), one weight read for all.
    max_chunks_per_step: int = 4
    # Files (HTTP uploads) run as fast-forward streams beside the live ones, on the same chunk grid (tokens
    # equal to offline at that latency): live chunks first by deadline, files in the time between, all
    # files of a latency advancing together, round-robin across latencies. Up to this many at once.
    max_files: int = 4
    # Time from a chunk's audio being complete to its tokens; None: the chunk's own length + 300 ms (the
    # target for finals). Longer lets staggered streams share steps; shorter gives earlier partials.
    deadline_ms: float | None = None
    # With endpointing on, a segment without an endpoint for this long gets a final at a word start
    # ("length"), the rest of it going on: host memory stays bounded for a talker who never pauses
    # (0: no limit; a session without endpointing ends its segments itself, with finish()).
    max_segment_ms: float = 60_000.0
    # Each utterance of a live stream starts with up to one chunk of silence that puts its chunk ends on
    # its latency group's step clock: streams that started at any moment complete their chunks together
    # and share every step (as in lockstep); without it, staggered streams split a chunk period into
    # small steps. Tokens are offline's on the audio with that silence before it; timestamps are not moved.
    phase_align: bool = True
    # Step clocks per latency group at most: more make a flush's wait for a step shorter while the
    # group's step is long (each costs a weight read per chunk); 1: lockstep on one clock.
    max_sub_clocks: int = 4
    # Hypotheses of a stream decoded with beam search (StreamOptions.beam: boosted streams by default);
    # the pool keeps room for them in every slot. 1: no beam search (such streams decode greedily).
    beam_size: int = DEFAULT_BEAM


DEADLINE_SLACK_S = 0.3
LATE_S = 0.02  # a member whose expected piece is this late is not waited for (paused or slow client)
COST_EMA = 0.2  # weight of the newest measured step in the cost estimate
COST_MARGIN = 1.25  # waiting assumes steps this much longer than estimated (a long step must not miss)
FINALS_WINDOW = 32  # recent flush finals per latency that decide its number of step clocks
MIN_FINALS = 8  # fewer measured finals: keep the clocks as they are
RELAX = 0.5  # p95 time-to-final under this share of the budget: one clock fewer (hysteresis against flapping)


@torch.no_grad()
def decode_chunks(model: AsrModel, chunks: Tensor, enc_state: EncoderState, decode_state: DecodeState,
                  left: int, right: int, prompts: Tensor | None, mel_end: Tensor | None = None,
                  pos_proj: list[Tensor] | None = None,
                  ctc_rows: list[bool] | None = None, boost: list[BoostTrie | None] | None = None,
                  beam_rows: list[bool] | None = None) -> tuple[Emissions, EncoderState, DecodeState]:
    """One streaming step of B streams: encoder step → language prompt (fp32) → greedy decode, RNNT
    or, for the rows flagged in ctc_rows, the CTC head of a hybrid (the prompt acts before either head);
    boost: each row's phrase trie (None: no boosting), RNNT rows only; beam_rows: RNNT rows decoded with
    beam search (their labels come as a trace, Emissions.beam).

    chunks [B, k*factor*(r+1), F]; the one sequence the Engine and the benchmarks run.
    """
    out = model.encoder.step(chunks, enc_state, left, right, mel_end, pos_proj)
    frames = model.apply_prompt(out.frames.float(), prompts)
    em, decode_state = decode_rows(model, frames, out.valid, decode_state, ctc_rows, boost, beam_rows)
    return em, out.state, decode_state


@dataclass
class _Batch:
    """One planned step: streams of one latency, k chunks each."""

    deadline: float
    right: int
    k: int
    streams: list[Stream]
    files: bool = False  # a batch of file streams: no deadlines to miss


class Engine:
    """Continuous batching of live sessions over one AsrModel."""

    def __init__(self, model: AsrModel, tokenizer, cfg: EngineConfig = EngineConfig()):
        self.precision = resolve_precision(cfg.precision, model.encoder.device)  # ValueError if unknown
        self.cfg, self.tok = cfg, tokenizer
        self.model = runtime_model(model, self.precision.precision)
        self.left = self.model.cfg.encoder.left_context_frames
        self.grid = Grid.of(self.model)
        self.device = self.model.encoder.device
        self.pool = CachePool(self.model, cfg.max_sessions + cfg.max_files, self.left, self.device,
                              self.model.encoder.dtype, cfg.beam_size if cfg.beam_size > 1 else 0)
        self._files: set[str] = set()  # session ids of file streams
        self._file_turn = 0  # round-robin over the latencies of waiting files
        self._clock: dict[int, float] = {}  # right -> a tick of that latency group's step clock (monotonic s)
        self._phase: dict[str, float] = {}  # live session -> its sub-clock: ticks this fraction of a chunk later
        self._clocks: dict[int, int] = {}  # right -> step clocks new utterances of that latency spread over
        self._finals: defaultdict[int, deque[float]] = defaultdict(lambda: deque(maxlen=FINALS_WINDOW))
        # ^ right -> recent flush → final seconds of its live streams
        self.costs = StepCosts()
        self._streams: dict[str, Stream] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._next_plan = 0.0  # monotonic time the plan should be looked at again
        self._ids = itertools.count()
        self._positions: dict[int, list[Tensor]] = {}  # per-shape rel-pos projections, made once
        self._thread_state = threading.local()
        self.metrics = EngineMetrics()

    # ---- sessions (any thread) -----------------------------------------------------------
    def open(self, opts: StreamOptions, interim: bool = True, endpoint_ms: int | None = None) -> str:
        """Admit a session (options from Recognizer.stream_options); EngineFull when at the limit
        or behind real time."""
        with self._lock:
            if len(self._streams) - len(self._files) >= self.cfg.max_sessions:
                self.metrics.refused += 1
                raise EngineFull("full", f"server is at its limit of {self.cfg.max_sessions} concurrent sessions")
            if self.lag_ms() > self.cfg.max_lag_ms:
                self.metrics.refused += 1
                raise EngineFull("behind", f"engine is {self.lag_ms():.0f} ms behind real time; try again later")
            window = endpoint_ms if endpoint_ms is not None else self.cfg.endpoint_ms
            return self._admit(opts, interim, window, live=True)

    def open_file(self, opts: StreamOptions, samples: np.ndarray) -> str:
        """A whole file as a fast-forward stream: its final (one, at the end) comes as an event, then
        `closed`. EngineFull("files") when max_files are running."""
        with self._lock:
            if len(self._files) >= self.cfg.max_files:
                raise EngineFull("files", f"{len(self._files)} files are being transcribed; try again later")
            sid = self._admit(opts, interim=False, window_ms=0)
            self._files.add(sid)
        self.feed(sid, samples)
        self.finish(sid, close=True)
        return sid

    def _admit(self, opts: StreamOptions, interim: bool, window_ms: int, live: bool = False) -> str:
        """A stream in a free slot of the pool (under the lock); live streams align to their step clock."""
        if opts.left != self.left:
            raise ValueError(f"left context {opts.left} differs from the engine's {self.left}")
        if opts.beam and self.cfg.beam_size < 2:  # beam search is off in this engine: greedy
            opts = dataclasses.replace(opts, beam=False)
        sid, slot = f"s{next(self._ids)}", self.pool.alloc()
        self._streams[sid] = Stream(
            sid, slot, opts, self.grid, self.model.features, self.tok, interim,
            chunking.enc_frames_in(window_ms, self.grid.factor, self.grid.mel_ms) if window_ms else 10**9,
            reset_state=lambda: self.pool.reset(torch.tensor([slot], device=self.device)), prompt_of=self._prompt_of,
            max_segment_frames=self._max_segment_frames(window_ms), beam_width=self.cfg.beam_size,
            align=(lambda t0_s: self._phase_pad(sid, opts.right, t0_s)) if live and self.cfg.phase_align else None)
        self.metrics.opened += 1
        return sid

    def _phase_pad(self, sid: str, right: int, t0_s: float) -> int:
        """Leading silence for an utterance whose first sample arrived at t0_s: its chunks then complete on
        the latency group's step clock. A stream alone at its latency sets the clock and needs none (its
        tokens stay offline's); under the lock."""
        g, period_s = self.grid, self._chunk_s(right)
        first_end_s = t0_s + chunking.first_chunk_samples(right, g.factor, g.hop_samples, g.n_fft) / g.sample_rate_hz
        others = [s for i, s in self._streams.items() if s.right == right and i != sid and i not in self._files]
        if right not in self._clock or not others:
            self._clock[right], self._phase[sid] = first_end_s, 0.0
            return 0

        def pad(phase: float) -> int:
            tick_s = self._clock[right] + phase * period_s
            return chunking.phase_pad_samples(first_end_s, tick_s, period_s, g.sample_rate_hz, g.hop_samples)

        m = self._sub_clocks(right, len(others) + 1)
        load = [sum(round(self._phase[s.id] * m) % m == j for s in others if s.id in self._phase) for j in range(m)]
        self._phase[sid] = min(range(m), key=lambda j: (load[j], pad(j / m))) / m
        return pad(self._phase[sid])

    def _sub_clocks(self, right: int, n_streams: int) -> int:
        """How many evenly spaced step clocks n_streams of one latency use, by feedback on their measured
        finals. One clock (lockstep) is cheapest, but a flush's last chunks then wait for a tick whose
        step has every stream in it. While the recent p95 time-to-final of the latency is over budget, one
        more clock (each sub-group's step is shorter and comes sooner: a weight read more per chunk,
        taken only while the m steps still fit in a chunk); well under budget, one fewer. Changes apply to
        utterances as they start; the finals measured before a change are dropped."""
        m = self._clocks.get(right, 1)
        finals = self._finals[right]
        if len(finals) >= MIN_FINALS:
            p95_s, budget_s = float(np.percentile(finals, 95)), self.budget_s(right)
            if p95_s > budget_s and m < self.cfg.max_sub_clocks and self._steps_fit(right, n_streams, m + 1):
                m += 1
            elif p95_s < RELAX * budget_s and m > 1:
                m -= 1
        if m > 1 and not self._steps_fit(right, n_streams, m):
            m = 1
        if m != self._clocks.get(right, 1):
            finals.clear()
        self._clocks[right] = m
        return m

    def _steps_fit(self, right: int, n_streams: int, m: int) -> bool:
        """m sub-groups' steps (a flush riding along in each) fit in one chunk, with the estimates' margin."""
        period_s = self._chunk_s(right)
        return m * COST_MARGIN * self.costs.estimate(right, 1, -(-n_streams // m) + 1, period_s) <= period_s

    def _prompt_of(self, locale: str) -> int | None:
        """The prompt id a detected locale locks a stream to; None for a model without a slot for it."""
        prompt = self.model.cfg.prompt
        return None if prompt is None else prompt.dictionary.get(locale)

    def _max_segment_frames(self, endpoint_ms: int) -> int:
        """A session with endpointing gets length finals too; one without ends segments itself."""
        if not endpoint_ms or not self.cfg.max_segment_ms:
            return 0
        return chunking.enc_frames_in(self.cfg.max_segment_ms, self.grid.factor, self.grid.mel_ms)

    def feed(self, sid: str, samples: np.ndarray | Tensor) -> None:
        """Queue 16 kHz float samples (features and model run on the engine thread)."""
        x = np.asarray(samples.cpu() if isinstance(samples, Tensor) else samples, dtype=np.float32).reshape(-1)
        with self._lock:
            completed = self._get(sid).feed(x, time.monotonic())
        if completed:
            self._wake.set()

    def finish(self, sid: str, close: bool = False) -> None:
        """End the current utterance: the last chunk is padded and decoded, its final emitted.
        With close=True the session ends after that final; otherwise it takes new audio (audio fed
        before the final is held for the next utterance)."""
        with self._lock:
            self._get(sid).finish(close, time.monotonic())
        self._wake.set()

    def set_language(self, sid: str, opts: StreamOptions) -> None:
        """Switch a session's language prompt and lock option (opts from Recognizer.stream_options) from
        its next chunk."""
        with self._lock:
            self._get(sid).set_language(opts.prompt_id, opts.text, opts.lock_language)

    def drop_held(self, sid: str) -> bool:
        """Drop audio held behind a flush in progress; False when no flush is in progress."""
        with self._lock:
            return self._get(sid).drop_held()

    def held_samples(self, sid: str) -> int:
        """Samples held behind a flush in progress (the next utterance's start)."""
        with self._lock:
            return self._get(sid).held_samples

    def partial(self, sid: str) -> Transcript:
        """The current segment's transcript so far."""
        with self._lock:
            return self._get(sid).partial()

    def abort(self, sid: str) -> None:
        """Drop a session at once (client gone); no final."""
        with self._lock:
            self._remove(sid)

    def _remove(self, sid: str) -> None:
        """A stream leaves: its slot goes back to the pool (under the lock)."""
        s = self._streams.pop(sid, None)
        self._files.discard(sid)
        self._phase.pop(sid, None)
        if s is not None:
            self.pool.free(s.slot)

    @property
    def n_sessions(self) -> int:
        """Live sessions (files not counted)."""
        return len(self._streams) - len(self._files)

    @property
    def n_files(self) -> int:
        return len(self._files)

    def lag_ms(self) -> float:
        """How far the most-behind live stream is: audio that arrived beyond one chunk, not yet stepped
        (files are fast-forward: always behind by design)."""
        with self._lock:
            behind = [s.backlog_mel() - s.chunk_mel for sid, s in self._streams.items() if sid not in self._files]
        return max([0.0] + [b * self.grid.mel_ms for b in behind])

    # ---- the engine loop -----------------------------------------------------------------
    def step(self, drain: bool = False) -> list[Event]:
        """Run every group that is due (all ready groups with drain=True). Call from one thread."""
        self._own_threads()
        now = time.monotonic()
        with self._lock:
            batches, finished = self._plan(now, drain)
            events = [e for s in finished for e in self._events(s, now)]
        for batch in batches:
            events += self._step_batch(batch)
        return events

    def drain(self) -> list[Event]:
        """Step until no stream has a whole chunk or a flush waiting (a Session, or files)."""
        events = self.step(drain=True)
        while self.has_work():
            events += self.step(drain=True)
        return events

    def has_work(self) -> bool:
        with self._lock:
            return any(s.chunk_times or (s.flushing and not s.closing) for s in self._streams.values())

    def wait_for_work(self, timeout_s: float) -> None:
        """Block until a chunk completes, a flush arrives, or the plan says a group is due (or the timeout)."""
        self._wake.wait(max(0.0, min(timeout_s, self._next_plan - time.monotonic())))
        self._wake.clear()

    def _own_threads(self) -> None:
        """The engine thread's intra-op threads (torch's setting is per thread)."""
        if self.cfg.threads and not getattr(self._thread_state, "threads_set", False):
            torch.set_num_threads(self.cfg.threads)
            self._thread_state.threads_set = True

    def _plan(self, now: float, drain: bool) -> tuple[list[_Batch], list[Stream]]:
        """Due batches, earliest deadline first, and flushed streams that owe no step (their final is due)."""
        groups: dict[int, list[Stream]] = {}
        files: dict[int, list[Stream]] = {}
        finished = []
        for s in self._streams.values():
            if s.flushing and not s.chunk_times:
                finished.append(s)
            elif s.id in self._files:
                if s.chunk_times:  # an upload admitted but not fed yet has nothing to step
                    files.setdefault(s.right, []).append(s)
            else:
                groups.setdefault(s.right, []).append(s)
        batches, wake = [], now + 0.05
        for right, members in groups.items():
            batch, when = self._plan_group(right, members, now, drain)
            if batch is not None:
                batches.append(batch)
            wake = min(wake, when)
        if files and not batches:  # files use the time no live chunk needs
            batches.append(self._plan_files(files, wake - now))
            wake = now
        self._next_plan = wake
        return sorted(batches, key=lambda b: b.deadline), finished

    def _plan_files(self, files: dict[int, list[Stream]], slack_s: float) -> _Batch:
        """One step for the files of one latency (round-robin across latencies): every file of it
        advances the same number of chunks, so a short upload is not stuck behind a long one; as many
        chunks as fit before the next live group is due (at least one)."""
        rights = sorted(files)
        right = rights[self._file_turn % len(rights)]
        self._file_turn += 1
        members = files[right]
        k = max(1, min(self.cfg.max_chunks_per_step, min(len(s.chunk_times) for s in members)))
        while k > 1 and COST_MARGIN * self.costs.estimate(right, k, len(members), self._chunk_s(right)) > slack_s:
            k -= 1
        return _Batch(float("inf"), right, k, members, files=True)

    def _plan_group(self, right: int, members: list[Stream], now: float, drain: bool) -> tuple[_Batch | None, float]:
        """Step this latency group now (a batch), or wait until the returned time.

        With the group on one step clock: at a tick, wait for members whose chunk completes before the
        step would end (within the deadline) and step together. Between ticks (ready streams fell
        behind, are out of phase, or a flush made its last chunks whole), run them now when that step
        still lets the group's next step meet its deadline, with as many of their chunks as fit; else
        they ride along with the group's next step, a chunk at a time (stepping them alone whenever
        ready would split the group's steps: every flush cost the others a step)."""
        ready = [s for s in members if s.chunk_times]
        etas = sorted(e for s in members if not s.chunk_times and (e := s.next_chunk_eta()) >= now - LATE_S)
        if not ready:
            return None, etas[0] if etas else float("inf")
        on_time = [s for s in ready if len(s.chunk_times) == 1] or ready  # the others' deadlines are past
        deadline = min(s.chunk_times[0] for s in on_time) + self.budget_s(right)
        k = self._chunks_per_step(right, len(ready), min(len(s.chunk_times) for s in ready), drain)
        step_s = COST_MARGIN * self.costs.estimate(right, k, len(ready), self._chunk_s(right))
        if drain or not etas:
            return _Batch(deadline, right, k, ready), now
        joined_s = COST_MARGIN * self.costs.estimate(right, 1, len(ready) + 1, self._chunk_s(right))
        in_time = etas[0] + joined_s <= deadline  # waiting for the next partner keeps the deadline
        # in phase: the newest ready chunk and the partner's are of one tick (not a sub-clock or period apart)
        in_phase = etas[0] - max(s.chunk_times[-1] for s in ready) <= self._tick_gap_s(right, members) / 2
        if etas[0] <= now + step_s and in_phase:  # a partner's chunk completes before this step would end
            if in_time and now + step_s < deadline:
                return None, max(now + 0.001, min(etas[0], deadline - step_s))  # share the step
            return _Batch(deadline, right, k, ready), now
        latest_s = etas[0] + self.budget_s(right) - COST_MARGIN * self.costs.estimate(
            right, 1, len(members), self._chunk_s(right))  # the group's next step must start by then
        catch_up = self._catch_up(right, ready, now, latest_s)
        if catch_up is not None:
            return catch_up, now
        if in_time or len(on_time) < len(ready):  # ride along (streams behind have missed already)
            return None, etas[0]
        return _Batch(deadline, right, k, ready), now

    def _tick_gap_s(self, right: int, members: list[Stream]) -> float:
        """The shortest time between two ticks of the group's sub-clocks (a chunk with one clock)."""
        phases = sorted({self._phase.get(s.id, 0.0) for s in members})
        gaps = [b - a for a, b in zip(phases, phases[1:] + [phases[0] + 1])]
        return min(gaps) * self._chunk_s(right)

    def _catch_up(self, right: int, behind: list[Stream], now: float, next_due: float) -> _Batch | None:
        """A step of streams ready between the group's steps, with as many of their chunks as end by
        next_due (the latest start that keeps the group's next step within its deadline); None when
        not even one chunk does."""
        k = min(self.cfg.max_chunks_per_step, min(len(s.chunk_times) for s in behind))
        while k >= 1:
            if now + COST_MARGIN * self.costs.estimate(right, k, len(behind), self._chunk_s(right)) <= next_due:
                deadline = min(s.chunk_times[0] for s in behind) + self.budget_s(right)
                return _Batch(deadline, right, k, behind)
            k -= 1
        return None

    def _chunks_per_step(self, right: int, batch: int, ready: int, drain: bool = False) -> int:
        """Chunks per row: all that every row has, at most max_chunks_per_step, and (k > 1, live
        streams) only while the step is estimated to end within the latency budget (a longer step
        would make its own and other groups' chunks late); draining (files, a Session) takes as many
        as allowed. Several chunks per step is how streams that fell behind catch up: one weight read
        serves all of them (at 80 ms a one-chunk step can take longer than a chunk)."""
        k = max(1, min(self.cfg.max_chunks_per_step, ready))
        while not drain and k > 1 and COST_MARGIN * self.costs.estimate(right, k, batch, self._chunk_s(right)) \
                > self.budget_s(right):
            k -= 1
        return k

    def budget_s(self, right: int) -> float:
        """Time from a chunk's audio being complete to its tokens."""
        if self.cfg.deadline_ms is not None:
            return self.cfg.deadline_ms / 1000
        return self._chunk_s(right) + DEADLINE_SLACK_S

    def _chunk_s(self, right: int) -> float:
        return chunking.chunk_s(right, self.grid.factor, self.grid.mel_ms)

    def _step_batch(self, batch: _Batch) -> list[Event]:
        """Run one planned batch and update its streams; metrics per latency."""
        t0, start = time.perf_counter(), time.monotonic()
        trace = self.metrics.trace
        flushing = [s.id for s in batch.streams if s.flushing] if trace is not None else []  # before the step
        emissions, ready_times = self._run(batch)
        seconds = time.perf_counter() - t0
        if trace is not None:
            trace.append({"start": start, "seconds": seconds, "right": batch.right, "k": batch.k,
                          "rows": len(batch.streams), "flushing": flushing, "files": batch.files,
                          "oldest_chunk": min(ready_times)})
        self.costs.record(batch.right, batch.k, len(batch.streams), seconds)
        now = time.monotonic()
        budget = self.budget_s(batch.right)
        latency_ms = chunking.latency_ms(batch.right, self.grid.factor, self.grid.mel_ms)
        key = "files" if batch.files else latency_ms  # files have no deadlines: kept apart from live stats
        misses = 0 if batch.files else sum(now > t + budget for t in ready_times)
        self.metrics.record_step(key, len(batch.streams), batch.k, seconds, misses,
                                 len(batch.streams) * batch.k * self._chunk_s(batch.right))
        if not batch.files:
            self.metrics.chunk_latency_s.extend(now - t for t in ready_times)
        with self._lock:
            return self._update(batch, emissions, now)

    @torch.no_grad()
    def _run(self, batch: _Batch) -> tuple[list[tuple], list[float]]:
        """Batched encoder step (k chunks per stream) + prompt + decode for one batch: per stream its
        (labels, frames, probs, beam trace or None)."""
        streams, right, k = batch.streams, batch.right, batch.k
        chunks = torch.empty(len(streams), k * chunking.chunk_mel(right, self.grid.factor), self.grid.feat_in,
                             device=self.device)  # [B, k*chunk_mel, F]
        with self._lock:
            ready_times = [s.take_into(chunks[i], k) for i, s in enumerate(streams)]
            ends = torch.tensor([s.mel_end() for s in streams], device=self.device)
            enc_done = [s.enc_done for s in streams]
        slots = torch.tensor([s.slot for s in streams], device=self.device)
        prompts = None
        if self.model.prompt_kernel is not None:
            prompts = torch.tensor([s.prompt_id for s in streams], device=self.device)
        beams = [s.opts.beam for s in streams]
        enc_state, decode_state = self.pool.gather(slots, any(beams))
        em, enc_state, decode_state = decode_chunks(self.model, chunks, enc_state, decode_state, self.left, right,
                                                    prompts, ends, self._pos(chunking.enc_frames(k, right)),
                                                    [s.opts.decoder == "ctc" for s in streams],
                                                    [s.opts.boost for s in streams],
                                                    beams)
        self.pool.scatter(slots, enc_state, decode_state)
        traces = row_traces(em.beam, enc_done)
        return [(*row, traces.get(i)) for i, row in enumerate(em.to_lists(enc_done))], ready_times

    def _pos(self, n_frames: int) -> list[Tensor]:
        """Relative-position projections for a step of n_frames new frames, computed once per shape."""
        if n_frames not in self._positions:
            self._positions[n_frames] = self.model.encoder.positions(self.left + n_frames, self.device)
        return self._positions[n_frames]

    def _update(self, batch: _Batch, emissions, now: float) -> list[Event]:
        events = []
        for s, (labels, frames, probs, trace) in zip(batch.streams, emissions):
            if self._streams.get(s.id) is not s:
                continue  # aborted while running
            s.add_tokens(labels, frames, probs, batch.k, trace)
            events += self._events(s, now)
        return events

    def _events(self, s: Stream, now: float) -> list[Event]:
        """A stream's events after a step; a final that closes the session frees its slot."""
        flush_time = s.flush_time  # read first: a flush's final restarts the stream
        events = s.events(now)
        if s.collapse_to is not None:  # a beam stream's final: only its best hypothesis goes on
            self.pool.collapse(s.slot, s.collapse_to)
            s.collapse_to = None
        if flush_time is not None and any(e.kind == "final" and e.reason == "flush" for e in events):
            self.metrics.record_final(now - flush_time)
            if s.id not in self._files:
                self._finals[s.right].append(now - flush_time)
        if s.closing:
            self._remove(s.id)
        return events

    def _get(self, sid: str) -> Stream:
        if sid not in self._streams:
            raise KeyError(f"no session {sid!r}")
        return self._streams[sid]


class StepCosts:
    """Step seconds per (right, k, batch): an EMA of measured steps, estimates for unmeasured batches."""

    def __init__(self):
        self._ema: dict[tuple[int, int], dict[int, float]] = {}

    def record(self, right: int, k: int, batch: int, seconds: float) -> None:
        by_batch = self._ema.setdefault((right, k), {})
        old = by_batch.get(batch)
        by_batch[batch] = seconds if old is None else (1 - COST_EMA) * old + COST_EMA * seconds

    def estimate(self, right: int, k: int, batch: int, prior_s: float) -> float:
        """The measured cost; else the nearest measured batch's, scaled up linearly for a bigger batch
        (steps grow slower than that: a safe side); else k times one chunk's; else prior_s / 4."""
        by_batch = self._ema.get((right, k))
        if by_batch:
            if batch in by_batch:
                return by_batch[batch]
            below = [b for b in by_batch if b < batch]
            if not below:
                return by_batch[min(by_batch)]
            b0 = max(below)
            above = [b for b in by_batch if b > batch]
            if above:
                b1 = min(above)
                return by_batch[b0] + (by_batch[b1] - by_batch[b0]) * (batch - b0) / (b1 - b0)
            return by_batch[b0] * batch / b0
        if k > 1 and (right, 1) in self._ema:
            return k * self.estimate(right, 1, batch, prior_s)
        return prior_s / 4


@dataclass
class LatencyStats:
    """Steps of one latency: how full they were and how many chunks came after their deadline."""

    steps: int = 0
    rows: int = 0
    chunks: int = 0
    deadline_misses: int = 0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.steps if self.steps else 0.0


@dataclass
class EngineMetrics:
    """Counters and recent timings for /metrics, the benchmark and admission."""

    window: int = 512
    opened: int = 0
    refused: int = 0
    steps: int = 0
    compute_s: float = 0.0
    audio_s: float = 0.0
    by_latency: dict[int | str, LatencyStats] = field(default_factory=dict)

    def __post_init__(self):
        self.trace: list[dict] | None = None  # a list: every step is recorded in it (benchmarks)
        self.batch_sizes: deque[int] = deque(maxlen=self.window)
        self.step_s: deque[float] = deque(maxlen=self.window)
        self.final_latency_s: deque[float] = deque(maxlen=self.window)
        self.chunk_latency_s: deque[float] = deque(maxlen=self.window)  # chunk audio complete → its tokens

    def record_step(self, latency_ms: int | str, batch: int, k: int, seconds: float, misses: int, audio_s: float) -> None:
        self.steps += 1
        self.compute_s += seconds
        self.audio_s += audio_s
        self.batch_sizes.append(batch)
        self.step_s.append(seconds)
        stats = self.by_latency.setdefault(latency_ms, LatencyStats())
        stats.steps += 1
        stats.rows += batch
        stats.chunks += batch * k
        stats.deadline_misses += misses

    def record_final(self, seconds: float) -> None:
        self.final_latency_s.append(seconds)

    @property
    def real_time_factor(self) -> float:
        """Compute seconds per second of audio decoded (< 1 keeps up)."""
        return self.compute_s / self.audio_s if self.audio_s else 0.0
