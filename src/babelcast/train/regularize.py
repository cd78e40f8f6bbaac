"""Training-time dropout for babelcast's inference modules, added from outside with forward hooks.

The model code has no dropout (it is written for inference), so training wraps it: dropout on the
subsampling output (NeMo's dropout_pre_encoder), on every residual branch of a conformer layer
(feed-forwards, attention, conv module: encoder.dropout), between and after the LSTM layers
(decoder.prednet.dropout) and after the joint activation (joint.jointnet.dropout), with the
rates of the model's own NeMo config. Hooks act only in training mode and add no parameters, so
the state dict and inference are unchanged. Not reproduced: NeMo's dropout inside the
feed-forward (after the activation) and on attention probabilities (dropout_att).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch.nn.functional as F
from torch import nn

from ..model.asr import AsrModel


@dataclass(frozen=True)
class DropoutRates:
    pre_encoder: float = 0.1
    encoder: float = 0.1
    predictor: float = 0.2
    joint: float = 0.2

    @classmethod
    def from_nemo(cls, model_section: Mapping[str, Any]) -> "DropoutRates":
        """The rates in a NeMo model config (missing keys: NeMo's 3.5 values)."""
        enc = model_section.get("encoder", {}) or {}
        prednet = (model_section.get("decoder", {}) or {}).get("prednet", {}) or {}
        jointnet = (model_section.get("joint", {}) or {}).get("jointnet", {}) or {}
        return cls(pre_encoder=float(enc.get("dropout_pre_encoder", cls.pre_encoder)),
                   encoder=float(enc.get("dropout", cls.encoder)),
                   predictor=float(prednet.get("dropout", cls.predictor)),
                   joint=float(jointnet.get("dropout", cls.joint)))


def _drop_output(p: float):
    """Forward hook: dropout on a module's tensor output (or the first item of a tuple output)."""
    def hook(module: nn.Module, _inputs, output):
        if not module.training or p <= 0:
            return output
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, True), *output[1:])
        return F.dropout(output, p, True)
    return hook


def add_dropout(model: AsrModel, rates: DropoutRates) -> list:
    """Install the dropout hooks; returns their handles (call .remove() to take them off)."""
    hooks = [(model.encoder.pre_encode, rates.pre_encoder)]
    for layer in model.encoder.layers:
        hooks += [(layer.feed_forward1, rates.encoder), (layer.self_attn, rates.encoder),
                  (layer.conv, rates.encoder), (layer.feed_forward2, rates.encoder)]
    lstm = model.decoder.prediction["dec_rnn"].lstm
    if lstm.num_layers > 1:
        lstm.dropout = rates.predictor  # nn.LSTM applies it between layers in training mode only
    hooks += [(lstm, rates.predictor), (model.joint.joint_net[0], rates.joint)]
    return [module.register_forward_hook(_drop_output(p)) for module, p in hooks]
