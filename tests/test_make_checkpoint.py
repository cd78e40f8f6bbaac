"""bench/make_checkpoint.py's calibrated joint on a small model (3.5's layout, 128 wide, 2,100 outputs): about
one token per 3.5 encoder frames, never more than one per frame, also on audio it was not calibrated on."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from babelcast.config import parse_model_config
from babelcast.model.asr import AsrModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import make_checkpoint as mc  # noqa: E402

SMALL = {"encoder": {"n_layers": 2, "d_model": 128, "n_heads": 2, "subsampling_conv_channels": 32},
         "decoder": {"vocab_size": 2100, "prednet": {"pred_hidden": 128}},
         "joint": {"num_classes": 2100, "jointnet": {"joint_hidden": 128}},
         "model_defaults": {"enc_hidden": 128, "pred_hidden": 128, "joint_hidden": 128}}


def test_calibrated_joint_emits_one_token_per_few_frames():
    torch.manual_seed(0)
    net = AsrModel(parse_model_config(mc._merge(mc.model_section(), SMALL))).eval()
    rate, burst = mc.calibrate(net, seconds=4.0)
    assert 3.0 <= rate <= 4.0 and burst == 1
    rate, burst = mc.emission(net, mc.calibration_frames(net, seconds=8.0, seed=5))
    assert 2.5 <= rate <= 5.0 and burst == 1
