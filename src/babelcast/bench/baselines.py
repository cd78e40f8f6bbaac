"""Peers measured in the same run as babelcast, on the same checkpoint, in lockstep (every stream steps
together, the peers' best case): how many streams each keeps in real time at a latency.

- babelcast: Engine-equivalent batched `encoder.step` + prompt + greedy, per precision;
- NeMo 3.0.0 cache-aware streaming: `conformer_stream_step` on batched caches (needs nemo-toolkit);
- buffered streaming with the same weights: every chunk re-encodes a window of left context + chunk
  through the offline forward (what a model without caches must do), batched over streams.

A configuration sustains B streams when one lockstep step for B streams takes at most one chunk.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np
import torch

import babelcast
from babelcast import chunking
from babelcast.decoding.greedy import greedy_rnnt
from babelcast.decoding.heads import DecodeState
from babelcast.model.precision import runtime_model
from babelcast.streaming.engine import decode_chunks

StepFn = Callable[[int], Callable[[], None]]  # batch → a function doing one lockstep step


def _timed(step: Callable[[], None], warmup: int = 2, repeats: int = 4) -> float:
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


MAX_PROBE_STEP_S = 1.5  # batches keep doubling while a step takes at most this long (or fits a chunk)


def max_streams(make_step: StepFn, chunk_s: float, limit: int = 256, log=print) -> tuple[int, dict[int, float]]:
    """Largest batch whose lockstep step fits in one chunk (doubling, then bisection), and every step
    time measured: batches keep doubling past a miss while a step takes at most MAX_PROBE_STEP_S, so a
    configuration that misses at batch 1 but gains from batching gets its capacity measured (the same
    rule for babelcast and its peers)."""
    times: dict[int, float] = {}

    def fits(b: int) -> bool:
        times[b] = _timed(make_step(b))
        log(f"    batch {b:>4}: {1000 * times[b]:8.1f} ms per {1000 * chunk_s:.0f} ms chunk")
        return times[b] <= chunk_s

    good, bad, b = 0, None, 1
    while b <= limit:
        if fits(b):
            good = b
        elif bad is None:
            bad = b
        if times[b] > max(chunk_s, MAX_PROBE_STEP_S):
            break
        b *= 2
    bad = bad if bad is not None else min(b, limit + 1)
    while good and bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good, times


@functools.lru_cache(maxsize=2)
def runtime_copy(rec: babelcast.Recognizer, precision: str):
    """One runtime copy per precision for the whole benchmark run."""
    return runtime_model(rec.model, precision)


@functools.lru_cache(maxsize=1)
def _nemo_model(nemo_path: str):
    """NeMo restores a full-size checkpoint in about a minute: once per run."""
    import logging

    from nemo.collections.asr.models import ASRModel
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    return ASRModel.restore_from(nemo_path, map_location="cpu").eval()


@functools.lru_cache(maxsize=4)
def speech_mel(rec: babelcast.Recognizer, seconds: float = 20.0) -> torch.Tensor:
    """Mel frames [T, F] of the benchmark's speech-like audio, so lockstep steps emit tokens as live
    streams do (random mel would measure only the no-emission decode)."""
    from .streams import utterances

    audio = torch.from_numpy(np.concatenate(utterances(seconds, seed=0)))
    mel, _ = rec.model.features(audio[None], torch.tensor([audio.numel()]))
    return mel[0].T.contiguous()


def lockstep_chunks(mel: torch.Tensor, batch: int, n: int):
    """An endless supply of [batch, n, F] chunks: row i walks the speech from its own offset."""
    usable = mel.shape[0] // n * n
    pos = [(i * 7 * n) % usable for i in range(batch)]
    while True:
        yield torch.stack([mel[p:p + n] for p in pos])
        pos = [(p + n) % usable for p in pos]


def babelcast_step(rec: babelcast.Recognizer, latency_ms: int, precision: str, counts: list | None = None) -> StepFn:
    """The engine's batched step on speech-like chunks; `counts` collects (labels, frames) per step."""
    model = runtime_copy(rec, precision)
    left, right, _ = rec.context(latency_ms, "streaming")
    enc = model.encoder
    n = chunking.chunk_mel(right, enc.cfg.subsampling_factor)
    pos = enc.positions(left + right + 1, enc.device)
    mel_all = speech_mel(rec)

    def make(b: int) -> Callable[[], None]:
        state = enc.init_state(b, left, enc.device, enc.dtype)
        pred = DecodeState.start(model, b)
        chunks = lockstep_chunks(mel_all, b, n)
        prompt = rec.prompt_id("auto")
        prompts = torch.full((b,), prompt) if prompt is not None else None

        def step() -> None:
            nonlocal state, pred
            em, state, pred = decode_chunks(model, next(chunks), state, pred, left, right, prompts, None, pos)
            rows = em.to_lists()
            if counts is not None:
                counts.append((sum(len(r[0]) for r in rows), b * (right + 1)))
        return step
    return make


def buffered_step(rec: babelcast.Recognizer, latency_ms: int) -> StepFn:
    """Re-encode left context + chunk (+ lookahead) per chunk with the offline forward, fp32."""
    model = rec.model
    left, right, _ = rec.context(latency_ms, "streaming")
    f = model.cfg.encoder.subsampling_factor
    window_mel = (left + 2 * (right + 1)) * f  # history, the chunk, and its lookahead

    def make(b: int) -> Callable[[], None]:
        mel = torch.randn(b, model.cfg.encoder.feat_in, window_mel)
        lengths = torch.full((b,), window_mel)
        prompt = rec.prompt_id("auto")
        prompts = torch.full((b,), prompt) if prompt is not None else None

        @torch.no_grad()
        def step() -> None:
            frames, enc_len = model.encoder(mel, lengths, left, right)
            keep = frames[:, left: left + right + 1]  # the chunk's frames
            keep = model.apply_prompt(keep, prompts)
            em, _ = greedy_rnnt(model.decoder, model.joint, keep, torch.full((b,), right + 1),
                                model.decoder.init_state(b), model.cfg.transducer.max_symbols)
            em.to_lists()
        return step
    return make


def nemo_step(nemo_path: str, latency_ms: int) -> StepFn:
    """NeMo's own cache-aware streaming step on B streams in lockstep (fp32, eval, no grad)."""
    model = _nemo_model(nemo_path)
    contexts = [list(c) for c in model.encoder.att_context_size_all]
    r = latency_ms // 80 - 1
    ctx = next(c for c in contexts if c[1] == r)
    model.encoder.set_default_att_context_size(ctx)
    scfg = model.encoder.streaming_cfg
    if hasattr(model, "set_inference_prompt"):
        model.set_inference_prompt("auto")
    feat = model.cfg.preprocessor.features
    t_chunk = scfg.chunk_size[1] + scfg.pre_encode_cache_size[1]

    def make(b: int) -> Callable[[], None]:
        cache = list(model.encoder.get_initial_cache_state(batch_size=b))
        chunk = torch.randn(b, feat, t_chunk)
        lengths = torch.full((b,), t_chunk)
        hyps, pred = [None], [None]

        @torch.no_grad()
        def step() -> None:
            out = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=lengths, cache_last_channel=cache[0],
                cache_last_time=cache[1], cache_last_channel_len=cache[2], keep_all_outputs=False,
                previous_hypotheses=hyps[0], previous_pred_out=pred[0],
                drop_extra_pre_encoded=scfg.drop_extra_pre_encoded, return_transcription=True)
            pred[0], _, cache[0], cache[1], cache[2], hyps[0] = out
        return step
    return make
