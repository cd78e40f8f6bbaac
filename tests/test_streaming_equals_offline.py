"""Streaming == offline on tiny random models: features, encoder frames at every context."""
import pytest
import torch

from babelcast import chunking
from babelcast.model.encoder import OPEN_END

from tiny import synth_audio, tiny_model

CONTEXTS = [(28, 0), (28, 1), (28, 3), (28, 6), (28, 13)]


@pytest.mark.parametrize("n_samples", [160 * 37 + 55, 16000, 16000 * 2 + 333])
@pytest.mark.parametrize("piece", [160, 1234, 10**9])
def test_features_incremental_equal_offline(n_samples, piece):
    feats = tiny_model().features
    audio = synth_audio(n_samples)
    mel, mel_len = feats(audio[None], torch.tensor([n_samples]))
    state, parts = feats.init_state(), []
    for start in range(0, n_samples, piece):
        out, state = feats.step(audio[start:start + piece], state)
        parts.append(out)
    out, state = feats.step(torch.zeros(0), state, final=True)
    parts.append(out)
    streamed = torch.cat(parts, dim=1)
    assert streamed.shape[1] == int(mel_len) == n_samples // 160
    torch.testing.assert_close(streamed, mel[0], rtol=1e-4, atol=1e-4)


def _stream_encoder(net, mel, left, right, chunks_per_step=1):
    """Step the encoder over mel [F, T] the way a session does; returns the valid frames [T', D]."""
    enc = net.encoder
    f = enc.cfg.subsampling_factor
    n = chunking.chunk_mel(right, f) * chunks_per_step
    buf = torch.cat([torch.zeros(chunking.lead_in_mel(f), mel.shape[0]), mel.T])
    total = mel.shape[1]
    state, outs, done = enc.init_state(1, left), [], 0
    while buf.shape[0] >= n:
        step = enc.step(buf[:n][None], state, left, right, torch.tensor([OPEN_END]))
        buf, state = buf[n:], step.state
        outs.append(step.frames[0, : int(step.valid)])
        done += (right + 1) * chunks_per_step
    if chunking.final_valid_enc(total, done, right, enc.cfg.n_subsampling_stages):
        chunk = torch.cat([buf, buf.new_zeros(n - buf.shape[0], buf.shape[1])])
        step = enc.step(chunk[None], state, left, right, torch.tensor([total]))
        outs.append(step.frames[0, : int(step.valid)])
    return torch.cat(outs)


@pytest.mark.parametrize("left,right", CONTEXTS)
@pytest.mark.parametrize("n_mel", [1, 8, 25, 97, 230])
def test_encoder_steps_equal_offline(left, right, n_mel):
    net = tiny_model()
    torch.manual_seed(1)
    mel = torch.randn(net.cfg.encoder.feat_in, n_mel)
    with torch.no_grad():
        offline, enc_len = net.encoder(mel[None], torch.tensor([n_mel]), left, right)
        streamed = _stream_encoder(net, mel, left, right)
    assert streamed.shape[0] == int(enc_len) == chunking.subsampled_len(n_mel, 3)
    torch.testing.assert_close(streamed, offline[0], rtol=1e-4, atol=1e-4)


def test_offline_batch_equals_alone():
    net = tiny_model()
    torch.manual_seed(2)
    lens = [97, 230, 40]
    mels = [torch.randn(40, n) for n in lens]
    batch = torch.zeros(3, 40, max(lens))
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    with torch.no_grad():
        out, out_len = net.encoder(batch, torch.tensor(lens), 28, 3)
        for i, m in enumerate(mels):
            alone, _ = net.encoder(m[None], torch.tensor([lens[i]]), 28, 3)
            torch.testing.assert_close(out[i, : int(out_len[i])], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("left,right", [(28, 0), (28, 3), (28, 13)])
@pytest.mark.parametrize("chunks_per_step", [2, 5])
def test_multi_chunk_steps_equal_offline(left, right, chunks_per_step):
    net = tiny_model()
    torch.manual_seed(3)
    mel = torch.randn(net.cfg.encoder.feat_in, 301)
    with torch.no_grad():
        offline, _ = net.encoder(mel[None], torch.tensor([301]), left, right)
        streamed = _stream_encoder(net, mel, left, right, chunks_per_step)
    torch.testing.assert_close(streamed, offline[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("right", [0, 6])
def test_block_forward_equals_full_forward(right):
    net = tiny_model()
    torch.manual_seed(4)
    lens = [700, 333]
    mel = torch.randn(2, net.cfg.encoder.feat_in, 700)
    with torch.no_grad():
        full, full_len = net.encoder(mel, torch.tensor(lens), 28, right)
        blocks, block_len = net.encoder.forward_blocks(mel, torch.tensor(lens), 28, right, block_mel=200)
    assert full_len.tolist() == block_len.tolist()
    for i, n in enumerate(full_len.tolist()):
        torch.testing.assert_close(blocks[i, :n], full[i, :n], rtol=1e-4, atol=1e-4)
