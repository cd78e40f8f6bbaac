"""babelcast.chunking on its own: the module docstring's worked example, the latency table of the model card,
and the identities the streaming code relies on (inverses, frames owed, step-clock padding)."""
from __future__ import annotations

import pytest

from babelcast import chunking
from babelcast.errors import UnsupportedLatency

FACTOR, FRAME_MS, STAGES, HOP, N_FFT = 8, 10.0, 3, 160, 512  # 3.5's (spec §1.2, §2)
TRAINED = ((56, 3), (56, 0), (56, 6), (56, 13))  # the demo model's att_context_size list, default first


def test_the_worked_example():
    """factor 8, r = 3 (320 ms): 9 history + 32 new mel frames → 21 → 11 → 6 encoder frames, 2 of them
    history's, 4 = r + 1 kept; the first step's real frames are NeMo's first chunk, 1 + factor * r."""
    right = 3
    fed = chunking.history_mel(FACTOR) + chunking.chunk_mel(right, FACTOR)
    assert fed == 41 and chunking.subsampled_len(fed, STAGES) == 6
    assert chunking.subsampled_len(fed, STAGES) - chunking.drop_enc(FACTOR) == right + 1
    assert chunking.chunk_mel(right, FACTOR) - chunking.lead_in_mel(FACTOR) == 1 + FACTOR * right
    assert chunking.first_mel_pos(FACTOR) == -16
    # a causal stride-2 stage (kernel 3, 2 left + 1 right padding): floor((n + 3 - 3) / 2) + 1 frames
    assert [chunking.subsampled_len(n, STAGES) for n in (1, 8, 16, 100, 101)] == [1, 2, 3, 14, 14]


@pytest.mark.parametrize("right, latency", [(0, 80), (1, 160), (3, 320), (6, 560), (13, 1120)])
def test_latency_and_right_context_are_inverse(right, latency):
    """The model card's five latencies, [56, r] ↔ (r + 1) × 80 ms."""
    assert chunking.latency_ms(right, FACTOR, FRAME_MS) == latency
    assert chunking.right_for_latency(latency, FACTOR, FRAME_MS) == right
    assert chunking.chunk_s(right, FACTOR, FRAME_MS) == latency / 1000


@pytest.mark.parametrize("latency", [0, -80, 100, 81])
def test_a_latency_off_the_frame_grid_is_refused(latency):
    with pytest.raises(UnsupportedLatency, match="multiple of 80 ms"):
        chunking.right_for_latency(latency, FACTOR, FRAME_MS)


def test_contexts_a_model_supports():
    """The trained ones, and 160 ms untrained (its 2-frame chunk divides the left context 56)."""
    assert chunking.supported_contexts(TRAINED) == [(56, 0, True), (56, 1, False), (56, 3, True), (56, 6, True),
                                                    (56, 13, True)]
    assert chunking.supported_contexts(((70, 0),)) == [(70, 0, True), (70, 1, False), (70, 6, False), (70, 13, False)]
    assert chunking.resolve_context(None, TRAINED, FACTOR, FRAME_MS) == (56, 3, True)
    assert chunking.resolve_context(None, TRAINED, FACTOR, FRAME_MS, default="largest") == (56, 13, True)
    assert chunking.resolve_context(160, TRAINED, FACTOR, FRAME_MS) == (56, 1, False)
    with pytest.raises(UnsupportedLatency, match=r"choose one of \[80, 160, 320, 560, 1120\]"):
        chunking.resolve_context(240, TRAINED, FACTOR, FRAME_MS)  # r = 2: its 3-frame chunk does not divide 56


def test_samples_for_mel_is_the_least_inverse_of_streamed_mel():
    for n_mel in range(0, 200):
        need = chunking.samples_for_mel(n_mel, HOP, N_FFT)
        assert chunking.streamed_mel(need, HOP, N_FFT) >= n_mel
        assert n_mel == 0 or chunking.streamed_mel(need - 1, HOP, N_FFT) < n_mel
    assert chunking.streamed_mel(16000, HOP, N_FFT) == chunking.feature_frames(16000, HOP) - 1  # the last
    assert chunking.streamed_mel(16256, HOP, N_FFT) == chunking.feature_frames(16256, HOP)  # window's half


@pytest.mark.parametrize("right", [0, 1, 3, 6, 13])
def test_chunks_and_mel_frames_are_inverse(right):
    for n in range(0, 12):
        mel = chunking.mel_for_chunks(n, right, FACTOR)
        assert chunking.whole_chunks(mel, right, FACTOR) == n
        assert n == 0 or chunking.whole_chunks(mel - 1, right, FACTOR) == n - 1
    assert chunking.first_chunk_samples(right, FACTOR, HOP, N_FFT) == chunking.samples_for_mel(
        chunking.mel_for_chunks(1, right, FACTOR), HOP, N_FFT)


@pytest.mark.parametrize("right", [0, 1, 3, 6, 13])
def test_an_ended_utterance_streams_exactly_its_offline_frames(right):
    """Whole chunks, then the frames the padded last step owes, add up to the offline encoder length; the
    step count is the whole chunks plus one padded step only when frames are owed."""
    for n_mel in range(1, 400, 7):
        whole = chunking.whole_chunks(n_mel, right, FACTOR)
        done = chunking.enc_frames(whole, right)
        owed = chunking.final_valid_enc(n_mel, done, right, STAGES)
        assert min(done, chunking.subsampled_len(n_mel, STAGES)) + owed == chunking.subsampled_len(n_mel, STAGES)
        assert chunking.utterance_chunks(n_mel, right, FACTOR, STAGES) == whole + (owed > 0)


def test_an_endpoint_window_is_rounded_up_to_encoder_frames():
    assert chunking.enc_frame_ms(FACTOR, FRAME_MS) == 80
    assert [chunking.enc_frames_in(ms, FACTOR, FRAME_MS) for ms in (0, 1, 80, 81, 800)] == [0, 1, 1, 2, 10]


@pytest.mark.parametrize("chunk_end_s, tick_s", [(0.25, 0.0), (1.337, 0.52), (0.08, 0.08), (5.0, 4.99)])
def test_phase_padding_puts_the_chunk_ends_on_the_step_clock(chunk_end_s, tick_s):
    """Less than one chunk of whole hops; the padded utterance's chunk ends fall within a hop of the clock."""
    period_s = 0.32
    pad = chunking.phase_pad_samples(chunk_end_s, tick_s, period_s, 16000, HOP)
    assert 0 <= pad < period_s * 16000 and pad % HOP == 0
    off_s = (chunk_end_s - pad / 16000 - tick_s) % period_s
    assert min(off_s, period_s - off_s) < HOP / 16000
