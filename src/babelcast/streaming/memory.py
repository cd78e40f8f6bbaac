"""Memory per stream: cache bytes per session, resident weight bytes, and how many sessions fit in RAM.

Measured from real tensors, never from a formula: the encoder and predictor states that
`Encoder.init_state` / `Predictor.init_state` make (as the engine's `CachePool` holds them: encoder
state in the runtime encoder's dtype, predictor state in fp32), and the parameters, buffers and int8
packed weights of the models a process keeps. Only the caches are counted per session; a step's
activations and the host-side feature buffers (a chunk or two per stream) are not.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..model.asr import AsrModel


@dataclass(frozen=True)
class MemoryPlan:
    cache_bytes_per_session: int  # encoder + predictor state of one stream
    encoder_cache_bytes: int
    predictor_cache_bytes: int
    weights_bytes: int  # every distinct tensor of the models kept resident
    ram_bytes: int  # the budget the count is for
    max_sessions: int  # sessions whose caches fit in ram_bytes after the weights

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def state_bytes(state) -> int:
    """Bytes of the tensor fields of a state dataclass (EncoderState, PredictorState)."""
    return sum(t.nbytes for t in (getattr(state, f.name) for f in dataclasses.fields(state)) if isinstance(t, Tensor))


def encoder_cache_bytes(model: AsrModel, left: int) -> int:
    """One stream's encoder state, in the dtype the engine keeps it (the runtime encoder's)."""
    return state_bytes(model.encoder.init_state(1, left, "cpu", model.encoder.dtype))


def predictor_cache_bytes(model: AsrModel) -> int:
    """One stream's prediction-net state (fp32, as the engine keeps it)."""
    return state_bytes(model.decoder.init_state(1, "cpu", torch.float32))


def tensor_bytes(t: Tensor) -> int:
    """Storage bytes of a tensor; a quantized tensor's element size is its integer type's."""
    return t.numel() * t.element_size()


def packed_bytes(module: nn.Module) -> dict[int, int]:
    """Bytes of the int8 weights dynamic quantization packs outside the parameters, by module id;
    unpacked one module at a time (a transient copy of one layer, not of the whole model)."""
    return {id(m): sum(tensor_bytes(t) for t in m._packed_params._weight_bias() if t is not None)
            for m in module.modules() if hasattr(getattr(m, "_packed_params", None), "_weight_bias")}


def weights_bytes(*models: nn.Module) -> int:
    """Bytes of every distinct parameter, buffer and packed weight of these models (a tensor shared
    by two models, e.g. the fp32 parts a runtime copy shares with the loaded model, counts once)."""
    plain: dict[tuple, int] = {}
    packed: dict[int, int] = {}
    for model in models:
        for t in [*model.parameters(), *model.buffers()]:
            plain[(t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())] = tensor_bytes(t)
        packed.update(packed_bytes(model))
    return sum(plain.values()) + sum(packed.values())


def machine_ram_bytes() -> int:
    """Physical RAM of this machine (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def sessions_that_fit(ram_bytes: int, weights: int, per_session: int) -> int:
    """Sessions whose caches fit in ram_bytes once the weights are resident (0 if none)."""
    return max(0, (ram_bytes - weights) // per_session) if per_session > 0 else 0


def memory_plan(runtime: AsrModel, left: int, ram_bytes: int, *resident: nn.Module) -> MemoryPlan:
    """Cache bytes per session of the engine's runtime model, the weights of every model kept
    (runtime plus e.g. the loaded fp32 original), and the sessions that fit in ram_bytes."""
    enc, pred = encoder_cache_bytes(runtime, left), predictor_cache_bytes(runtime)
    weights = weights_bytes(runtime, *resident)
    return MemoryPlan(enc + pred, enc, pred, weights, ram_bytes, sessions_that_fit(ram_bytes, weights, enc + pred))
