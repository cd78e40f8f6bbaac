"""Inference copies of a model in a chosen precision, and the one-time probe behind `auto` (spec §8.9).

Only the encoder changes precision: features, prompt, prediction net and joint stay fp32 (the prompt's
language part is too small a fraction of its output for bf16).
"""
from __future__ import annotations

import copy
import ctypes
import functools
import gc
import warnings
from dataclasses import dataclass

import torch

from ..config import PRECISIONS
from .asr import AsrModel

AUTO_PRECISION = "auto"


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # fp32 | bf16 | int8
    reason: str  # why, for logs and benchmark output


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def probe_precision(device_type: str = "cpu") -> PrecisionChoice:
    """The fastest precision for this device, decided once per process.

    CPU: int8 dynamic quantization where the CPU has int8 dot products (VNNI, AMX-INT8), whose
    kernels torch actually runs (checked with one tiny quantized matmul); else bf16 where the CPU
    has native bf16 dot products (avx512_bf16, AMX-BF16); else fp32. CUDA: bf16 where supported.
    """
    if device_type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return PrecisionChoice("bf16" if ok else "fp32", "CUDA bf16" if ok else "CUDA without bf16")
    flags = cpu_flags()
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    if vnni and _int8_runs():
        return PrecisionChoice("int8", f"int8 dot products ({', '.join(vnni)})")
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if bf16:
        return PrecisionChoice("bf16", f"native bf16 dot products ({', '.join(bf16)})")
    return PrecisionChoice("fp32", "no int8 or bf16 dot products on this CPU")


def _int8_runs() -> bool:
    """True when torch's dynamic int8 linear works here (a quantization engine is built in)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(8, 8)),
                                                       {torch.nn.Linear}, dtype=torch.qint8)
            q(torch.zeros(1, 8))
        return True
    except (RuntimeError, AssertionError, NotImplementedError):
        return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> PrecisionChoice:
    """A named precision as is, or `auto` resolved by the probe; an unknown name is a ValueError."""
    if precision == AUTO_PRECISION:
        return probe_precision(torch.device(device).type)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join((AUTO_PRECISION,) + PRECISIONS)}")
    return PrecisionChoice(precision, "requested")


def runtime_model(model: AsrModel, precision: str) -> AsrModel:
    """The engine's copy: encoder in the chosen precision; features and prompt in fp32 (shared with
    `model`, not copied: they are read-only at inference); int8 also quantizes the prediction net's step
    and the joint, which greedy decoding runs once per symbol on a handful of rows: their fp32 weight
    reads (33 MB for a 13k vocabulary) cost more than the arithmetic (bench/results/step-*)."""
    precision = resolve_precision(precision, model.encoder.device).precision
    if precision == "fp32":
        return model.eval()
    shared = [t for name, t in _tensors(model) if not name.startswith("encoder.")]
    if precision == "int8":  # the linears are replaced by packed int8 ones: never copy their fp32 weights
        shared += [t for m in (model.encoder, model.joint) for lin in m.modules() if isinstance(lin, torch.nn.Linear)
                   for t in lin.parameters()]
    rt = copy.deepcopy(model, {id(t): t for t in shared}).eval()
    for layer in rt.encoder.layers:
        layer.self_attn.fuse_qkv()
    if precision == "bf16":
        rt.encoder.to(torch.bfloat16)
    else:
        _quantize_int8(rt.encoder)
        _quantize_int8_decoding(rt)
    release_freed_memory()
    return rt


def _tensors(model: torch.nn.Module):
    return [*model.named_parameters(), *model.named_buffers()]


def _quantize_int8(encoder: torch.nn.Module) -> None:
    """Dynamic int8 for every linear of the encoder, kernel-1 convs included (they are matmuls), in place."""
    for layer in encoder.layers:
        for name in ("pointwise_conv1", "pointwise_conv2"):
            conv = getattr(layer.conv, name)
            linear = torch.nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
            linear.weight.data = conv.weight.data[..., 0]
            if conv.bias is not None:
                linear.bias.data = conv.bias.data
            setattr(layer.conv, name, linear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao eager quantization is deprecated but still the CPU int8 path
        torch.ao.quantization.quantize_dynamic(encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _quantize_int8_decoding(rt: AsrModel) -> None:
    """Dynamic int8 for the prediction net's step (fused gate linears) and every linear of the joint."""
    rt.decoder.fuse_gates()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module in (rt.decoder.fused_gates, rt.joint):
            torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def release_freed_memory() -> None:
    """Hand memory freed by a copy's conversion back to the OS (glibc keeps large freed arenas: the int8
    copy's fp32 leftovers held ~4.7 GB of RSS for the full-size model, bench/results/memory-*.md)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
