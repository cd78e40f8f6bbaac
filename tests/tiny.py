"""Tiny random models in NeMo's config format, for unit tests that need no NeMo."""
from __future__ import annotations

import copy

import torch

from babelcast.config import parse_model_config
from babelcast.model.asr import AsrModel

PROMPT_DICT = {"en-US": 0, "en": 0, "de-DE": 9, "de": 9, "es-US": 3, "es": 3, "auto": 101, "no": 27}

BASE = {
    "sample_rate": 16000,
    "model_defaults": {"initialize_prompt_feature": True, "num_prompts": 128, "prompt_dictionary": PROMPT_DICT},
    "preprocessor": {"sample_rate": 16000, "normalize": "NA", "window_size": 0.025, "window_stride": 0.01,
                     "window": "hann", "features": 40, "n_fft": 512, "frame_splicing": 1, "dither": 1e-5},
    "encoder": {"feat_in": 40, "n_layers": 2, "d_model": 32, "use_bias": False, "subsampling": "dw_striding",
                "subsampling_factor": 8, "subsampling_conv_channels": 8, "causal_downsampling": True,
                "ff_expansion_factor": 2, "self_attention_model": "rel_pos", "n_heads": 4,
                "att_context_size": [[28, 3], [28, 0], [28, 6], [28, 13]], "att_context_style": "chunked_limited",
                "xscaling": False, "untie_biases": True, "conv_kernel_size": 9, "conv_norm_type": "layer_norm",
                "conv_context_size": "causal"},
    "decoder": {"vocab_size": 40, "prednet": {"pred_hidden": 16, "pred_rnn_layers": 2}},
    "joint": {"num_classes": 40, "jointnet": {"joint_hidden": 16, "activation": "relu"}},
    "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 3}},
}


def tiny_config(hybrid: bool = False, **encoder_overrides) -> dict:
    """BASE with encoder overrides; hybrid adds NeMo's aux_ctc section (a CTC head beside the transducer)."""
    cfg = copy.deepcopy(BASE)
    cfg["encoder"].update(encoder_overrides)
    if hybrid:
        cfg["aux_ctc"] = {"ctc_loss_weight": 0.3}
    return cfg


def tiny_model(seed: int = 0, hybrid: bool = False, **encoder_overrides) -> AsrModel:
    """Random weights, with the joint (and a hybrid's CTC head) scaled so argmaxes are decisive; the
    transducer's weights do not depend on `hybrid` (the CTC head is made and drawn last)."""
    torch.manual_seed(seed)
    net = AsrModel(parse_model_config(tiny_config(hybrid, **encoder_overrides))).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "pos_bias" in name or (p.ndim == 1 and "norm" not in name):
                p.normal_(0, 0.1)  # biases and rel-pos biases are zero at init; make them matter
        out = net.joint.out
        out.weight.mul_(10)  # decisive argmaxes: top-2 margins far above fp32 noise
        out.bias.zero_()
        net.joint.pred.weight.mul_(0.5)  # keep the prediction net from dominating the random joint
        _calibrate_blank(net)
        if hybrid:
            _calibrate_ctc(net)
    return net


def _calibrate_blank(net: AsrModel, blank_share: float = 0.7) -> None:
    """Set the blank bias so blank wins about `blank_share` of first-symbol decisions (≈1 token / 3 frames)."""
    audio = synth_audio(32000, seed=123)[None]
    frames, _ = net.encode(audio, torch.tensor([32000]), 28, 3, torch.tensor([101]))
    # Center the joint's encoder projection on this audio, so the frame-to-frame variation (not the
    # constant part of random features) decides the argmax.
    enc = net.joint.enc
    enc.bias.copy_(-(enc.weight @ frames[0].mean(0)))
    enc.weight.mul_(3.0)
    enc.bias.mul_(3.0)
    g = net.decoder.init_state(1)
    logits = net.joint.logits(net.joint.enc(frames[0]), net.joint.pred(g.out))  # [T, V+1]
    margin = logits[:, :-1].max(dim=-1).values - logits[:, -1]
    net.joint.out.bias[-1] = torch.quantile(margin, blank_share)


def _calibrate_ctc(net: AsrModel, blank_share: float = 0.6) -> None:
    """Center and scale the CTC head on the calibration audio's frames (decisive argmaxes), then set its
    blank bias so blank wins about `blank_share` of frames: labels then run over several frames, and some
    runs cross a chunk boundary (the repeats streaming must merge across steps)."""
    audio = synth_audio(32000, seed=123)[None]
    frames, _ = net.encode(audio, torch.tensor([32000]), 28, 3, torch.tensor([101]))
    conv = net.ctc_decoder.decoder_layers[0]
    conv.bias.copy_(-(conv.weight[..., 0] @ frames[0].mean(0)))
    conv.weight.mul_(10.0)
    conv.bias.mul_(10.0)
    logits = net.ctc_decoder(frames)[0]  # [T, V+1], blank last
    margin = logits[:, :-1].max(dim=-1).values - logits[:, -1]
    conv.bias[-1] += torch.quantile(margin, blank_share)


def synth_audio(n_samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples) / 16000
    tone = torch.sin(2 * torch.pi * (200 + 300 * t) * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return (0.3 * tone + 0.05 * torch.randn(n_samples, generator=g)).float()
