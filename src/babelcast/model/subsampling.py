"""Causal depthwise-striding subsampling, ×factor in time (spec §3.1).

One code path serves offline and streaming: the input may start before the utterance (stream
history or virtual lead-in frames, `start_mel` < 0) and may run past its end (`end_mel`); at every
stage the frames outside [0, length) are zeroed, which is exactly the offline causal zero padding and
NeMo's MaskedConvSequential masking (spec §8.5).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..chunking import stage_len
from ..config import EncoderConfig


class CausalSubsampling(nn.Module):
    """Conv2d(1→C, 3, s2) ReLU, then (depthwise 3×3 s2, pointwise 1×1, ReLU) per further stage, Linear."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        ch = cfg.subsampling_channels
        layers: list[nn.Module] = [nn.Conv2d(1, ch, 3, stride=2), nn.ReLU()]
        for _ in range(cfg.n_subsampling_stages - 1):
            layers += [nn.Conv2d(ch, ch, 3, stride=2, groups=ch), nn.Conv2d(ch, ch, 1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)  # indices match NeMo's pre_encode.conv.N keys
        self.out = nn.Linear(ch * cfg.subsampled_feat, cfg.d_model)

    def forward(self, mel: Tensor, start_mel: Tensor, end_mel: Tensor) -> Tensor:
        """mel [B, T, F]; start_mel [B] absolute index of mel[:, 0]; end_mel [B] utterance length
        in mel frames (a huge value while the stream is open) → [B, T', d_model]."""
        x = mel[:, None]  # [B, 1, T, F]
        start, end = start_mel, end_mel
        for layer in self.conv:
            if isinstance(layer, nn.ReLU):
                x = layer(x)
                continue
            x = x * _inside(x.shape[2], start, end, x.dtype)
            if layer.stride[0] == 2:
                # Causal padding: 2 frames left, 1 right, on time and frequency (spec §3.1).
                x = layer(F.pad(x, (2, 1, 2, 1)))
                start, end = torch.div(start, 2, rounding_mode="floor"), stage_len(end)
            else:
                x = layer(x)
        x = x * _inside(x.shape[2], start, end, x.dtype)
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))  # feature index = c * F' + f


def _inside(n: int, start: Tensor, end: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, 1, n, 1] mask of frames whose absolute position start + i lies in [0, end)."""
    pos = start[:, None] + torch.arange(n, device=start.device)[None]
    return ((pos >= 0) & (pos < end[:, None])).to(dtype)[:, None, :, None]
