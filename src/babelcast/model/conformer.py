"""One FastConformer layer: ½FF → rel-pos MHA → causal conv module → ½FF → LayerNorm (spec §3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EncoderConfig
from .attention import RelPositionAttention


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(F.silu(self.linear1(x)))


class ConvModule(nn.Module):
    """Pointwise → GLU → causal depthwise (kernel K, K-1 frames of cache) → norm → SiLU → pointwise."""

    def __init__(self, d_model: int, kernel: int, norm: str, bias: bool):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1, bias=bias)
        self.depthwise_conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, bias=bias)
        # NeMo names the norm `batch_norm` whichever type it is (spec §1.3).
        self.batch_norm = nn.LayerNorm(d_model) if norm == "layer_norm" else nn.BatchNorm1d(d_model)
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1, bias=bias)

    def forward(self, x: Tensor, pad: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, D], pad [B, T] True on padding, cache [B, D, K-1] (zeros at the start, which is
        the offline causal left padding) → (out [B, T, D], new cache [B, D, K-1])."""
        x = F.glu(pointwise(self.pointwise_conv1, x), dim=-1)  # [B, T, D]
        x = x.masked_fill(pad[:, :, None], 0.0)  # padded frames must not leak into the conv (spec §8.6)
        x = torch.cat([cache.to(x.dtype), x.transpose(1, 2)], dim=2)  # [B, D, K-1+T]
        new_cache = x[:, :, x.shape[2] - cache.shape[2]:]
        x = self.depthwise_conv(x)  # [B, D, T]
        if isinstance(self.batch_norm, nn.LayerNorm):
            x = self.batch_norm(x.transpose(1, 2))
        else:
            x = self.batch_norm(x).transpose(1, 2)
        return pointwise(self.pointwise_conv2, F.silu(x)), new_cache


def pointwise(layer: nn.Module, x: Tensor) -> Tensor:
    """A kernel-1 Conv1d applied as a matmul over [B, T, C] (no transposes, the fast GEMM path);
    runtime copies may have swapped the conv for a (quantized) Linear."""
    if isinstance(layer, nn.Conv1d):
        return F.linear(x, layer.weight[..., 0], layer.bias)
    return layer(x)


class ConformerLayer(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        d, bias = cfg.d_model, cfg.use_bias
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = FeedForward(d, d * cfg.ff_expansion, bias)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = RelPositionAttention(d, cfg.n_heads, bias)
        self.norm_conv = nn.LayerNorm(d)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.conv_norm, bias)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = FeedForward(d, d * cfg.ff_expansion, bias)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: Tensor, pos_proj: Tensor, mask: Tensor, pad: Tensor, kv: Tensor | None,
                conv_cache: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, T, D]; pos_proj from self_attn.project_positions; kv [2, B, H, C+T, dh] projected keys
        and values, earlier frames first, this chunk's written in by the attention (None: no cache);
        conv_cache [B, D, K-1] → (x, new conv cache)."""
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), kv, pos_proj, mask)
        conv_out, conv_cache = self.conv(self.norm_conv(x), pad, conv_cache)
        x = x + conv_out
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x), conv_cache
