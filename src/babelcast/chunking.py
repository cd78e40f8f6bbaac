"""All chunk arithmetic, as pure functions (spec §3.4–3.6).

Units: `_samples` (16 kHz audio), `_mel` (10 ms feature frames), `_enc` (encoder frames,
`factor` mel frames each: 80 ms for factor 8), `_ms`.

babelcast streams with one uniform chunk shape (NeMo uses a shorter first chunk):
every step feeds `history_mel = factor + 1` old mel frames plus `chunk_mel = factor * (r + 1)`
new ones, and keeps the last `r + 1` encoder frames. The stream starts with `lead_in_mel = factor - 1`
virtual frames before mel frame 0, so the first step's real frames are NeMo's first chunk
(`1 + factor * r`, e.g. 25 at r=3) and every later step is NeMo's later chunk (`factor * (r + 1)`).
Virtual frames are masked at every subsampling stage, which is exactly the causal zero padding of the
offline forward, so streaming equals offline at the same context.

Worked example (factor 8, r = 3, 320 ms): chunk 32 mel, history 9, so 41 mel frames in;
subsampling gives f(f(f(41))) = 21 → 11 → 6 frames with f(n) = n // 2 + 1; the first
`drop_enc = 2` depend on history only and are dropped, leaving 4 = r + 1 frames.
"""
from __future__ import annotations

from .errors import UnsupportedLatency


def stage_len(n: int) -> int:
    """Frames out of one causal stride-2 conv stage (kernel 3, pad 2 left / 1 right): floor(n/2) + 1."""
    return n // 2 + 1


def subsampled_len(n_mel: int, stages: int) -> int:
    """Encoder frames from `n_mel` mel frames through `stages` strided stages (offline length)."""
    for _ in range(stages):
        n_mel = stage_len(n_mel)
    return n_mel


def feature_frames(n_samples: int, hop_samples: int) -> int:
    """Mel frames of an utterance: floor(S / hop), no +1 (spec §2 step 2)."""
    return n_samples // hop_samples


def chunk_mel(right: int, factor: int) -> int:
    """New mel frames per streaming step: factor * (r + 1) (e.g. 8 at 80 ms, 112 at 1120 ms)."""
    return factor * (right + 1)


def history_mel(factor: int) -> int:
    """Mel frames of history re-fed each step (NeMo's pre_encode_cache_size[1] = factor + 1 = 9)."""
    return factor + 1


def lead_in_mel(factor: int) -> int:
    """Virtual mel frames before frame 0, so the first step lines up with NeMo's 1 + factor*r chunk."""
    return factor - 1


def drop_enc(factor: int) -> int:
    """Encoder frames per step that come from history only (NeMo's drop_extra_pre_encoded = 2)."""
    return 1 + (history_mel(factor) - 1) // factor


def first_mel_pos(factor: int) -> int:
    """Absolute mel index of the first history frame of a stream's first step (-16 for factor 8)."""
    return -(history_mel(factor) + lead_in_mel(factor))


def enc_frame_ms(factor: int, frame_ms: float) -> float:
    """Length of one encoder frame: factor mel frames (80 ms for 3.5)."""
    return factor * frame_ms


def enc_frames_in(ms: float, factor: int, frame_ms: float) -> int:
    """Encoder frames that cover ms of audio, rounded up (e.g. an endpoint's blank window)."""
    return -int(-ms // enc_frame_ms(factor, frame_ms))


def latency_ms(right: int, factor: int, frame_ms: float) -> int:
    """Chunk latency of right context r: (r + 1) encoder frames (80 ms each for 3.5)."""
    return int(round((right + 1) * enc_frame_ms(factor, frame_ms)))


def right_for_latency(latency: int, factor: int, frame_ms: float) -> int:
    """Right context r for a chunk latency in ms; raises if it is not a whole number of frames."""
    enc_ms = enc_frame_ms(factor, frame_ms)
    frames = latency / enc_ms
    if latency <= 0 or abs(frames - round(frames)) > 1e-6:
        raise UnsupportedLatency(f"latency {latency} ms is not a positive multiple of {enc_ms:g} ms")
    return int(round(frames)) - 1


def supported_contexts(trained: tuple[tuple[int, int], ...]) -> list[tuple[int, int, bool]]:
    """Every usable (left, right, trained) pair: the trained list plus right contexts whose chunk
    divides the left context (project decision: e.g. 160 ms on 3.5 where 56 % 2 == 0)."""
    left = trained[0][0]
    rights = {r for _, r in trained}
    out = [(left, r, True) for _, r in trained]
    for r in (0, 1, 3, 6, 13):
        if r not in rights and left % (r + 1) == 0:
            out.append((left, r, False))
    return sorted(out, key=lambda c: c[1])


def resolve_context(latency: int | None, trained: tuple[tuple[int, int], ...], factor: int,
                    frame_ms: float, default: str = "first") -> tuple[int, int, bool]:
    """(left, right, trained) for a requested latency; None picks the default context
    ('first' = the checkpoint's default, 'largest' = the longest trained lookahead)."""
    if latency is None:
        left, right = trained[0] if default == "first" else max(trained, key=lambda c: c[1])
        return left, right, True
    right = right_for_latency(latency, factor, frame_ms)
    for left, r, is_trained in supported_contexts(trained):
        if r == right:
            return left, r, is_trained
    allowed = [latency_ms(r, factor, frame_ms) for _, r, _ in supported_contexts(trained)]
    raise UnsupportedLatency(f"latency {latency} ms is not supported by this model; choose one of {allowed}")


def final_valid_enc(n_mel_total: int, enc_done: int, right: int, stages: int) -> int:
    """Encoder frames still owed by the last (padded) step: offline length minus frames emitted."""
    return max(0, min(right + 1, subsampled_len(n_mel_total, stages) - enc_done))


def streamed_mel(n_samples: int, hop_samples: int, n_fft: int) -> int:
    """Mel frames a stream can compute from its first n_samples: frame t needs samples up to
    hop*t + n_fft/2 (its centered window) and at most floor(S / hop) frames exist."""
    return max(0, min(n_samples // hop_samples, (n_samples + n_fft // 2 - n_fft) // hop_samples + 1))


def samples_for_mel(n_mel: int, hop_samples: int, n_fft: int) -> int:
    """Fewest samples from which a stream has n_mel frames (the inverse of streamed_mel)."""
    if n_mel <= 0:
        return 0
    return max(n_mel * hop_samples, (n_mel - 1) * hop_samples + n_fft - n_fft // 2)


def whole_chunks(n_mel: int, right: int, factor: int) -> int:
    """Chunks of a stream whose n_mel real frames have arrived (the lead-in counts toward the first)."""
    return (lead_in_mel(factor) + n_mel) // chunk_mel(right, factor)


def mel_for_chunks(n_chunks: int, right: int, factor: int) -> int:
    """Real mel frames that complete n_chunks chunks (the lead-in fills the start of the first)."""
    return max(0, n_chunks * chunk_mel(right, factor) - lead_in_mel(factor))


def utterance_chunks(n_mel_total: int, right: int, factor: int, stages: int) -> int:
    """Steps an ended utterance of n_mel_total frames takes: its whole chunks, then one zero-padded
    chunk while encoder frames are still owed."""
    whole = whole_chunks(n_mel_total, right, factor)
    return whole + (1 if final_valid_enc(n_mel_total, enc_frames(whole, right), right, stages) > 0 else 0)


def enc_frames(n_chunks: int, right: int) -> int:
    """Encoder frames that n_chunks steps emit: r + 1 each."""
    return n_chunks * (right + 1)


def chunk_s(right: int, factor: int, frame_ms: float) -> float:
    """Audio seconds per chunk (the latency of right context r)."""
    return latency_ms(right, factor, frame_ms) / 1000


def first_chunk_samples(right: int, factor: int, hop_samples: int, n_fft: int) -> int:
    """Real samples that complete a stream's first chunk (the lead-in fills the rest)."""
    return samples_for_mel(mel_for_chunks(1, right, factor), hop_samples, n_fft)


def phase_pad_samples(chunk_end_s: float, tick_s: float, period_s: float, sample_rate_hz: int,
                      hop_samples: int) -> int:
    """Leading silence (whole hops, < one chunk) that moves a new utterance's chunk ends, the first
    due at chunk_end_s, back onto a step clock ticking at tick_s + j * period_s (one chunk): every
    chunk of it then completes with its latency group's (a step serves them all). Whole hops keep its
    mel frames on the audio's grid: the tokens are offline's on the audio with that silence before it."""
    early_s = (chunk_end_s - tick_s) % period_s
    return int(early_s * sample_rate_hz) // hop_samples * hop_samples
