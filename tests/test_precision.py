"""Precision copies: the auto probe's choice, and the fused-projection copy computing the same encoder."""
import copy

import pytest
import torch

from babelcast.model import precision
from babelcast.model.precision import probe_precision, resolve_precision, runtime_model

from tiny import synth_audio, tiny_model


@pytest.mark.parametrize("flags,expected", [({"avx512f", "avx512_vnni", "avx512_bf16"}, "int8"),
                                            ({"avx512f", "avx512_bf16"}, "bf16"),
                                            ({"avx2", "fma"}, "fp32")])
def test_probe_picks_by_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    probe_precision.cache_clear()
    try:
        choice = probe_precision("cpu")
    finally:
        probe_precision.cache_clear()
    assert choice.precision == expected and choice.reason


def test_resolve_names_and_rejects():
    assert resolve_precision("bf16").precision == "bf16"
    assert resolve_precision("auto").precision in ("fp32", "bf16", "int8")
    with pytest.raises(ValueError, match="unknown precision 'int4'.*auto"):
        resolve_precision("int4")


def test_fused_qkv_is_the_same_encoder():
    net = tiny_model(seed=3).eval()
    fused = copy.deepcopy(net)
    for layer in fused.encoder.layers:
        layer.self_attn.fuse_qkv()
    audio = synth_audio(24000, seed=1)[None]
    lengths = torch.tensor([24000])
    with torch.no_grad():
        want, _ = net.encode(audio, lengths, 8, 1, torch.tensor([0]))
        got, _ = fused.encode(audio, lengths, 8, 1, torch.tensor([0]))
    assert not hasattr(fused.encoder.layers[0].self_attn, "linear_q")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_runtime_copy_leaves_the_original(name):
    net = tiny_model(seed=3).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rt = runtime_model(net, name)
    assert rt is not net and hasattr(net.encoder.layers[0].self_attn, "linear_q")
    assert hasattr(rt.encoder.layers[0].self_attn, "linear_qkv")
    after = net.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    embed = rt.decoder.prediction["embed"].weight
    assert embed is net.decoder.prediction["embed"].weight  # fp32 parts are shared, not copied
    if name == "bf16":
        assert rt.joint.out.weight is net.joint.out.weight


@pytest.mark.parametrize("fused", [False, True])
def test_predictor_step_is_the_lstm(fused):
    """Predictor.step (the LSTM cell equations; with fused=True the one gate linear per layer that a
    runtime copy quantizes) gives nn.LSTM's numbers for one step."""
    net = tiny_model(seed=2).eval()
    p = net.decoder
    if fused:
        p.fuse_gates()
    torch.manual_seed(0)
    st = p.init_state(5)
    st = type(st)(torch.randn_like(st.out), torch.randn_like(st.h), torch.randn_like(st.c))
    labels = torch.randint(0, p.cfg.vocab_size, (5,))
    with torch.no_grad():
        new = p.step(labels, st)
        out, (h, c) = p.prediction["dec_rnn"].lstm(p.prediction["embed"](labels)[:, None], (st.h, st.c))
    tol = dict(rtol=1e-5 if fused else 1e-6, atol=1e-6)  # fused: one matmul sums x and h terms together
    torch.testing.assert_close(new.out, out[:, 0], **tol)
    torch.testing.assert_close((new.h, new.c), (h, c), **tol)
