"""Relative-position multi-head self-attention with a limited-context mask (spec §3.2–3.4)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# NeMo fills masked scores with a finite value and then zeroes the masked probabilities, so a
# fully masked (padded) query row gives 0 instead of NaN (spec §8.2).
MASK_FILL = -10000.0


def rel_positions(n_keys: int, d_model: int, device: torch.device | str = "cpu") -> Tensor:
    """Sinusoidal table for relative distances n_keys-1 … -(n_keys-1), descending: [2K-1, D] fp32."""
    pos = torch.arange(n_keys - 1, -n_keys, -1, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=device)
                    * -(math.log(10000.0) / d_model))
    pe = torch.zeros(2 * n_keys - 1, d_model, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def context_mask(n_query: int, n_cache: int, left: int, right: int,
                 cache_valid: Tensor, query_valid: Tensor) -> Tensor:
    """True where attention is forbidden: [B, Tq, Tk] with Tk = n_cache + Tq.

    Absolute key index j, query index i = n_cache + q; chunks of (right + 1) frames; a query sees
    its own chunk and left // (right + 1) chunks back (chunked_limited, spec §3.4). The first
    n_cache - cache_valid cache slots are empty; queries/keys past query_valid are padding.
    """
    device = cache_valid.device
    chunk = right + 1
    n_keys = n_cache + n_query
    i = torch.arange(n_cache, n_keys, device=device)
    j = torch.arange(n_keys, device=device)
    diff = i[:, None] // chunk - j[None, :] // chunk
    allowed = (diff >= 0) & (diff <= left // chunk)  # [Tq, Tk]
    key_ok = (j[None] >= n_cache - cache_valid[:, None]) & (j[None] < n_cache + query_valid[:, None])
    query_ok = torch.arange(n_query, device=device)[None] < query_valid[:, None]
    ok = allowed[None] & key_ok[:, None, :] & query_ok[:, :, None]
    return ~ok


class RelPositionAttention(nn.Module):
    """Transformer-XL style attention: scores = (q+u)·k + shift((q+v)·p), then softmax (spec §3.3)."""

    def __init__(self, d_model: int, n_heads: int, bias: bool):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.linear_q = nn.Linear(d_model, d_model, bias=bias)
        self.linear_k = nn.Linear(d_model, d_model, bias=bias)
        self.linear_v = nn.Linear(d_model, d_model, bias=bias)
        self.linear_out = nn.Linear(d_model, d_model, bias=bias)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_head))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_head))

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of x [B, T, D], each [B, T, D]: one matmul when a runtime copy
        has fused the three projections (fuse_qkv), three otherwise (the checkpoint's layout)."""
        fused = getattr(self, "linear_qkv", None)
        if fused is None:
            return self.linear_q(x), self.linear_k(x), self.linear_v(x)
        return fused(x).split(self.n_heads * self.d_head, dim=-1)

    def fuse_qkv(self) -> None:
        """Replace linear_q/k/v by one [3D, D] linear (inference copies only: one weight read and,
        for int8, one activation quantization instead of three)."""
        q, k, v = self.linear_q, self.linear_k, self.linear_v
        fused = nn.Linear(q.in_features, 3 * q.out_features, bias=q.bias is not None,
                          device=q.weight.device, dtype=q.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
            if q.bias is not None:
                fused.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
        self.linear_qkv = fused
        del self.linear_q, self.linear_k, self.linear_v

    def project_positions(self, pos: Tensor, dtype: torch.dtype) -> Tensor:
        """pos [2Tk-1, D] → per-head projections [H, dh, 2Tk-1]; depends only on shapes and weights,
        so a runner can compute it once per latency instead of every step."""
        proj = self.linear_pos(pos.to(dtype)).view(-1, self.n_heads, self.d_head)
        return proj.permute(1, 2, 0).contiguous()

    def forward(self, x: Tensor, kv: Tensor | None, pos_proj: Tensor, mask: Tensor) -> Tensor:
        """x [B, Tq, D] layer-normed queries (also this chunk's keys and values); kv [2, B, H, C+Tq, dh]
        with the projected keys and values of the C earlier frames in [..., :C, :] (None: no cache);
        pos_proj [H, dh, 2Tk-1] from project_positions; mask [B, Tq, Tk] True where forbidden,
        Tk = C + Tq → out [B, Tq, D]. This chunk's keys and values are written into kv[..., C:, :].

        The cache holds K and V already projected: each frame is projected once, when it arrives,
        instead of once per step for all `left` cached frames (the same numbers, spec §3.6). It is
        head-major, so the score and value matmuls read it in place.
        """
        b, tq, _ = x.shape
        h, dh = self.n_heads, self.d_head
        q, k_new, v_new = self.project_qkv(x)
        q = q.reshape(b, tq, h, dh)
        k_new = k_new.reshape(b, tq, h, dh).transpose(1, 2)  # [B, H, Tq, dh]
        v_new = v_new.reshape(b, tq, h, dh).transpose(1, 2)
        if kv is None:
            k, v = k_new, v_new
        else:
            kv[0, :, :, kv.shape[3] - tq:] = k_new
            kv[1, :, :, kv.shape[3] - tq:] = v_new
            k, v = kv[0], kv[1]  # [B, H, Tk, dh]
        tk = k.shape[2]
        p = pos_proj.to(q.dtype)
        q_u = (q + self.pos_bias_u.to(q.dtype)).transpose(1, 2)  # [B, H, Tq, dh]
        q_v = (q + self.pos_bias_v.to(q.dtype)).transpose(1, 2)
        ac = torch.matmul(q_u, k.transpose(-2, -1)).float()  # [B, H, Tq, Tk]
        bd = _rel_shift(torch.matmul(q_v, p).float(), tk)  # [B, H, Tq, Tk]
        scores = (ac + bd) / math.sqrt(dh)
        scores = scores.masked_fill(mask[:, None], MASK_FILL)
        probs = torch.softmax(scores, dim=-1).masked_fill(mask[:, None], 0.0)
        out = torch.matmul(probs.to(v.dtype), v)  # [B, H, Tq, dh]
        return self.linear_out(out.transpose(1, 2).reshape(b, tq, h * dh))


def _rel_shift(x: Tensor, n_keys: int) -> Tensor:
    """Align relative scores [B, H, Tq, 2Tk-1] to keys: out[..., i, j] = x[..., i, Tq-1-i+j].

    Queries are the last Tq of the Tk keys, so column Tq-1-i+j holds distance (Tk-Tq+i) - j.
    """
    b, h, tq, n_pos = x.shape
    x = torch.nn.functional.pad(x, (1, 0)).view(b, h, n_pos + 1, tq)[:, :, 1:].reshape(b, h, tq, n_pos)
    return x[..., :n_keys]
