"""Cache-aware FastConformer encoder: `forward` over whole utterances, `step` over one chunk (spec §3).

Both run the same layers; with the same (left, right) context they give the same frames
(chunked_limited attention makes every frame independent of chunks to its right, spec §3.4).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import chunking
from ..config import EncoderConfig
from .attention import context_mask, rel_positions
from .conformer import ConformerLayer
from .subsampling import CausalSubsampling

OPEN_END = 2**40  # mel length of a stream that has not ended yet


@dataclass
class EncoderState:
    """Streaming state of B streams; every tensor has the stream axis documented."""

    mel_history: Tensor  # [B, H, F] last H = factor+1 mel frames fed (zeros before the stream starts)
    k_cache: Tensor  # [L, B, H, left, dh] projected attention keys of the last `left` frames, head-major
    v_cache: Tensor  # [L, B, H, left, dh] projected attention values of the same frames
    att_cache_len: Tensor  # [B] int64 valid entries at the end of k_cache / v_cache (≤ left)
    conv_cache: Tensor  # [L, B, D, K-1] GLU outputs of the last K-1 frames (depthwise conv history)
    mel_pos: Tensor  # [B] int64 absolute mel index of mel_history[:, 0]

    def index(self, rows: Tensor) -> "EncoderState":
        """The state of a subset of streams (rows [n] long)."""
        return EncoderState(self.mel_history[rows], self.k_cache[:, rows], self.v_cache[:, rows],
                            self.att_cache_len[rows], self.conv_cache[:, rows], self.mel_pos[rows])

    @property
    def left(self) -> int:
        """Left attention context the state was made for (cache frames)."""
        return self.k_cache.shape[3]


@dataclass(frozen=True)
class EncoderStep:
    frames: Tensor  # [B, k*(r+1), D]
    valid: Tensor  # [B] int64 frames that belong to the utterance (all but in a final step)
    state: EncoderState


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.pre_encode = CausalSubsampling(cfg)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_layers))
        self.xscale = math.sqrt(cfg.d_model) if cfg.xscaling else None

    def forward(self, mel: Tensor, mel_len: Tensor, left: int, right: int) -> tuple[Tensor, Tensor]:
        """Offline: mel [B, F, T], mel_len [B] → frames [B, T', D], lengths [B] at context [left, right]."""
        b = mel.shape[0]
        zeros = torch.zeros(b, dtype=torch.long, device=mel.device)
        x = self.pre_encode(mel.transpose(1, 2).to(self.dtype), zeros, mel_len)
        t = x.shape[1]
        enc_len = chunking.subsampled_len(mel_len, self.cfg.n_subsampling_stages)
        mask = context_mask(t, 0, left, right, zeros, enc_len)
        pad = torch.arange(t, device=mel.device)[None] >= enc_len[:, None]
        conv_zero = x.new_zeros(b, self.cfg.d_model, self.cfg.conv_kernel - 1)
        x = self._scale(x)
        for layer, pos in zip(self.layers, self.positions(t, x.device)):
            x, _ = layer(x, pos, mask, pad, None, conv_zero)
        return x, enc_len

    def positions(self, n_keys: int, device: torch.device | str) -> list[Tensor]:
        """Per-layer relative-position projections for n_keys keys (spec §3.2): [H, dh, 2K-1] each."""
        pos = rel_positions(n_keys, self.cfg.d_model, device)
        return [layer.self_attn.project_positions(pos, self.dtype) for layer in self.layers]

    def forward_blocks(self, mel: Tensor, mel_len: Tensor, left: int, right: int, block_mel: int = 2048,
                       on_block: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
        """Offline in blocks of whole chunks through `step`: the same frames as `forward`, with memory
        linear in the length (the full forward's attention scores are quadratic). on_block: called after
        each block with the mel frames of `mel` encoded so far (a host int: no device sync, so on a GPU
        it counts blocks queued)."""
        f = self.cfg.subsampling_factor
        b, _, t = mel.shape
        per_block = max(1, block_mel // chunking.chunk_mel(right, f)) * chunking.chunk_mel(right, f)
        x = torch.cat([mel.new_zeros(b, mel.shape[1], chunking.lead_in_mel(f)), mel], dim=2).transpose(1, 2)
        x = torch.nn.functional.pad(x, (0, 0, 0, -x.shape[1] % per_block))  # [B, n*per_block, F]
        state = self.init_state(b, left, mel.device, self.dtype)
        enc_len = chunking.subsampled_len(mel_len, self.cfg.n_subsampling_stages)
        outs = []
        for start in range(0, x.shape[1], per_block):
            step = self.step(x[:, start:start + per_block], state, left, right, mel_len)
            state = step.state
            outs.append(step.frames)
            if on_block is not None:
                on_block(min(t, start + per_block - chunking.lead_in_mel(f)))
        frames = torch.cat(outs, dim=1)[:, : chunking.subsampled_len(t, self.cfg.n_subsampling_stages)]
        return frames, enc_len

    def init_state(self, batch: int, left: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> EncoderState:
        cfg, f = self.cfg, self.cfg.subsampling_factor
        return EncoderState(
            mel_history=torch.zeros(batch, chunking.history_mel(f), cfg.feat_in, device=device),
            k_cache=torch.zeros(cfg.n_layers, batch, cfg.n_heads, left, cfg.d_head, device=device, dtype=dtype),
            v_cache=torch.zeros(cfg.n_layers, batch, cfg.n_heads, left, cfg.d_head, device=device, dtype=dtype),
            att_cache_len=torch.zeros(batch, dtype=torch.long, device=device),
            conv_cache=torch.zeros(cfg.n_layers, batch, cfg.d_model, cfg.conv_kernel - 1, device=device, dtype=dtype),
            mel_pos=torch.full((batch,), chunking.first_mel_pos(f), dtype=torch.long, device=device),
        )

    def step(self, mel_chunk: Tensor, state: EncoderState, left: int, right: int,
             mel_end: Tensor | None = None, pos_proj: list[Tensor] | None = None) -> EncoderStep:
        """k chunks of B streams: mel_chunk [B, k*factor*(r+1), F] new frames (zeros past the end);
        mel_end [B] total mel frames of streams that end in this step (None / OPEN_END if open).

        k > 1 runs several chunks in one call with the same result as k calls (the mask keeps the
        chunk grid), which serves long offline files and streams catching up. pos_proj: the
        result of positions(left + k*(r+1)), precomputed by a runner (computed here when None).
        """
        cfg, f = self.cfg, self.cfg.subsampling_factor
        b, n_new, _ = mel_chunk.shape
        per_chunk = chunking.chunk_mel(right, f)
        if n_new % per_chunk or not n_new:
            raise ValueError(f"chunk has {n_new} mel frames; context r={right} needs a multiple of {per_chunk}")
        if state.left != left:
            raise ValueError(f"state was made for left context {state.left}, not {left}")
        if mel_end is None:
            mel_end = torch.full((b,), OPEN_END, dtype=torch.long, device=mel_chunk.device)
        n_out = n_new // f
        mel_in = torch.cat([state.mel_history, mel_chunk.float()], dim=1)  # [B, H + N, F]
        x = self.pre_encode(mel_in.to(self.dtype), state.mel_pos, mel_end)
        x = x[:, chunking.drop_enc(f):]  # [B, n_out, D]: the first frames only see history
        enc_done = torch.div(state.mel_pos - chunking.first_mel_pos(f), f, rounding_mode="floor")
        total = chunking.subsampled_len(mel_end, cfg.n_subsampling_stages)
        valid = (total - enc_done).clamp(0, n_out)
        mask = context_mask(n_out, left, left, right, state.att_cache_len, valid)
        pad = torch.arange(n_out, device=x.device)[None] >= valid[:, None]
        x = self._scale(x)
        pos_proj = pos_proj if pos_proj is not None else self.positions(left + n_out, x.device)
        kv = self._kv_buffer(state, n_out)  # [L, 2, B, H, left + n_out, dh]
        conv_cache = []
        for i, layer in enumerate(self.layers):
            x, conv = layer(x, pos_proj[i], mask, pad, kv[i], state.conv_cache[i])
            conv_cache.append(conv)
        new_state = EncoderState(
            mel_history=mel_in[:, -chunking.history_mel(f):],
            k_cache=kv[:, 0, :, :, n_out:],  # the newest `left` frames, a view: no copy (spec §3.6)
            v_cache=kv[:, 1, :, :, n_out:],
            att_cache_len=(state.att_cache_len + valid).clamp(max=left),
            conv_cache=torch.stack(conv_cache).to(state.conv_cache.dtype),
            mel_pos=state.mel_pos + n_new,
        )
        return EncoderStep(x, valid, new_state)

    @staticmethod
    def _kv_buffer(state: EncoderState, n_new: int) -> Tensor:
        """One buffer [L, 2, B, H, left + n_new, dh] for every layer's keys and values: the cached frames
        copied in once, the new ones written by the layers; the next state is a view of its tail."""
        n_layers, b, h, left, dh = state.k_cache.shape
        kv = state.k_cache.new_empty(n_layers, 2, b, h, left + n_new, dh)
        kv[:, 0, :, :, :left] = state.k_cache
        kv[:, 1, :, :, :left] = state.v_cache
        return kv

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (read off a LayerNorm, which int8 dynamic quantization leaves as is)."""
        return self.layers[0].norm_out.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].norm_out.weight.device

    def _scale(self, x: Tensor) -> Tensor:
        return x * self.xscale if self.xscale else x
