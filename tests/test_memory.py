"""Memory per stream (streaming/memory.py) on the tiny model, and /v1/info's memory field."""
from __future__ import annotations

import httpx
import pytest

from babelcast.model.precision import runtime_model
from babelcast.streaming.cache_pool import CachePool
from babelcast.streaming.memory import (encoder_cache_bytes, memory_plan, predictor_cache_bytes,
                                        sessions_that_fit, state_bytes, weights_bytes)

from server_util import load_tiny, start_server


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return load_tiny(tmp_path_factory)


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_cache_bytes_are_the_pools_rows(rec, precision):
    model = runtime_model(rec.model, precision)
    left = model.cfg.encoder.left_context_frames
    pool = CachePool(model, 3, left, "cpu", model.encoder.dtype)
    assert encoder_cache_bytes(model, left) * 3 == state_bytes(pool.encoder)
    assert predictor_cache_bytes(model) * 3 == state_bytes(pool.predictor)
    if precision == "bf16":  # the attention and conv caches halve; positions and mel history do not
        assert encoder_cache_bytes(model, left) < encoder_cache_bytes(rec.model, left)


def test_weights_bytes_count_each_tensor_once(rec):
    fp32 = nbytes(*rec.model.parameters(), *rec.model.buffers())
    assert weights_bytes(rec.model) == fp32
    assert weights_bytes(rec.model, runtime_model(rec.model, "fp32")) == fp32  # the same model, not a copy
    int8 = runtime_model(rec.model, "int8")
    assert weights_bytes(int8) < fp32  # int8 linears: one byte per weight
    both = weights_bytes(int8, rec.model)  # the parts the copy shares with the original count once
    own = weights_bytes(int8.encoder, int8.joint, int8.decoder.fused_gates)  # what int8 quantizes
    assert fp32 < both <= weights_bytes(int8) + fp32 and both - fp32 <= own


def test_sessions_that_fit():
    assert sessions_that_fit(1000, 400, 100) == 6
    assert sessions_that_fit(1000, 999, 100) == 0
    assert sessions_that_fit(100, 400, 100) == 0


def test_memory_plan(rec):
    left = rec.model.cfg.encoder.left_context_frames
    plan = memory_plan(rec.model, left, 10**9)
    assert plan.cache_bytes_per_session == plan.encoder_cache_bytes + plan.predictor_cache_bytes
    assert plan.max_sessions == (10**9 - plan.weights_bytes) // plan.cache_bytes_per_session


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_info_reports_memory(rec, precision):
    server = start_server(rec, precision=precision)
    try:
        body = httpx.get(f"{server.http_url}/v1/info").json()
        runtime = server.hub.engine.model
    finally:
        server.__exit__(None, None, None)
    mem = body["memory"]
    left = rec.model.cfg.encoder.left_context_frames
    assert mem["cache_bytes_per_session"] == encoder_cache_bytes(runtime, left) + predictor_cache_bytes(runtime)
    assert mem["weights_bytes"] == weights_bytes(runtime, rec.model)  # the loaded model and the engine's copy
    if precision == "fp32":  # the engine runs the loaded model itself
        assert mem["weights_bytes"] == weights_bytes(rec.model)
    assert mem["max_sessions"] == sessions_that_fit(mem["ram_bytes"], mem["weights_bytes"],
                                                    mem["cache_bytes_per_session"])
    assert mem["ram_bytes"] > 0 and body["precision"] == precision
