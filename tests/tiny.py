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
    "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}},
}


def tiny_config(**encoder_overrides) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["encoder"].update(encoder_overrides)
    return cfg


def tiny_model(seed: int = 0, **encoder_overrides) -> AsrModel:
    """Random weights, with the joint scaled so argmaxes are decisive."""
    torch.manual_seed(seed)
    net = AsrModel(parse_model_config(tiny_config(**encoder_overrides))).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
        net.joint.joint_net[2].weight.mul_(8)
        net.joint.joint_net[2].bias[-1] += 6.0  # blank often wins, like a trained model
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
    return net


def synth_audio(n_samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_samples) / 16000
    tone = torch.sin(2 * torch.pi * (200 + 300 * t) * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return (0.3 * tone + 0.05 * torch.randn(n_samples, generator=g)).float()
