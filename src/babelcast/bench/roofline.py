"""What one batched step costs against what this CPU can do: FLOPs counted, a matmul probe's peak.

- `step_flops`: the floating-point operations of one engine step (encoder step + prompt + greedy), counted
  by torch's FlopCounterMode on the fp32 model (matmuls, convolutions), so the count is the mathematics,
  whatever precision then runs it;
- `matmul_peak`: achieved GOP/s of a [rows, 1024] x [1024, 4096] linear in a precision, weights streamed
  from memory as in a step (a fresh weight per call, larger than the caches), at several row counts.
"""
from __future__ import annotations

import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from babelcast.decoding.heads import DecodeState
from babelcast.model.asr import AsrModel
from babelcast.streaming.engine import decode_chunks

PROBE_IN, PROBE_OUT = 1024, 4096  # the shape of a FastConformer-large feed-forward linear


@torch.no_grad()
def step_flops(model: AsrModel, mel: torch.Tensor, left: int, right: int, prompts: torch.Tensor | None) -> int:
    """FLOPs of one decode_chunks call on fp32 `model` for mel [B, n, F] from a fresh state (the
    relative-position projections are made once per latency by the engine, so they are not counted)."""
    enc = model.encoder
    state = enc.init_state(mel.shape[0], left, enc.device, enc.dtype)
    pred = DecodeState.start(model, mel.shape[0])
    pos = enc.positions(left + mel.shape[1] // enc.cfg.subsampling_factor, enc.device)
    counter = FlopCounterMode(display=False)
    with counter:
        decode_chunks(model, mel, state, pred, left, right, prompts, None, pos)
    return int(counter.get_total_flops())


def _linears(precision: str, n_weights: int) -> list[torch.nn.Module]:
    """n_weights distinct linears of the probe shape in a precision (distinct so weights are re-read)."""
    layers = [torch.nn.Linear(PROBE_IN, PROBE_OUT) for _ in range(n_weights)]
    if precision == "bf16":
        return [layer.to(torch.bfloat16) for layer in layers]
    if precision == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear},
                                                           dtype=torch.qint8) for layer in layers]
    return layers


@torch.no_grad()
def matmul_peak(precision: str, rows: tuple[int, ...] = (1, 8, 64, 256), seconds: float = 0.5,
                n_weights: int = 16) -> dict[int, float]:
    """GOP/s of the probe linear per row count (2·rows·1024·4096 ops per call)."""
    layers = _linears(precision, n_weights)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out = {}
    for r in rows:
        x = torch.randn(r, PROBE_IN, dtype=dtype)
        for layer in layers:
            layer(x)
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for layer in layers:
                layer(x)
            calls += len(layers)
        out[r] = round(2 * r * PROBE_IN * PROBE_OUT * calls / (time.perf_counter() - t0) / 1e9, 1)
    return out
