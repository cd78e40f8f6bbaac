"""RNNT prediction network and joint (spec §5.1–5.2), plus the CTC head of hybrid models (§5.4)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TransducerConfig

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


@dataclass
class PredictorState:
    """Prediction-net state of B streams after their last emitted label."""

    out: Tensor  # [B, H] LSTM output for the last label (blank at the start)
    h: Tensor  # [layers, B, H]
    c: Tensor  # [layers, B, H]

    def index(self, rows: Tensor) -> "PredictorState":
        return PredictorState(self.out[rows], self.h[:, rows], self.c[:, rows])


class _LSTM(nn.Module):
    """Holds the LSTM under NeMo's key names (decoder.prediction.dec_rnn.lstm.*)."""

    def __init__(self, hidden: int, layers: int):
        super().__init__()
        self.lstm = nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True)


class Predictor(nn.Module):
    """Embedding (blank = zero padding row) + LSTM; the state only advances on emitted labels."""

    def __init__(self, cfg: TransducerConfig):
        super().__init__()
        self.cfg = cfg
        self.prediction = nn.ModuleDict({  # NeMo's decoder.prediction.* key names
            "embed": nn.Embedding(cfg.vocab_size + 1, cfg.pred_hidden, padding_idx=cfg.blank_id),
            "dec_rnn": _LSTM(cfg.pred_hidden, cfg.pred_layers),
        })
        # Runtime copies only (model/precision.py): per layer one linear [x; h] → gates, made from the
        # LSTM's weights (then quantized); None: the LSTM's own weights, as NeMo computes them.
        self.fused_gates: nn.ModuleList | None = None

    def init_state(self, batch: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> PredictorState:
        """State after the start symbol: embed(blank) = 0 with a zero LSTM state (spec §8.11)."""
        z = torch.zeros(self.cfg.pred_layers, batch, self.cfg.pred_hidden, device=device, dtype=dtype)
        blank = torch.full((batch,), self.cfg.blank_id, dtype=torch.long, device=device)
        return self.step(blank, PredictorState(z[0], z, z))

    def step(self, labels: Tensor, state: PredictorState) -> PredictorState:
        """Advance every row by one label: labels [B] → new state.

        One time step of the LSTM written as its cell equations: the same numbers as nn.LSTM, without
        its per-call sequence setup, which dominates at one step of a few rows (decoding calls this
        once per emitted symbol).
        """
        lstm = self.prediction["dec_rnn"].lstm
        x = self.prediction["embed"](labels).to(state.h.dtype)  # [B, H]
        hs, cs = [], []
        for layer in range(lstm.num_layers):
            if self.fused_gates is not None:
                gates = self.fused_gates[layer](torch.cat([x, state.h[layer]], dim=-1))
            else:
                gates = F.linear(x, getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"bias_ih_l{layer}")) \
                    + F.linear(state.h[layer], getattr(lstm, f"weight_hh_l{layer}"), getattr(lstm, f"bias_hh_l{layer}"))
            i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order
            c = torch.sigmoid(f) * state.c[layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(c)
            hs.append(x)
            cs.append(c)
        return PredictorState(x, torch.stack(hs), torch.stack(cs))

    def fuse_gates(self) -> None:
        """One linear per layer for step(): W = [W_ih W_hh], b = b_ih + b_hh (the same function; a
        runtime copy then quantizes it; the LSTM stays for training's forward)."""
        lstm, layers = self.prediction["dec_rnn"].lstm, []
        for layer in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            fused = nn.Linear(w_ih.shape[1] + w_hh.shape[1], w_ih.shape[0], device=w_ih.device, dtype=w_ih.dtype)
            fused.weight.data = torch.cat([w_ih, w_hh], dim=1).detach()
            fused.bias.data = (getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")).detach()
            layers.append(fused)
        self.fused_gates = nn.ModuleList(layers)

    def forward(self, targets: Tensor) -> Tensor:
        """Training: targets [B, U] → [B, U+1, H] with a zero start-of-sequence input (spec §5.1)."""
        x = self.prediction["embed"](targets)
        x = torch.cat([x.new_zeros(x.shape[0], 1, x.shape[2]), x], dim=1)
        out, _ = self.prediction["dec_rnn"].lstm(x)
        return out


class Joint(nn.Module):
    """logits = out(act(enc(f) + pred(g))) over vocab + blank."""

    def __init__(self, d_model: int, cfg: TransducerConfig):
        super().__init__()
        self.enc = nn.Linear(d_model, cfg.joint_hidden)
        self.pred = nn.Linear(cfg.pred_hidden, cfg.joint_hidden)
        act = _ACTIVATIONS[cfg.activation]()
        slot = [nn.Identity()] if cfg.joint_dropout_slot else []  # NeMo's Dropout, when it has one
        self.joint_net = nn.Sequential(act, *slot, nn.Linear(cfg.joint_hidden, cfg.vocab_size + 1))

    @property
    def out(self) -> nn.Linear:
        """The output layer (joint_net.2 or joint_net.1 in NeMo's keys)."""
        return self.joint_net[-1]

    def logits(self, enc_proj: Tensor, pred_proj: Tensor) -> Tensor:
        """enc_proj [..., J] + pred_proj [..., J] (already projected) → logits [..., V+1]."""
        return self.joint_net(enc_proj + pred_proj)


class CTCHead(nn.Module):
    """Conv1d(D → V+1, kernel 1) over encoder frames (NeMo ctc_decoder.decoder_layers.0)."""

    def __init__(self, d_model: int, num_classes: int):
        super().__init__()
        self.decoder_layers = nn.Sequential(nn.Conv1d(d_model, num_classes, 1))

    def forward(self, frames: Tensor) -> Tensor:
        """frames [B, T, D] → logits [B, T, V+1]."""
        return self.decoder_layers(frames.transpose(1, 2)).transpose(1, 2)
